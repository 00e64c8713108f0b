"""Training data over any selection, with no deep-learning framework: samples, labels, shards, sessions.

:class:`Samples` is what a framework's dataset wraps (:mod:`isicarchive.torch`
is such a wrapper, a thin one).  It holds the records of a
:class:`~isicarchive.selection.Selection` (of any backend: the legacy v1 API,
today's v2 API, an archive on disk), of a part of ``Selection.split(...)``, or
of a list of ids, records or :class:`~isicarchive.models.image.Image` objects
read through a session, and gives per sample:

* the encoded image file (:meth:`Samples.image_bytes`) and its pixels
  (:meth:`Samples.pixels`, ``uint8`` height × width × channels);
* the class index of the record's target field (:attr:`Samples.targets`,
  :attr:`Samples.classes`, :attr:`Samples.class_to_idx`, as torchvision's
  datasets have them) or, with ``target="mask"``, the segmentation mask;
* the record itself (:meth:`Samples.record`), and an ``Image`` built from it
  without a request (:meth:`Samples.image`).

No request per sample
    The records are in hand: nothing is looked up again.  Pixels come from the
    cache folder (fetched once, then read from disk: a warm-cache epoch sends
    no HTTP request at all), or from the folder or zip of an archive on disk.
    Without a cache folder every epoch downloads every image again.

Shards
    :func:`shard_indices` deals an epoch's samples to data-loader workers and
    distributed ranks: every sample goes to exactly one (rank, worker), none
    twice and none missed, in an order fixed by the seed and the epoch.

Sessions in worker processes
    A forked worker inherits the session and opens its own connections (the
    transport notices the new process id); a spawned worker receives the
    samples pickled, with the session's archive, cache folder, retry policy
    and credential (:class:`~isicarchive.scaleout.SessionSpec`, whose ``repr``
    hides the credential), and opens its own session from them.  No socket is
    shared between processes; the cache folder is (its writes are atomic and
    locked across processes).
"""

from __future__ import annotations

import copy
import io
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ._epoch import SharedEpoch  # its own module: a process it is pickled into imports only that
from .errors import ImageTooLargeError, IsicError, MissingTargetError, QueryError
from .grouping import field_of
from .legacy import V2_DIAGNOSIS_PATHS, legacy_clinical
from .transport import record_id

if TYPE_CHECKING:
    from .api import IsicApi
    from .models.image import Image
    from .scaleout import SessionSpec
    from .store import Store

__all__ = ["MASK", "MISSING", "UNLABELLED", "Samples", "SessionHandle", "SharedEpoch", "decode_pixels", "epoch_order",
           "image_source", "shard_indices", "target_value"]

#: the target that asks for segmentation masks instead of classes
MASK = "mask"
#: what to do with records that have no value of the target field
MISSING = ("error", "keep", "drop")
#: the class index of a record without a target value, kept with ``missing="keep"``
#: (``torch.nn.CrossEntropyLoss(ignore_index=-1)`` skips it)
UNLABELLED = -1


# ------------------------------------------------------------------ labels
def target_value(record: dict, target: str) -> Any:
    """A record's value of ``target``: today's v2 names on every record, the legacy names on v1 ones.

    ``diagnosis_1`` … ``diagnosis_5`` of a v1 record (which has a legacy
    ``diagnosis`` term) are the nodes of that term's path in today's
    hierarchy; the legacy ``diagnosis``, ``benign_malignant`` and
    ``anatom_site_general`` of a v2 record come from its hierarchy (as
    :func:`isicarchive.legacy.legacy_clinical` maps them).  A dotted path is
    read as written.
    """
    value = field_of(record, target)
    if value is not None or "." in target:
        return value
    clinical = _clinical(record)
    if target.startswith("diagnosis_") and target[10:].isdigit():
        term = clinical.get("diagnosis")
        path = V2_DIAGNOSIS_PATHS.get(term) if isinstance(term, str) else None
        level = int(target[10:])
        return path[level - 1] if path is not None and 1 <= level <= len(path) else None
    if target in ("diagnosis", "benign_malignant", "anatom_site_general"):
        return legacy_clinical(clinical).get(target)
    return None


def _clinical(record: dict) -> dict:
    for section in ("metadata", "meta"):
        found = (record.get(section) or {}).get("clinical")
        if isinstance(found, dict):
            return found
    return {}


