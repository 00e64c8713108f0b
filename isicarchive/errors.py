"""The one exception hierarchy of the library.

Every error a user can meet derives from :class:`IsicError`, so that
``except isicarchive.IsicError`` catches all of them.  Messages say what was
asked, what came back, and what to do; they never contain a secret.
"""

from __future__ import annotations


class IsicError(Exception):
    """Base class of every error raised by :mod:`isicarchive`."""


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


class ArchiveUnavailableError(IsicError):
    """The archive could not answer, even after retrying transient faults."""


class CacheError(IsicError):
    """The cache folder cannot be used (not writable, disk full, wrong owner)."""


class KeyringUnavailableError(AuthenticationError):
    """No system keyring can store a password or token on this machine."""


class UnsupportedError(IsicError, NotImplementedError):
    """The feature does not exist in the API version this session speaks."""


__all__ = [
    "ArchiveUnavailableError",
    "AuthenticationError",
    "CacheError",
    "IsicError",
    "KeyringUnavailableError",
    "NotFoundError",
    "QueryError",
    "UnsupportedError",
]
