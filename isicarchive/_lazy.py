"""Heavy dependencies imported where first used, not when the library is.

``from isicarchive import IsicApi`` pulls in most of the package; numpy alone
was a third of that import's CPU (0.15-0.2 s), paid by every command and
script before its first request, also by the many (a download, a metadata
sync) that never touch an array.  A module writes::

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = lazy_module("numpy", globals(), "np")

and ``np`` stands in for numpy until its first attribute is read: then numpy
is imported and the real module replaces the stand-in in that module's
globals, so every later ``np.…`` is an ordinary global look-up.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule:
    """Stands in for a module under a global name until the module is first used."""

    __slots__ = ("_module", "_namespace", "_name")

    def __init__(self, module: str, namespace: dict[str, Any], name: str) -> None:
        self._module = module
        self._namespace = namespace
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        real = importlib.import_module(self._module)
        if self._namespace.get(self._name) is self:
            self._namespace[self._name] = real
        return getattr(real, attribute)

    def __repr__(self) -> str:
        return f"<module {self._module!r}, imported on first use>"


def lazy_module(module: str, namespace: dict[str, Any], name: str) -> Any:
    """A stand-in for ``module`` bound to ``name`` in ``namespace`` (a module's ``globals()``), replaced
    there by the module itself when first used."""
    return _LazyModule(module, namespace, name)