# ------------------------------------------------------------------ pixels
def decode_pixels(data: bytes | BinaryIO, what: str = "image") -> np.ndarray:
    """The pixels of an encoded image as ``uint8`` height × width × channels (1, 3 or 4 channels).

    ``data`` is the file's bytes or the file opened for reading (Pillow then
    reads it as it decodes, without a copy of the whole file first).  Pillow
    decodes (as torchvision's ``ImageFolder`` loader does), once the size its
    header announces is within :mod:`isicarchive.limits`
    (:class:`~isicarchive.pixels.ImageTooLargeError` otherwise); a file that
    is no image is an :class:`~isicarchive.errors.IsicError`.
    """
    import warnings

    from PIL import Image as PILImage

    from . import limits
    from .pixels import check_pixels

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # our own limit applies
            with PILImage.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
                width, height = image.size
                if width * height > limits.current().max_pixels or getattr(image, "n_frames", 1) > 1:
                    check_pixels(_whole(data), what)  # the limit's own message (a TIFF's pages added up)
                converted = image if image.mode in ("L", "RGB", "RGBA") else \
                    image.convert("RGBA" if "A" in image.getbands() else "RGB")
                pixels = np.array(converted)  # writable (asarray's view of Pillow's bytes is not; torch warns of it)
    except ImageTooLargeError:
        raise
    except PILImage.DecompressionBombError as exc:  # Pillow's own limit, where it is lower than ours
        raise ImageTooLargeError(f"{what}: refused, {exc}") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError … for broken files
        raise IsicError(f"{what} does not decode ({type(exc).__name__}: {exc})") from None
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _whole(data: bytes | BinaryIO) -> bytes:
    """All the bytes of a file (read again from its start) or the bytes themselves."""
    if isinstance(data, bytes):
        return data
    position = data.tell()
    data.seek(0)
    whole = data.read()
    data.seek(position)
    return whole


