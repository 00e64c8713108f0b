"""SHA-256 digests of image files: kept with the cache, checked by ``cache verify``, gathered for lock files.

The download engine (:func:`isicarchive.downloads.fetch_file`) computes the
SHA-256 of a file while its bytes stream in; the cache keeps it beside the
file (``image_<id>_<name>.jpg.sha256``, in ``sha256sum`` form, written
atomically before the file is moved into place).  Nothing reads an image a
second time to learn its digest, except files cached before digests were
kept (their digest is computed once and recorded).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .cache import DIGEST_SUFFIX, Cache
from .downloads import Downloader, Job, extension_for, jobs_for
from .errors import IsicError
from .transport import record_id

if TYPE_CHECKING:
    from .store import Store

__all__ = ["FileDigest", "image_digests", "sha256_of", "verify_cached_file"]

_BLOCK = 1 << 20


class FileDigest(NamedTuple):
    """An image file's SHA-256 (hex) and size in bytes."""

    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def verify_cached_file(cache: Cache, path: Path) -> bool | None:
    """Whether a cached file still has the SHA-256 recorded when it was written (None: none recorded)."""
    recorded = cache.recorded_digest(path)
    if recorded is None:
        return None
    return sha256_of(path) == recorded


def _cached(cache: Cache, image_id: str) -> FileDigest | None:
    path = cache.find_image(image_id)
    if path is None:
        return None
    digest = cache.recorded_digest(path)
    if digest is None:  # cached before digests were kept: computed once, then kept
        digest = sha256_of(path)
        cache.record_digest(path, digest)
    return FileDigest(digest, path.stat().st_size)


def image_digests(store: Store, records: Iterable[dict], progress: bool | None = None) -> dict[str, FileDigest]:
    """SHA-256 and size of every image of ``records`` (id → :class:`FileDigest`).

    From the cache's sidecars where the files are cached; the rest are
    downloaded into the cache (or, without one, into a temporary folder that
    is removed after) and digested as they stream in.  An archive on disk is
    read where it lies.

    Raises
    ------
    IsicError
        When some images cannot be fetched (all of them are named).
    """
    records = [r for r in records if isinstance(r, dict)]
    found: dict[str, FileDigest] = {}
    if store.backend.local:
        for record in records:
            data = store.backend.read_image(record)
            found[record_id(record)] = FileDigest(hashlib.sha256(data).hexdigest(), len(data))
        return found
    cache = store.cache
    todo = []
    for record in records:
        known = _cached(cache, record_id(record)) if cache is not None else None
        if known is None:
            todo.append(record)
        else:
            found[record_id(record)] = known
    if not todo:
        return found
    if cache is not None:
        result = store.download_images(todo, progress=progress)
        result.raise_for_failures()
        for record in todo:
            known = _cached(cache, record_id(record))
            if known is None:
                raise IsicError(f"the image {record_id(record)} is not in the cache after its download")
            found[record_id(record)] = known
        return found
    with tempfile.TemporaryDirectory(prefix="isicarchive-digests-") as folder:
        root = Path(folder)

        def job(record: dict) -> Job:
            key = record_id(record)
            size = ((record.get("files") or {}).get("full") or {}).get("size")
            return Job(key, store.backend.image_file(record), functools.partial(_temporary_file, root, key),
                       root / f".{key}.part", size, renew=store.backend.image_file_renewer(record))

        jobs, unusable = jobs_for(todo, job)
        result = Downloader(store.http, store.workers, store.progress if progress is None else progress).run(
            jobs, desc="Digests")
        result.failed.update(unusable)
        result.raise_for_failures()
        for key, path in result.paths.items():
            found[key] = FileDigest(result.sha256[key], path.stat().st_size)
    return found


def _temporary_file(root: Path, key: str, content_type: str) -> Path:
    return root / f"{key}{extension_for(content_type)}"


def sidecar_of(path: Path) -> Path:
    """Where the digest of a cached file is kept."""
    return path.with_name(path.name + DIGEST_SUFFIX)
