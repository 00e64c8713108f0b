"""Limits on what untrusted bytes may make this library allocate: pixels of one image, and the
files of an archive on disk (a folder or a zip read in place).

One set of limits for the whole process, read from the environment at import and changed with
:func:`configure`::

    import isicarchive.limits
    isicarchive.limits.configure(max_pixels=400_000_000)   # a very large scan

``ISICARCHIVE_MAX_PIXELS``, ``ISICARCHIVE_ARCHIVE_FILE_BYTES``, ``ISICARCHIVE_ZIP_TOTAL_BYTES`` and
``ISICARCHIVE_ZIP_RATIO`` set the same from the environment.  A limit crossed is an
:class:`~isicarchive.errors.IsicError` naming the limit and how to raise it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass

__all__ = ["Limits", "configure", "current"]


@dataclass(frozen=True)
class Limits:
    """What one image or one zip may ask for.

    Attributes
    ----------
    max_pixels
        Pixels of one image (width × height × frames), checked from its header before it is decoded:
        a few kilobytes of JPEG, PNG or TIFF can announce gigapixels.  The default (180 million,
        Pillow's own refusal threshold) is six times the largest image the archive serves.
    archive_file_bytes
        Size of one file read from an archive on disk: a file of a folder, or a zip member once
        inflated.
    zip_total_bytes
        Inflated size of all the members of one zip together (checked when it is opened).
    zip_ratio
        Inflated size over compressed size of one member larger than a mebibyte; images hardly
        compress and CSV files about tenfold, while a zip bomb inflates a thousandfold.
    """

    max_pixels: int = 180_000_000
    archive_file_bytes: int = 1 << 30
    zip_total_bytes: int = 1 << 40
    zip_ratio: int = 200


_ENVIRONMENT = {"max_pixels": "ISICARCHIVE_MAX_PIXELS", "archive_file_bytes": "ISICARCHIVE_ARCHIVE_FILE_BYTES",
                "zip_total_bytes": "ISICARCHIVE_ZIP_TOTAL_BYTES", "zip_ratio": "ISICARCHIVE_ZIP_RATIO"}
_lock = threading.Lock()


def _from_environment() -> Limits:
    values: dict[str, int] = {}
    for field, variable in _ENVIRONMENT.items():
        text = os.environ.get(variable, "").strip().replace("_", "")
        if text.isdigit() and 0 < len(text) < 20 and int(text) > 0:
            values[field] = int(text)
    return Limits(**values)


_current = _from_environment()


def current() -> Limits:
    """The limits in force."""
    return _current


def configure(**changes: int) -> Limits:
    """Change some limits for the whole process; returns the previous ones (to restore them)."""
    global _current
    for name, value in changes.items():
        if name not in _ENVIRONMENT:
            raise TypeError(f"no limit named {name!r} (known: {', '.join(_ENVIRONMENT)})")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    with _lock:
        previous = _current
        _current = dataclasses.replace(_current, **changes)
    return previous