# ------------------------------------------------------------------ shards
def epoch_order(n: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
    """The order of ``n`` samples in an epoch: a permutation fixed by ``(seed, epoch)``, or 0 … n-1."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def shard_indices(n: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, rank: int = 0,
                  world_size: int = 1, worker: int = 0, num_workers: int = 1) -> list[int]:
    """The sample indices one data-loader worker of one distributed rank reads in an epoch.

    The epoch's order (:func:`epoch_order`) is dealt to the ranks in turn, and
    each rank's share to its workers in turn: over every ``(rank, worker)``
    each index comes exactly once.  A data loader that takes its workers'
    samples in turn (PyTorch's does) hands a rank its share in the epoch's
    order.  Ranks may differ by one sample: none is repeated to even them out.

    Raises
    ------
    QueryError
        A rank or worker outside ``0 … world_size-1`` / ``0 … num_workers-1``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise QueryError(f"rank {rank} is not one of the {world_size} ranks (0 … {world_size - 1})")
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise QueryError(f"worker {worker} is not one of the {num_workers} workers (0 … {num_workers - 1})")
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    return order[rank::world_size][worker::num_workers].tolist()


# ----------------------------------------------------------------- session
class SessionHandle:
    """The session samples are read with: the caller's in this process (and in forked children, where
    its transport opens new connections), reopened from its :class:`~isicarchive.scaleout.SessionSpec`
    in a process the samples were pickled into."""

    def __init__(self, api: IsicApi) -> None:
        self._api: IsicApi | None = api
        self._spec: SessionSpec | None = None

    @property
    def spec(self) -> SessionSpec:
        if self._spec is None:
            from .scaleout import SessionSpec

            assert self._api is not None
            self._spec = SessionSpec.of(self._api)
        return self._spec

    @property
    def api(self) -> IsicApi:
        """This process's session (opened from the spec on first use after unpickling)."""
        if self._api is None:
            self._api = self.spec.session()
        return self._api

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._api = None
        self._spec = state["spec"]

    def __repr__(self) -> str:
        return f"SessionHandle({self._spec!r})" if self._api is None else f"SessionHandle({self._api!r})"


def _store(api: IsicApi) -> Store:
    """The session's store (through its context, :mod:`isicarchive.context`)."""
    return api.context.store


# ----------------------------------------------------------------- samples
class Samples:
    """The samples of a selection: records, class labels, files and pixels (see the module docstring).

    Parameters
    ----------
    images : Selection, mapping id → record, or sequence
        A selection (from ``select_images``, ``search_images``, a part of
        ``Selection.split``) knows its session; a list of ids, names,
        records or ``Image`` objects needs ``api``.
    target : str
        The field whose values are the classes (``diagnosis_1``,
        ``benign_malignant``, a dotted path …), or ``"mask"`` for
        segmentation masks.
    classes : sequence, optional
        The classes in index order; by default the sorted distinct values.
        A record whose value is not among them is an error.
    api : IsicApi, optional
        The session to read with (by default the selection's).
    missing : {"error", "keep", "drop"}
        Records without a value of ``target``: an error that says how many
        (default), kept with the class index ``-1``, or left out.

    Raises
    ------
    MissingTargetError
        Records without a value of ``target`` and ``missing="error"``.
    QueryError
        An empty selection, an unknown ``missing``, a value not in ``classes``,
        ids without ``api``.
    """

    def __init__(self, images: Any, *, target: str = "diagnosis_1", classes: Sequence[Any] | None = None,
                 api: IsicApi | None = None, missing: str = "error") -> None:
        if missing not in MISSING:
            raise QueryError(f"missing must be one of {', '.join(MISSING)}, not {missing!r}")
        if not isinstance(target, str) or not target:
            raise QueryError(f"target must be a field name such as 'diagnosis_1' or 'mask', not {target!r}")
        session = api if api is not None else getattr(images, "session", None)
        if session is None:
            raise QueryError("these images come without a session: pass api=IsicApi(...) (a selection from "
                             "select_images, search_images or split knows its own)")
        self.session = SessionHandle(session)
        records = _records_of(images, session)
        if not records:
            raise QueryError("there are no images to train on (the selection is empty)")
        self.target = target
        self.missing = missing
        self.ids: list[str] = [record_id(r) for r in records]
        self.records: list[dict] = records
        self.classes: list[Any] = []
        self.class_to_idx: dict[Any, int] = {}
        self.targets: list[int] = []
        #: per sample, where its mask is (a segmentation id, a file inside an archive on disk), None: none
        self._mask_sources: list[Any] | None = None
        #: per sample, its image file in the cache as found when the samples were made (None: not there
        #: then; fetched and noted on first read); None without a cache folder (see find_files)
        self._files: list[str | None] | None = None
        self._listed_in = 0  # the process that found them
        if target != MASK:
            self._encode(classes)
        else:
            self._find_masks()
        self.find_files()

    def _find_masks(self) -> None:
        """Look up every sample's mask once (a segmentation listing per image on v1, in parallel), so
        that an epoch asks nothing more; images without one follow ``missing`` as missing classes do."""
        if self.missing == "keep":
            raise QueryError("missing='keep' has no meaning for masks: an image without one is an error "
                             "(missing='error') or left out (missing='drop')")
        sources = _mask_sources(self.api, self.records)
        absent = [i for i, source in enumerate(sources) if source is None]
        if absent and self.missing == "error":
            shown = ", ".join(self.ids[i] for i in absent[:5]) + (" …" if len(absent) > 5 else "")
            raise MissingTargetError(f"{len(absent)} of {len(sources)} images have no segmentation mask ({shown}); "
                                     "pass missing='drop' to leave them out", count=len(absent), total=len(sources),
                                     ids=[self.ids[i] for i in absent])
        kept = [i for i, source in enumerate(sources) if source is not None]
        if not kept:
            raise QueryError("no image has a segmentation mask: nothing is left to train on")
        self.ids = [self.ids[i] for i in kept]
        self.records = [self.records[i] for i in kept]
        self._mask_sources = [sources[i] for i in kept]

    def _encode(self, classes: Sequence[Any] | None) -> None:
        values = [target_value(r, self.target) for r in self.records]
        absent = [i for i, v in enumerate(values) if v is None]
        if absent and self.missing == "error":
            shown = ", ".join(self.ids[i] for i in absent[:5]) + (" …" if len(absent) > 5 else "")
            raise MissingTargetError(
                f"{len(absent)} of {len(values)} images have no {self.target} ({shown}); pass missing='drop' to "
                f"leave them out or missing='keep' to keep them with the class index {UNLABELLED}",
                count=len(absent), total=len(values), ids=[self.ids[i] for i in absent])
        if absent and self.missing == "drop":
            kept = [i for i, v in enumerate(values) if v is not None]
            self.ids = [self.ids[i] for i in kept]
            self.records = [self.records[i] for i in kept]
            values = [values[i] for i in kept]
            if not kept:
                raise QueryError(f"no image has a value of {self.target}: nothing is left to train on")
        present = {v for v in values if v is not None}
        if classes is None:
            self.classes = sorted(present, key=lambda v: (str(type(v)), v))
        else:
            self.classes = list(classes)
            unknown = present - set(self.classes)
            if unknown:
                count = sum(v in unknown for v in values)
                raise QueryError(f"{count} images have a {self.target} not among the classes given: "
                                 f"{', '.join(map(repr, sorted(unknown, key=str)[:10]))}")
        self.class_to_idx = {value: index for index, value in enumerate(self.classes)}
        self.targets = [self.class_to_idx[v] if v is not None else UNLABELLED for v in values]

    # ------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        kind = "masks" if self.target == MASK else f"{len(self.classes)} classes of {self.target}"
        return f"Samples({len(self)} images, {kind})"

    @property
    def api(self) -> IsicApi:
        return self.session.api

    def record(self, index: int) -> dict:
        """The metadata record of sample ``index`` (a copy: changing it changes nothing here)."""
        return copy.deepcopy(self.records[index])

    def image(self, index: int) -> Image:
        """An :class:`~isicarchive.models.image.Image` of sample ``index``, built from its record (no request)."""
        return self.api.context.image_object(self.records[index])

    def class_weights(self) -> list[float]:
        """Inverse-frequency weights, one per class: ``n / (classes × n_class)`` (1.0 each when balanced).

        Samples kept without a class do not count; a class no sample has gets 0.
        """
        if self.target == MASK:
            raise QueryError("masks have no classes to weigh")
        counts = Counter(t for t in self.targets if t != UNLABELLED)
        labelled = sum(counts.values())
        return [labelled / (len(self.classes) * counts[c]) if counts[c] else 0.0 for c in range(len(self.classes))]

    # -------------------------------------------------------------- files
    def image_bytes(self, index: int) -> bytes:
        """The encoded image file of sample ``index``: from the cache (fetched once when missing), from an
        archive on disk, or, without a cache folder, downloaded."""
        path = self.cached_file(index)
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except FileNotFoundError:  # the cache was cleaned meanwhile: look it up (and fetch it) again
                self._forget(index)
        source = self.source(index)
        return source.read_bytes() if isinstance(source, Path) else source

    def source(self, index: int) -> Path | bytes:
        """Where sample ``index``'s file is: a path (the cache, fetched into it first when missing; a folder
        on disk), else its bytes (inside a zip; downloaded without a cache folder)."""
        path = self.cached_file(index)
        if path is not None and os.path.isfile(path):
            return Path(path)
        source = image_source(self.api, self.records[index])
        if isinstance(source, Path) and self._files is not None:
            self._files[index] = str(source)
        return source

    def find_files(self) -> None:
        """Find every sample's file in the cache folder at once (one listing per cache folder).

        Done when the samples are made, so that the processes they go to (forked
        or pickled into data-loader workers) read each file at the path found
        here, with no look-up of their own; call it again after filling the
        cache by other means (files fetched through the samples themselves are
        noted as they come).
        """
        self._listed_in = os.getpid()
        store = _store(self.api)
        if store.cache is None or store.backend.local:
            self._files = None
            return
        found = store.cache.find_image_files(self.ids)
        self._files = [found.get(key) for key in self.ids]

    def cached_file(self, index: int) -> str | None:
        """Sample ``index``'s file in the cache as last found (it may have been cleaned since), or None."""
        if self._files is None:
            return None
        path = self._files[index]
        if path is None and self._listed_in != os.getpid():
            # a process the samples were forked or pickled into lists the cache as it is now, once: files
            # that came after the samples were made (download_images) are then read with no look-up each
            self.find_files()
            path = self._files[index]
        return path

    def _forget(self, index: int) -> None:
        if self._files is not None:
            self._files[index] = None

    def pixels(self, index: int) -> np.ndarray:
        """Decoded pixels of sample ``index``: ``uint8``, height × width × channels.

        A cached file that does not decode is removed from the cache (with a
        :class:`~isicarchive.cache.CacheCorruptionWarning`) and fetched again,
        once, as the session's own reads do.
        """
        what = f"image {self.ids[index]}"
        path = self.cached_file(index)
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    return decode_pixels(fh, what)
            except FileNotFoundError:  # the cache was cleaned meanwhile: look it up (and fetch it) again
                self._forget(index)
            except ImageTooLargeError:
                raise
            except IsicError as exc:  # a broken file in the cache (the archive's own are checked when fetched)
                _store(self.api).cache.discard_corrupt(Path(path), exc)  # type: ignore[union-attr]
                self._forget(index)
        source = self.source(index)
        if isinstance(source, Path):
            with open(source, "rb") as fh:
                return decode_pixels(fh, what)
        return decode_pixels(source, what)

    def mask(self, index: int) -> np.ndarray:
        """The segmentation mask of sample ``index``: ``uint8`` height × width (255 inside the lesion).

        From the legacy v1 archive's segmentations (an expert's where there is
        one, else the first that did not fail; cached as ``sgmsk_`` files), or
        the mask file an archive on disk lists for the image.
        """
        if self._mask_sources is None:
            self._mask_sources = _mask_sources(self.api, self.records)
        source = self._mask_sources[index]
        if source is None:
            from .errors import NotFoundError

            raise NotFoundError(f"image {self.ids[index]} has no segmentation mask")
        store = _store(self.api)
        if isinstance(source, Path) or store.backend.local:
            data = source.read_bytes() if isinstance(source, Path) else store.backend.files.read(source)  # type: ignore[attr-defined]
            pixels = decode_pixels(data, f"mask of {self.ids[index]}")
        else:
            pixels = np.asarray(store.segmentation_mask(source))
        return pixels[:, :, 0] if pixels.ndim == 3 else pixels

    # ----------------------------------------------------------- streaming
    def stream(self, indices: Iterable[int], *, read: Callable[[int], Any] | None = None,
               ahead: int | None = None) -> Iterator[tuple[int, Any]]:
        """``(index, read(index))`` in the order given, with up to ``ahead`` reads running ahead of the consumer.

        ``read`` defaults to :meth:`pixels`.  The reads run on a thread pool of
        the session's download workers, so a cold cache fills with parallel
        transfers (the download engine's) while the consumer takes what is
        ready; on a warm cache they decode in parallel (Pillow releases the
        GIL while it decodes).  An error is raised where its sample comes.
        """
        read = read or self.pixels
        workers = max(1, int(getattr(self.api, "workers", 4)))
        ahead = ahead or 2 * workers
        pending: deque[tuple[int, Future[Any]]] = deque()
        order = iter(indices)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="isic-samples") as pool:
            try:
                for index in order:
                    pending.append((index, pool.submit(read, index)))
                    if len(pending) >= ahead:
                        done, future = pending.popleft()
                        yield done, future.result()
                while pending:
                    done, future = pending.popleft()
                    yield done, future.result()
            finally:
                for _, future in pending:  # a consumer that stopped early: drop what was not started
                    future.cancel()


def _mask_sources(api: IsicApi, records: list[dict]) -> list[Any]:
    """Where each record's mask is: a file inside an archive on disk (``files.mask.path``), a v1
    segmentation id (an expert's first, failed ones never), or None."""
    store = _store(api)
    if store.backend.local:
        return [((r.get("files") or {}).get("mask") or {}).get("path") for r in records]
    if store.backend.version != 1:
        from .errors import UnsupportedError

        raise UnsupportedError("today's archive (v2) has no segmentation masks: they come from the legacy v1 API "
                               "or from an archive on disk that holds mask files")

    def chosen(record: dict) -> str | None:
        found = [s for s in store.backend.segmentations({"imageId": record_id(record)}) if not s.get("failed")]
        best = next((s for s in found if s.get("skill") == "expert"), found[0] if found else None)
        return None if best is None else str(best["_id"])

    with ThreadPoolExecutor(max_workers=max(1, min(2 * int(getattr(api, "workers", 4)), 32))) as pool:
        return list(pool.map(chosen, records))


def image_source(api: IsicApi, record: dict) -> Path | bytes:
    """Where an image's file is: its path in the cache (fetched into it first when missing) or in a
    folder on disk, else its bytes (inside a zip, or downloaded when there is no cache folder)."""
    store = _store(api)
    if store.backend.local:
        path = store.backend.local_path(record)
        # a link in a folder someone else made is read through the backend, which keeps to its root
        if path is not None and not path.is_symlink() and path.is_file():
            return path
        return store.backend.read_image(record)
    path = store.image_path(record)
    return path if path is not None else _download(store, record)


def _download(store: Store, record: dict) -> bytes:
    """An image's bytes without a cache folder (a pre-signed v2 address that expired is renewed once)."""
    from .errors import AuthenticationError

    try:
        return store.http.get_bytes(store.backend.image_file(record))[0]
    except AuthenticationError:
        renew = store.backend.image_file_renewer(record)
        if renew is None:
            raise
        return store.http.get_bytes(renew())[0]


def _records_of(images: Any, api: IsicApi) -> list[dict]:
    """The records of a selection, a mapping or a sequence of ids, names, records and Images."""
    if isinstance(images, Mapping):
        images = list(images.values())
    elif isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise QueryError(f"images are a selection or a list of ids, records or Images, not {type(images).__name__}")
    from .models.image import Image

    items = list(images)
    keys = [item for item in items if not isinstance(item, (dict, Image))]
    # one bulk look-up for every id and name (records and Images in hand cost none)
    found = iter(api.images_for(keys)) if keys else iter(())
    return [item if isinstance(item, dict) else item.as_json() if isinstance(item, Image) else next(found).as_json()
            for item in items]
