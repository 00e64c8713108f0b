"""The one exception hierarchy of the library.

Every error a user can meet derives from :class:`IsicError`, so that
``except isicarchive.IsicError`` catches all of them.  Messages say what was
asked, what came back, and what to do; they never contain a secret.

The tree::

    IsicError
    ├── AuthenticationError          401/403, refused or missing credentials
    │   └── KeyringUnavailableError  no system keyring to store a secret in
    ├── NotFoundError                404, an unknown id (also a KeyError)
    ├── QueryError                   400, a malformed criterion (also a ValueError)
    │   └── MissingTargetError       images without the field a training set's classes come from
    ├── ArchiveUnavailableError      transient faults that outlasted the retries
    ├── ArchiveResponseError         any other error answer, or an answer that breaks the protocol
    ├── CacheError                   the cache folder cannot be used, or a lock was not granted in time
    ├── LayoutError                  a folder or zip that is no known archive layout
    │   └── MissingFilesError        a challenge release's files are not all there
    ├── ImageTooLargeError           an image announces more pixels than the limit allows
    ├── ImageTaskError               a function mapped over images failed (``strict=True``)
    ├── ScoringError                 predictions that cannot be scored (also a ValueError)
    └── UnsupportedError             not offered by this API version or backend
                                     (also a NotImplementedError)

Errors raised for an HTTP answer carry its :attr:`~IsicError.status` and the
:attr:`~IsicError.url` it came from (without query string or credentials), so
callers branch on ``exc.status == 416`` rather than on message text.  Other
errors have ``status`` and ``url`` set to ``None``.
"""

from __future__ import annotations

from typing import Any


class IsicError(Exception):
    """Base class of every error raised by :mod:`isicarchive`.

    Parameters
    ----------
    *args
        The message (and any further arguments of the built-in base class).
    status : int, optional
        The HTTP status of the answer that caused the error, if one did.
    url : str, optional
        The address that answered (scheme, host and path only).
    """

    #: the HTTP status of the answer behind the error; ``None`` when no answer caused it
    status: int | None = None
    #: the address (no query string, no credentials) of that answer; ``None`` otherwise
    url: str | None = None

    def __init__(self, *args: Any, status: int | None = None, url: str | None = None) -> None:
        super().__init__(*args)
        if status is not None:
            self.status = status
        if url is not None:
            self.url = url


class AuthenticationError(IsicError):
    """Credentials are missing, refused by the archive, or cannot be asked for."""


class NotFoundError(IsicError, KeyError):
    """An image, study, dataset, annotation or segmentation does not exist.

    A :class:`KeyError` subclass, so ``except KeyError`` keeps working for code
    written against the original package.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class QueryError(IsicError, ValueError):
    """A selection criterion or a search query is malformed or was refused."""


class MissingTargetError(QueryError):
    """Images without a value of the field a training set takes its classes from.

    Attributes
    ----------
    count, total : int
        How many images lack the value, of how many.
    ids : list of str
        Their ids.
    """

    def __init__(self, message: str, *, count: int = 0, total: int = 0, ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.count = count
        self.total = total
        self.ids = list(ids or [])

    def __reduce__(self) -> tuple[Any, ...]:  # it crosses into data-loader worker processes and back
        return (_missing_target, (str(self), self.count, self.total, self.ids))


def _missing_target(message: str, count: int, total: int, ids: list[str]) -> MissingTargetError:
    return MissingTargetError(message, count=count, total=total, ids=ids)


class ArchiveUnavailableError(IsicError):
    """The archive could not answer, even after retrying transient faults."""


class ArchiveResponseError(IsicError):
    """An error answer from the archive that is not mapped to a narrower error,
    or an answer that breaks the protocol (too large, a redirect loop, a page
    that repeats itself, a record without an id).

    Parameters
    ----------
    message : str
        What was asked and what came back.
    status : int, optional
        The HTTP status, when an answer's status is the problem.
    url : str, optional
        The address that answered (scheme, host and path only).
    """

    def __init__(self, message: str, status: int | None = None, *, url: str | None = None) -> None:
        super().__init__(message, status=status, url=url)


class CacheError(IsicError):
    """The cache folder cannot be used (not writable, disk full, wrong owner), or
    a lock on a cache file was not granted in time."""


class KeyringUnavailableError(AuthenticationError):
    """No system keyring can store a password or token on this machine."""


class LayoutError(IsicError):
    """The folder or zip is not an archive layout this library knows, or its metadata is unusable."""


class MissingFilesError(LayoutError):
    """A release's files are not all there; the message lists what is missing and where it was looked for."""


class ImageTooLargeError(IsicError):
    """An image announces more pixels than the limit allows (a decompression bomb, or a huge scan)."""


class ScoringError(IsicError, ValueError):
    """Predictions that cannot be scored against the truth (missing or extra images, values out of range)."""


class ImageTaskError(IsicError):
    """``func`` raised for an image and ``strict=True`` was asked for.

    Attributes
    ----------
    image_id : str
        The image the function failed for.
    error : str
        The function's error, as ``"TypeName: message"``.
    """

    def __init__(self, image_id: str, error: str) -> None:
        super().__init__(f"the function failed for image {image_id}: {error}")
        self.image_id = image_id
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:  # it crosses process boundaries
        return (ImageTaskError, (self.image_id, self.error))


class UnsupportedError(IsicError, NotImplementedError):
    """The feature does not exist in the API version this session speaks."""


__all__ = [
    "ArchiveResponseError",
    "ArchiveUnavailableError",
    "AuthenticationError",
    "CacheError",
    "ImageTaskError",
    "ImageTooLargeError",
    "IsicError",
    "KeyringUnavailableError",
    "LayoutError",
    "MissingFilesError",
    "MissingTargetError",
    "NotFoundError",
    "QueryError",
    "ScoringError",
    "UnsupportedError",
]
