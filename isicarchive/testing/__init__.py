"""A local ISIC archive for offline tests, examples and benchmarks.

>>> from isicarchive.testing import LocalArchive
>>> with LocalArchive(seed=0) as archive:   # doctest: +SKIP
...     print(archive.v1_url)
"""

from .faults import FAULT_KINDS, Fault, FaultInjector
from .generator import ArchiveConfig, ArchiveData, User
from .server import LocalArchive, RequestRecord

__all__ = [
           "FAULT_KINDS",
           "ArchiveConfig",
           "ArchiveData",
           "Fault",
           "FaultInjector",
           "LocalArchive",
           "RequestRecord",
           "User",
]
