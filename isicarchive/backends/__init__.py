"""One backend per archive API version; each turns HTTP answers into plain records."""

from .base import Backend
from .v1 import V1Backend

__all__ = ["Backend", "V1Backend"]
