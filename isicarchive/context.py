"""The session context: the internal interface between a session and the code built on it.

:class:`~isicarchive.IsicApi` is the facade users hold.  The code that works
*for* a session (the models, scale-out, exports, and the modules of the
training adapter and lock files) needs a few of its parts, not the facade's
whole surface.  Those parts are named here, once, with types:

=================  ==========================================================
``base_url``       the archive's address (a ``file://`` URI for one on disk)
``api_version``    1 (legacy) or 2 (today's records, also archives on disk)
``transport``      :class:`~isicarchive.transport.Transport`: HTTP with the
                   session's retries, deadlines and credentials
``backend``        :class:`~isicarchive.backends.base.Backend`: what the
                   archive answers (records, file addresses, capabilities)
``store``          :class:`~isicarchive.store.Store`: cached reads of pixels,
                   superpixels, masks and annotations; bulk downloads
``cache``          :class:`~isicarchive.cache.Cache` of the session's
                   identity, or ``None`` without a cache folder
``image_object``   ``record -> Image``: the session's own
                   :class:`~isicarchive.models.Image` for a record (the same
                   object while a caller holds it; its name remembered)
``records_for``    ``images -> list of records``: the records of ids, names,
                   records, Images or a selection, unknown ones looked up in
                   bulk (:class:`~isicarchive.errors.NotFoundError` naming
                   the missing)
``workers``        parallel transfers the session was opened with
``progress``       whether long work shows progress bars
=================  ==========================================================

Get it with ``api.context``.  A context is immutable; the session builds a
new one when its identity changes (a login or logout gives another cache
layer), so read ``api.context`` when the work starts rather than keeping one
for the life of a program.

>>> from isicarchive import IsicApi                                  # doctest: +SKIP
>>> ctx = IsicApi(cache_folder="~/isic").context                     # doctest: +SKIP
>>> pixels = ctx.store.image_pixels(record)                          # doctest: +SKIP
>>> image = ctx.image_object(record)                                 # doctest: +SKIP
>>> ctx.cache.root if ctx.cache else None                            # doctest: +SKIP

Rules for code that takes a context: call the backend's methods for what the
archive offers (they raise :class:`~isicarchive.errors.UnsupportedError` where
it offers nothing) instead of asking which backend it is; read and write
files through ``store`` and ``cache`` (atomic, locked); never reach into the
facade's private attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Backend
    from .cache import Cache
    from .models import Image
    from .store import Store
    from .transport import Transport

__all__ = ["SessionContext"]


@dataclass(frozen=True)
class SessionContext:
    """What a session lends the code that works for it (see the module docstring)."""

    base_url: str
    api_version: int
    transport: Transport
    backend: Backend
    store: Store
    cache: Cache | None
    image_object: Callable[[dict], Image]
    records_for: Callable[[Any], list[dict]]
    workers: int
    progress: bool

    @property
    def local(self) -> bool:
        """Whether the archive is on disk (its backend reads its own files: no transfers, no download cache)."""
        return self.backend.local

    def __repr__(self) -> str:  # the transport holds credentials: name only what is safe to show
        cache = self.cache.root if self.cache is not None else None
        return f"SessionContext({self.base_url!r}, v{self.api_version}, {type(self.backend).__name__}, cache={cache})"
