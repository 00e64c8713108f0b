"""Objects' files and bulk records: the cache when it has them, the archive when not.

The :class:`Store` is where cache and backend meet, so that models only ask
"give me this image's pixels" and never see a path or a URL.  Without a
cache folder everything is fetched into memory.
"""

from __future__ import annotations

import functools
import gzip
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import pixels
from . import superpixels as _sp
from ._lazy import lazy_module
from .backends.base import Backend
from .cache import IMCACHE_ID, Cache, safe_name
from .downloads import (
    DEFAULT_WORKERS,
    Downloader,
    DownloadResult,
    Job,
    extension_for,
    fetch_file,
    jobs_for,
    looks_like_html,
    sniffed_type,
)
from .errors import AuthenticationError, IsicError, UnsupportedError
from .metadata_sync import PartitionGone, SyncCheckpoint, SyncedRecords
from .models.annotation import markup_entry
from .progress import progress as _progress
from .records import RecordStore, read_lines, write_lines
from .transport import Transport, record_id

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see ._lazy)

__all__ = ["Store"]

log = logging.getLogger("isicarchive")


def _fixed_path(path: Path, content_type: str | None) -> Path:
    return path


def _decode_image(data: bytes, what: str) -> np.ndarray:
    """Pixels of image bytes from the archive; bytes that are no image are an :class:`IsicError`."""
    def refused(why: str = "") -> IsicError:
        looks = "an HTML page" if looks_like_html(data) else f"{len(data)} bytes that are no image"
        return IsicError(f"{what}: the archive sent {looks}{why}")

    if sniffed_type(data[:16]) is None:
        # refused before imageio tries every plugin it has on them (slow, and its legacy ones warn)
        raise refused()
    try:
        return np.asarray(pixels.decode(data, what))
    except pixels.ImageTooLargeError:
        raise
    except Exception as exc:  # imageio and its plugins raise anything from OSError to SyntaxError
        raise refused(f" ({type(exc).__name__})") from None


def _decode_superpixels(rgb: np.ndarray, image_id: str) -> np.ndarray:
    """The label array of a superpixel PNG from the archive (or the cache), checked as it enters."""
    try:
        idx = _sp.decode(rgb)
    except ValueError as exc:
        raise IsicError(f"the superpixel image of {image_id} is refused: {exc}") from None
    # labels number the superpixels from 0: one beyond the pixel count cannot be, and would make
    # the superpixel map (a row per label) allocate gigabytes
    highest = int(idx.max())
    if highest >= idx.size:
        raise IsicError(f"the superpixel image of {image_id} is refused: a label of {highest} in an image of only "
                        f"{idx.size} pixels (labels run from 0 to at most {idx.size - 1})")
    return idx


