"""Which extra brings which optional module, and the message that names it.

Every optional dependency of the library comes with an extra
(``pip install 'isicarchive[disk]'``); this table lets a missing module be
reported by the extra that installs it (the command line does so for any
``ImportError``), and :func:`require` imports a module or raises an
``ImportError`` that names its extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRA_OF", "extra_for", "missing_message", "require"]

#: top-level module -> the extra that installs it
EXTRA_OF = {
    "pandas": "pandas", "skimage": "slic", "dask": "dask", "distributed": "dask", "pyarrow": "disk",
    "imagehash": "audit", "h5py": "releases", "isic_challenge_scoring": "scoring", "ipywidgets": "notebook",
    "torch": "torch", "datasets": "hf", "webdataset": "webdataset", "fsspec": "snapshot", "aiohttp": "snapshot",
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is looked up by its top level)."""
    return EXTRA_OF.get((module or "").split(".", 1)[0])


def missing_message(exc: ImportError) -> str:
    """The text of an ``ImportError``, with the extra to install when the library's message lacks it."""
    text = str(exc)
    if "isicarchive[" in text:
        return text
    extra = extra_for(getattr(exc, "name", None))
    if extra is not None:
        return f"{text}: pip install 'isicarchive[{extra}]' (or isicarchive[all])"
    return f"{text} (an optional dependency: pip install 'isicarchive[all]'; see the extras in the README)"


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise an ``ImportError`` naming the extra that installs it.

    ``extra`` names the extra of the feature when it is not the module's usual one (pyarrow is in
    ``disk``, but a challenge release asks for ``releases``, which brings the rest it needs too).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = extra or extra_for(module) or "all"
        raise ImportError(f"{feature} needs {module.split('.', 1)[0]}: pip install 'isicarchive[{extra}]'",
                          name=module) from exc
