"""isicarchive: a Python client for the ISIC Archive (legacy v1 and current v2 APIs).

>>> from isicarchive import IsicApi
>>> api = IsicApi()                      # doctest: +SKIP
>>> image = api.image('ISIC_0000000')    # doctest: +SKIP
"""

from ._version import __version__
from .api import IsicApi
from .errors import (
    ArchiveUnavailableError,
    AuthenticationError,
    CacheError,
    IsicError,
    KeyringUnavailableError,
    NotFoundError,
    QueryError,
    UnsupportedError,
)
from .models import Annotation, Dataset, Image, Segmentation, Study
from .selection import Selection

__all__ = [
    "Annotation",
    "ArchiveUnavailableError",
    "AuthenticationError",
    "CacheError",
    "Dataset",
    "Image",
    "IsicApi",
    "IsicError",
    "KeyringUnavailableError",
    "NotFoundError",
    "QueryError",
    "Segmentation",
    "Selection",
    "Study",
    "UnsupportedError",
    "__version__",
]