class Store:
    """Loads and caches one session's files and record collections."""

    def __init__(self, backend: Backend, transport: Transport, cache: Cache | None,
                 workers: int = DEFAULT_WORKERS, progress: bool = True) -> None:
        self.backend = backend
        self.http = transport
        self.cache = cache
        self.workers = workers
        self.progress = progress

    # --------------------------------------------------------------- images
    def _image_job(self, record: dict) -> Job:
        assert self.cache is not None
        image_id = record_id(record)
        name = self.backend.image_record_name(record)
        part = self.cache.path("image", image_id, ".part")
        part = part.with_name("." + part.name)
        size = ((record.get("files") or {}).get("full") or {}).get("size")
        cache = self.cache
        return Job(image_id, self.backend.image_file(record),
                   lambda ctype: cache.image_path(image_id, name, extension_for(ctype)), part, size,
                   renew=self.backend.image_file_renewer(record), on_digest=cache.record_digest,
                   private=cache.identity is not None)

    def image_path(self, record: dict) -> Path | None:
        """The cached image file, fetched first when missing (None without cache).

        For an archive on disk, the file in its folder (None inside a zip).
        """
        if self.backend.local:
            return self.backend.local_path(record)
        if self.cache is None:
            return None
        image_id = record_id(record)
        found = self.cache.find_image(image_id)
        if found is not None:
            return found
        job = self._image_job(record)
        with self.cache.lock(job.part):
            found = self.cache.find_image(image_id)
            if found is None:
                found, _ = fetch_file(self.http, job)
        return found

    def image_pixels(self, record: dict) -> np.ndarray:
        """Decoded pixels of an image; a corrupt cached file is refetched once."""
        if self.backend.local:  # read where they are: a folder or inside a zip
            data = self.backend.read_image(record)
            return _decode_image(data, f"image {self.backend.image_record_name(record)}")
        if self.cache is None:
            try:
                data, _ = self.http.get_bytes(self.backend.image_file(record))
            except AuthenticationError:
                renew = self.backend.image_file_renewer(record)
                if renew is None:
                    raise
                data, _ = self.http.get_bytes(renew())  # the record's pre-signed URL had expired
            return _decode_image(data, f"image {self.backend.image_record_name(record)}")
        for _ in range(2):
            path = self.image_path(record)
            assert path is not None
            pixels = self.cache.read_image(path)
            if pixels is not None:
                return np.asarray(pixels)
        raise IsicError(f"the image {self.backend.image_record_name(record)} does not decode even after "
                        "fetching it again; the archive may be sending a broken file")

    def download_images(self, records: Iterable[dict], superpixels: bool = False,
                        workers: int | None = None, progress: bool | None = None) -> DownloadResult:
        """Fetch many images (and superpixel PNGs) into the cache in parallel."""
        if self.backend.local:
            raise UnsupportedError("the images of an archive on disk are on disk already; "
                                   "download_images(folder=...) exports them in the official CLI's layout")
        if self.cache is None:
            raise IsicError("downloading into the cache needs a cache folder: IsicApi(cache_folder=...) "
                            "or pass folder=...")
        records = list(records)
        if superpixels and self.backend.version != 1:
            raise self.backend._unsupported("archive superpixels",
                                            "the legacy v1 API (use Image.compute_superpixels for v2 images)")
        downloader = Downloader(self.http, workers or self.workers, self.progress if progress is None else progress)
        cache = self.cache
        jobs, unusable = jobs_for(records, self._image_job)
        result = downloader.run(jobs, done=lambda job: cache.find_image(job.key), desc="Images")
        result.failed.update(unusable)
        records = [record for record in records if record_id(record) not in unusable]
        if superpixels:
            sp_jobs = []
            for rec in records:
                image_id = str(rec["_id"])
                target = cache.path("spimg", image_id, ".png")
                sp_jobs.append(Job(image_id + ":superpixels", self.backend.superpixels_endpoint(image_id),
                                   functools.partial(_fixed_path, target),
                                   target.with_name("." + target.name + ".part"), private=cache.identity is not None))
            sp_result = downloader.run(
                sp_jobs, done=lambda job: cache.find("spimg", job.key.split(":")[0], ".png"), desc="Superpixels")
            result.downloaded += sp_result.downloaded
            result.skipped += sp_result.skipped
            result.failed.update(sp_result.failed)
            result.paths.update(sp_result.paths)
            result.bytes += sp_result.bytes
            result.seconds += sp_result.seconds
        return result

    # ---------------------------------------------------------- superpixels
    def superpixel_index(self, image_id: str) -> np.ndarray:
        """The decoded superpixel index: spidx npz, else spimg PNG, else the archive."""
        cache = self.cache
        if cache is not None:
            npz = cache.find("spidx", image_id, ".npz")
            if npz is not None:
                idx = cache.read_npz(npz, "idx")
                if idx is not None and idx.ndim == 2:
                    return idx
            png = cache.find("spimg", image_id, ".png")
            if png is not None:
                rgb = cache.read_image(png)
                if rgb is not None:
                    return self._remember_index(image_id, _decode_superpixels(np.asarray(rgb), image_id))
        data = self.backend.superpixels_png(image_id)
        idx = _decode_superpixels(_decode_image(data, f"superpixels of {image_id}"), image_id)
        if cache is not None:
            target = cache.path("spimg", image_id, ".png")
            with cache.lock(target):
                cache.write_bytes(target, data)
        return self._remember_index(image_id, idx)

    def _remember_index(self, image_id: str, idx: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            self.cache.write_npz(self.cache.path("spidx", image_id, ".npz"), idx=idx)
        return idx

    def remember_superpixels(self, image_id: str, idx: np.ndarray) -> None:
        """Cache locally computed superpixels under the archive's names (spimg PNG + spidx npz)."""
        if self.cache is None:
            return
        import imageio.v3 as iio

        png = iio.imwrite("<bytes>", _sp.encode(idx), extension=".png")
        self.cache.write_bytes(self.cache.path("spimg", image_id, ".png"), png)
        self._remember_index(image_id, idx)

    # ----------------------------------------------------------- image cache
    def sync_checkpoint(self, label: str) -> SyncCheckpoint | None:
        """Where an interrupted metadata sync keeps the partitions it finished (None without a cache)."""
        if self.cache is None:
            return None
        return SyncCheckpoint(self.cache, self.cache.layer / ".sync" / safe_name(label))

    def _imcache_path(self) -> Path | None:
        # an archive on disk keeps its records in its own index: no second copy in the cache
        return self.cache.path("imcache", IMCACHE_ID, ".json.gz") if self.cache and not self.backend.local else None

    def load_image_cache(self) -> RecordStore:
        if self.cache is None or self.backend.local:
            return RecordStore()
        # a user's layer holds its own list; the shared one (public images only) would not match it
        path = self._imcache_path()
        assert path is not None
        found = self.cache.find_users("imcache", IMCACHE_ID, ".json.gz") if self.cache.identity else \
            self.cache.find("imcache", IMCACHE_ID, ".json.gz")
        if found is None:
            return RecordStore()
        try:
            # a line at a time: the records never exist as dicts all at once
            records = read_lines(found)
        except (OSError, EOFError, ValueError):
            records = None  # damaged, or JSON of another shape: read whole (which drops a corrupt file)
        if records is not None:
            return records
        payload = self.cache.read_json_gz(found)
        if not isinstance(payload, dict):
            return RecordStore()
        # an entry that is no record (a list, text: a damaged or hand-edited file) is left out and fetched again
        return RecordStore.of_json((key, record) for key, record in payload.items() if isinstance(record, dict))

    def save_image_cache(self, records: Mapping[str, dict], replace: bool) -> RecordStore:
        """Write the image cache; merges with what another process may have written meanwhile."""
        merged = RecordStore()
        path = self._imcache_path()
        if path is None:
            merged.update(records)
            return merged
        assert self.cache is not None
        with self.cache.lock(path):
            if not replace:
                merged = self.load_image_cache()
            merged.update(records)
            if replace and isinstance(records, SyncedRecords) and records.parts is not None:
                # a complete v2 sync: the file is its partitions' gzip members joined (isicarchive/metadata_sync.py)
                try:
                    with self.cache.atomic_writer(path) as fh:
                        records.parts.write_file(fh, records.partitions)
                    records.parts.finish()
                    return merged
                except PartitionGone:  # another process finished the same sync meanwhile: written as usual
                    pass
            with self.cache.atomic_writer(path) as fh, \
                    gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=1, mtime=0) as gz:
                write_lines(gz, merged)
        return merged

    # ---------------------------------------------------------- annotations
    def study_annotations(self, study_id: str, summaries: list[dict],
                          progress: bool | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
        """Details and per-feature superpixel markups of a study's annotations.

        Returns ``(records, features)``: annotation id → detail record, and
        annotation id → {feature id → {'idx', 'lst', 'num', …}} (the
        original package's ``stann_`` format, which is also what is cached).
        """
        stored: dict[str, Any] = {}
        path = self.cache.path("stann", study_id, ".json.gz") if self.cache else None
        if self.cache is not None:
            # a logged-in session reads its own (or the original package's ``…_<login>``) file first
            own = self.cache.find_users("stann", study_id, ".json.gz") if self.cache.identity else None
            found = own or self.cache.find("stann", study_id, ".json.gz")
            if found is not None:
                stored = self.cache.read_json_gz(found) or {}
                if not isinstance(stored, dict):
                    stored = {}
        records: dict[str, dict] = dict(stored.get("_records", {}))
        features: dict[str, dict] = {k: v for k, v in stored.items() if not k.startswith("_")}
        changed = False
        todo = [s for s in summaries if s["_id"] not in records]
        bar = _progress(len(todo), "Annotations", "annotation",
                        enabled=(self.progress if progress is None else progress) and bool(todo))
        try:
            for summary in todo:
                detail = self.backend.annotation(summary["_id"])
                records[summary["_id"]] = detail
                changed = True
                if detail.get("state") == "complete":
                    present = [f for f, on in (detail.get("markups") or {}).items() if on]
                    # a file of the original package holds the markups but not the details: keep its markups
                    known = features.get(summary["_id"], {})
                    for feature in (f for f in present if f not in known):
                        features.setdefault(summary["_id"], {})[feature] = markup_entry(
                            self.backend.markup_values(summary["_id"], feature))
                bar.update(1)
        finally:
            bar.close()
        if changed and path is not None and self.cache is not None:
            with self.cache.lock(path):
                self.cache.write_json_gz(path, {**features, "_records": records})
        return records, features

    # ------------------------------------------------------------ segments
    def segmentation_mask(self, segmentation_id: str) -> np.ndarray:
        cache = self.cache
        if cache is not None:
            found = cache.find("sgmsk", segmentation_id, ".png")
            if found is not None:
                mask = cache.read_image(found)
                if mask is not None:
                    return np.asarray(mask)
        data = self.backend.segmentation_mask(segmentation_id)
        mask = _decode_image(data, f"mask of segmentation {segmentation_id}")  # a broken file is never cached
        if cache is not None:
            cache.write_bytes(cache.path("sgmsk", segmentation_id, ".png"), data)
        return mask
