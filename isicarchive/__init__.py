"""isicarchive: a Python client for the ISIC Archive (legacy v1 and current v2 APIs).

>>> from isicarchive import IsicApi
>>> api = IsicApi()                      # doctest: +SKIP
>>> image = api.image('ISIC_0000000')    # doctest: +SKIP

The session, the models and the selection are imported when first named
(PEP 562), so ``import isicarchive`` and the command line's ``--help`` do
not pay for numpy and requests; ``from isicarchive import IsicApi`` pays for
requests, and numpy waits for the first array (see ``isicarchive._lazy``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ArchiveResponseError,
    ArchiveUnavailableError,
    AuthenticationError,
    CacheError,
    ImageTaskError,
    ImageTooLargeError,
    IsicError,
    KeyringUnavailableError,
    LayoutError,
    MissingFilesError,
    MissingTargetError,
    NotFoundError,
    QueryError,
    ScoringError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from .api import IsicApi
    from .leakage import audit
    from .lockfile import Lock, materialise, verify_lock
    from .models import Annotation, Dataset, Image, Lesion, Segmentation, Study
    from .selection import Selection, Splits

#: public name -> the module that defines it, imported on first use
_LAZY = {"IsicApi": ".api", "Selection": ".selection", "Annotation": ".models", "Dataset": ".models",
         "Image": ".models", "Lesion": ".models", "Segmentation": ".models", "Study": ".models",
         "Splits": ".selection", "Lock": ".lockfile", "materialise": ".lockfile", "verify_lock": ".lockfile",
         "audit": ".leakage"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'isicarchive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Annotation",
    "ArchiveResponseError",
    "ArchiveUnavailableError",
    "AuthenticationError",
    "CacheError",
    "Dataset",
    "Image",
    "ImageTaskError",
    "ImageTooLargeError",
    "IsicApi",
    "IsicError",
    "KeyringUnavailableError",
    "LayoutError",
    "Lesion",
    "Lock",
    "MissingFilesError",
    "MissingTargetError",
    "NotFoundError",
    "QueryError",
    "ScoringError",
    "Segmentation",
    "Selection",
    "Splits",
    "Study",
    "UnsupportedError",
    "__version__",
    "audit",
    "materialise",
    "verify_lock",
]
