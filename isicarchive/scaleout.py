"""Per-image work over a selection on Dask: a local cluster by default, any ``distributed`` cluster on request.

:func:`map_images` (``IsicApi.map_images``) cuts the selection's records into
partitions and hands each partition to Dask as one task.  A task builds (once
per worker process) a session from a :class:`SessionSpec` — the caller's
archive, cache folder, retry policy and credentials — turns each record into
an :class:`~isicarchive.models.image.Image`, loads the parts asked for and
calls the user's function.  Its rows come back as a pandas DataFrame indexed
by image id; an image whose function raised gets a row whose ``error`` column
says what (type and message), unless ``strict=True``.

Nothing here schedules: Dask does.  Lost workers are Dask's business too — the
tasks of a worker that died are run again elsewhere — and the shared cache
stays valid because every cache write is atomic and locked across processes.

Credentials: the session's token travels inside the :class:`SessionSpec`,
which is an argument of the tasks, so it goes exactly where the tasks go — to
the cluster the caller chose — and nowhere else.  Its ``repr`` hides the
token, task names are ``isic-map-images-<part>-<hash><call>`` (the hash covers
a digest of the token, never the token; ``<call>`` is new for every call, so
that two calls over one session never share a task's result), and workers log as the library always does,
without secrets.  A v2 token that expires during a long run is renewed in
each worker from the refresh token it carries.

Needs the ``dask`` extra (``dask[dataframe]``, ``distributed``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ImageTaskError, IsicError, QueryError
from .oauth import OAuthToken
from .progress import progress as _progress

if TYPE_CHECKING:
    from .api import IsicApi
    from .models.image import Image

__all__ = ["LOADS", "WORKER_CONFIG", "ImageTaskError", "SessionSpec", "check_arguments", "map_images",
           "run_partition", "to_dask_dataframe", "worker_settings"]

log = logging.getLogger("isicarchive.scaleout")

#: the parts of an image ``load=`` can ask for, and what each loads before ``func`` runs
LOADS = {
    "imagedata": "image.data: the pixels",
    "superpixels": "image.superpixels: the label index and its map",
    "segmentation": "image.segmentation_masks: the mask of each of the image's segmentations (v1)",
}
#: images per task, at most: small enough for an even spread and a lost worker costing little
PARTITION_MAX = 50

#: Dask settings for worker processes that do per-image work; ``client="cluster"`` starts its workers
#: with them, and ``with worker_settings():`` around a cluster of your own does the same.  The allocator's
#: thresholds also reach the workers of any cluster map_images runs on, started by whoever, through
#: ``mallopt`` (isicarchive.allocator); the environment here covers what only a process's start can set.
#: Measured on per-image work (docs/benchmarks.md): glibc hands large freed blocks back to the system
#: and faults them in again for the next image (about 3,500 page faults a 640x480 image; Dask's own
#: ``MALLOC_TRIM_THRESHOLD_=65536`` makes it worse), so fixed thresholds that keep up to 128 MB halved
#: the time per image; and the worker's statistical profiler walks the stacks of its threads a hundred
#: times a second with the GIL held (about 7-10% slower; only the dashboard's "Profile" page uses it).
#: In a cluster started by someone else, map_images slows that profiler to one sample every 100 ms.
WORKER_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 64 << 20,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 128 << 20,
    "distributed.worker.profile.enabled": False,
}


@contextmanager
def worker_settings() -> Iterator[None]:
    """:data:`WORKER_CONFIG` for the worker processes of the clusters started in the block.

    Dask lets a variable of the starting process's environment override its
    ``pre-spawn-environ`` settings, and each cluster it starts writes those
    settings into that environment: one earlier cluster in the process (with
    Dask's ``MALLOC_TRIM_THRESHOLD_=65536``) silently undid them for every later
    one.  The block sets them in the environment as well, and puts the
    environment back as it was when it ends (restarted workers keep them).
    """
    import dask

    prefix = "distributed.nanny.pre-spawn-environ."
    wanted = {key[len(prefix):]: str(value) for key, value in WORKER_CONFIG.items() if key.startswith(prefix)}
    with environment(wanted), dask.config.set(WORKER_CONFIG):
        yield


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """These variables set in this process's environment (which worker processes started in the block
    inherit), and the environment put back as it was when the block ends."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True, repr=False)
class SessionSpec:
    """What a worker needs to open the caller's session: archive, cache, policy, credentials.

    The credential is kept as text (a Girder token, or a v2 OAuth token as
    JSON) and shown nowhere: ``repr`` names the archive and whether there is
    a credential, Dask's tokenisation sees only its digest.
    """

    base_url: str
    hostname: str
    api_uri: str
    api_version: int
    cache_folder: str | None
    verify: bool | str | None
    timeout: Any
    retries: int
    backoff: float
    deadline: float
    credential: str | None = field(default=None)
    #: the challenge release and splits a session on a release reads (isicarchive.releases), else None
    release: tuple[str, tuple[str, ...]] | None = field(default=None)

    @classmethod
    def of(cls, api: IsicApi) -> SessionSpec:
        from .releases.session import release_of

        http = api.context.transport
        oauth = api.oauth_token
        credential = oauth.to_json() if oauth is not None else http._token
        return cls(api.base_url, api.hostname, api.api_uri, api.api_version, api.cache_folder, http._verify,
                   http.timeout, http.policy.retries, http.policy.backoff, http.deadline, credential,
                   release_of(api))

    @property
    def key(self) -> str:
        """A digest of everything, the credential included: one worker session per distinct spec."""
        text = "\n".join(str(v) for v in (self.base_url, self.api_version, self.cache_folder, self.verify,
                                          self.timeout, self.retries, self.backoff, self.deadline, self.credential,
                                          self.release))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __dask_tokenize__(self) -> str:
        return self.key

    def __repr__(self) -> str:
        who = "signed in" if self.credential else "anonymous"
        return f"SessionSpec({self.base_url}, {who}, cache={self.cache_folder!r})"

    def session(self) -> IsicApi:
        """This process's session for the spec (built on first use, then reused by every task)."""
        with _SESSIONS_LOCK:
            api = _SESSIONS.get(self.key)
            if api is None:
                api = _SESSIONS[self.key] = self._open()
            return api

    def _open(self) -> IsicApi:
        from .api import IsicApi
        from .releases.session import reopened

        token: str | OAuthToken | None = self.credential
        if self.credential is not None and self.api_version == 2:
            token = OAuthToken.from_json(self.credential)
        with reopened(self.release):  # a spawned worker reads the same release and splits as the caller
            return IsicApi(hostname=self.hostname, api_uri=self.api_uri, api_version=self.api_version,
                           cache_folder=self.cache_folder, token=token, verify=self.verify, timeout=self.timeout,
                           retries=self.retries, backoff=self.backoff, deadline=self.deadline, progress=False)


def _call_token() -> str:
    """A part of the task names new for every call.

    Names made of the partition and the session alone were the same for two
    calls over one session: a cluster still holding the first call's results
    handed them to the second (other images, another function).
    """
    return uuid.uuid4().hex[:12]


_SESSIONS: dict[str, IsicApi] = {}
_SESSIONS_LOCK = threading.Lock()


def _load(image: Image, parts: Sequence[str]) -> None:
    for part in parts:
        if part == "imagedata":
            image.load_imagedata()
        elif part == "superpixels":
            image.load_superpixels(map_superpixels=True)
        elif part == "segmentation":
            image.load_segmentation_masks()


def _prefetch(api: IsicApi, records: list[dict], load: Sequence[str]) -> None:
    """Bring the partition's files into the cache at once, with the download engine's parallel transfers:
    waiting on the archive one image at a time would leave a worker idle for most of a slow link."""
    context = api.context
    if context.cache is None or not records or not {"imagedata", "superpixels"} & set(load):
        return
    superpixels = "superpixels" in load and api.api_version == 1
    try:
        context.store.download_images(records, superpixels=superpixels, progress=False)
    except IsicError as exc:  # each image's own load reports what is wrong with it
        log.info("prefetch of %d images failed (%s); loading them one by one", len(records), exc)


def run_partition(records: list[dict], spec: SessionSpec, func: Callable[[Image], Any],
                  load: Sequence[str] = ("imagedata",), strict: bool = False) -> Any:
    """One task: ``func`` over the images of ``records``; a DataFrame indexed by image id.

    Each row holds the keys of the dict ``func`` returned (any other value:
    one column ``result``) and ``error``: None, or ``"Type: message"`` of what
    ``func`` (or loading the image) raised.
    """
    import pandas as pd

    if "distributed" in sys.modules:
        from .allocator import in_dask_worker, prepare_this_worker

        if in_dask_worker():  # allocator thresholds and a slower profiler, once per worker process
            prepare_this_worker()
    api = spec.session()
    _prefetch(api, records, load)
    rows: list[dict[str, Any]] = []
    ids: list[str] = []
    image_object = api.context.image_object
    for record in records:
        image = image_object(record)
        try:
            _load(image, load)
            value = func(image)
        except Exception as exc:  # the user's function: anything may go wrong, and it becomes a row
            error = f"{type(exc).__name__}: {exc}"
            if strict:
                raise ImageTaskError(image.id, error) from None
            row: dict[str, Any] = {"error": error}
        else:
            row = dict(value) if isinstance(value, Mapping) else {"result": value}
            row["error"] = None
        finally:
            image.clear_data()  # the pixels are done with: a partition's memory stays one image's
        rows.append(row)
        ids.append(image.id)
    frame = pd.DataFrame.from_records(rows, index=pd.Index(ids, name="id"))
    if "error" not in frame.columns:
        frame["error"] = None
    return frame[[c for c in frame.columns if c != "error"] + ["error"]]


def check_arguments(func: Any, load: Any) -> tuple[str, ...]:
    """The parts to load; raises before any work for a function that is no function or cannot travel."""
    if not callable(func):
        raise QueryError(f"map_images needs a function of one image, not {type(func).__name__}")
    parts = (load,) if isinstance(load, str) else tuple(load or ())
    unknown = [p for p in parts if p not in LOADS]
    if unknown:
        raise QueryError(f"cannot load {unknown} before the function; known parts: {sorted(LOADS)}")
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(_NEEDS_DASK) from None
    try:
        cloudpickle.dumps(func)
    except Exception as exc:  # pickling fails in many ways: TypeError, PicklingError, RecursionError …
        raise IsicError(f"the function cannot be sent to Dask workers ({type(exc).__name__}: {exc}); define it "
                        "without open files, locks, sessions or sockets in its closure") from None
    return parts


_NEEDS_DASK = "map_images needs Dask: pip install 'isicarchive[dask]'"


def _partitions(records: list[dict], npartitions: int | None, workers: int) -> list[list[dict]]:
    if npartitions is None:
        # four tasks a worker at least (an even spread, little lost with a worker), at most PARTITION_MAX images each
        size = max(1, min(PARTITION_MAX, math.ceil(len(records) / (4 * max(1, workers)))))
    else:
        size = max(1, math.ceil(len(records) / max(1, npartitions)))
    return [records[i:i + size] for i in range(0, len(records), size)]


def map_images(api: IsicApi, func: Callable[[Image], Any], records: list[dict], *, client: Any = None,
               load: Sequence[str] | str = ("imagedata",), meta: Any = None, strict: bool = False,
               compute: bool = True, npartitions: int | None = None, progress: bool = True) -> Any:
    """See :meth:`isicarchive.IsicApi.map_images`."""
    parts = check_arguments(func, load)
    try:
        import dask
        import pandas as pd
    except ImportError:
        raise ImportError(_NEEDS_DASK) from None
    spec = SessionSpec.of(api)
    if not compute:
        return _lazy(spec, func, records, parts, meta, strict, npartitions)
    if not records:
        return run_partition([], spec, func, parts, strict)
    if client is None:
        # measured (docs/benchmarks.md): decoding and numpy release the GIL, so threads beat worker processes
        # for per-image work on one machine, and start in no time; GIL-bound functions ask for "cluster"
        client = "threads"
    if isinstance(client, str) and client != "cluster":
        if client not in ("threads", "processes", "sync"):
            raise QueryError("client is a distributed.Client or one of 'threads', 'cluster', 'processes', 'sync'; "
                             f"not {client!r}")
        chunks = _partitions(records, npartitions, os.cpu_count() or 1)
        call = _call_token()
        tasks = [dask.delayed(run_partition)(chunk, spec, func, parts, strict,
                                             dask_key_name=f"isic-map-images-{i}-{spec.key}{call}")
                 for i, chunk in enumerate(chunks)]
        with _TaskBar(len(records), chunks, progress):
            frames = dask.compute(*tasks, scheduler=_local_scheduler(client))
        return pd.concat(frames)
    owned = client == "cluster"
    if owned:
        client = _local_client()
    try:
        return _on_cluster(client, spec, func, records, parts, strict, npartitions, progress and not owned,
                           progress)
    finally:
        if owned:
            cluster = client.cluster
            client.close()
            cluster.close()


def _local_scheduler(name: str) -> Callable[..., Any]:
    """Dask's local scheduler ``name`` as its function: named by a string, Dask first looks for a running
    distributed client, which imports ``distributed`` (about a second of a first call's time) for nothing."""
    if name == "processes":
        import dask.multiprocessing

        return dask.multiprocessing.get
    if name == "sync":
        import dask.local

        return dask.local.get_sync
    import dask.threaded

    return dask.threaded.get


def _local_client() -> Any:
    """A cluster of this machine: one single-threaded worker process per core (CPU-bound work and the GIL)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError(_NEEDS_DASK) from None
    with worker_settings():
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster)


def _on_cluster(client: Any, spec: SessionSpec, func: Callable[[Image], Any], records: list[dict],
                parts: tuple[str, ...], strict: bool, npartitions: int | None, show_dashboard: bool,
                progress: bool) -> Any:
    import pandas as pd
    from distributed import as_completed

    if show_dashboard:
        try:
            link = client.dashboard_link
        except Exception:  # a cluster without a dashboard service
            link = None
        if link:
            print(f"isicarchive: Dask dashboard at {link}", file=sys.stderr)
    _register_allocator(client)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    chunks = _partitions(records, npartitions, workers)
    # the spec goes to the cluster once, not with every task
    [shared] = client.scatter([spec], broadcast=False, hash=False)
    call = _call_token()
    futures = [client.submit(run_partition, chunk, shared, func, parts, strict,
                             key=f"isic-map-images-{i}-{spec.key}{call}", pure=False) for i, chunk in enumerate(chunks)]
    order = {future.key: i for i, future in enumerate(futures)}
    frames: list[Any] = [None] * len(futures)
    bar = _progress(len(records), "Images", unit="image", enabled=progress)
    try:
        for future in as_completed(futures):
            try:
                frames[order[future.key]] = frame = future.result()
            except BaseException:
                client.cancel(futures)
                raise
            bar.update(len(frame))
    finally:
        bar.close()
    return pd.concat(frames)


def _register_allocator(client: Any) -> None:
    """The allocator's thresholds in every worker of the cluster, those that join later included."""
    from .allocator import AllocatorPlugin

    register = getattr(client, "register_plugin", None) or client.register_worker_plugin
    try:
        register(AllocatorPlugin())
    except Exception as exc:  # a cluster that refuses plugins still runs the work; each task applies them
        log.info("allocator plugin not registered (%s: %s)", type(exc).__name__, exc)


def _lazy(spec: SessionSpec, func: Callable[[Image], Any], records: list[dict], parts: tuple[str, ...],
          meta: Any, strict: bool, npartitions: int | None) -> Any:
    import dask.dataframe as dd

    chunks = _partitions(records, npartitions, os.cpu_count() or 1) or [[]]
    if meta is None:
        # the columns come from the function itself: one image, here, before anything is scheduled
        meta = run_partition(chunks[0][:1], spec, func, parts, strict=False).iloc[:0]
    return dd.from_map(run_partition, chunks, args=[spec, func, parts, strict], meta=meta,
                       label="isic-map-images", enforce_metadata=False)


class _TaskBar:
    """A tqdm bar for Dask's local schedulers, advanced as each partition finishes."""

    def __init__(self, total: int, chunks: list[list[dict]], enabled: bool) -> None:
        from dask.callbacks import Callback

        self.bar = _progress(total, "Images", unit="image", enabled=enabled)
        sizes = {f"isic-map-images-{i}": len(chunk) for i, chunk in enumerate(chunks)}
        bar = self.bar

        class Advance(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                name = key[0] if isinstance(key, tuple) else key
                prefix = str(name).rsplit("-", 1)[0]
                if prefix in sizes:
                    bar.update(sizes[prefix])

        self.callback = Advance()

    def __enter__(self) -> _TaskBar:
        self.callback.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.callback.__exit__(*exc)
        self.bar.close()


def to_dask_dataframe(frame: Any, npartitions: int | None = None) -> Any:
    """A pandas DataFrame as a Dask one (``npartitions`` default: one per 10,000 rows)."""
    try:
        import dask.dataframe as dd
    except ImportError:
        raise ImportError("to_dask_dataframe needs Dask: pip install 'isicarchive[dask]'") from None
    if npartitions is not None and (not isinstance(npartitions, int) or npartitions < 1):
        raise QueryError(f"npartitions must be a whole number of at least 1, not {npartitions!r}")
    return dd.from_pandas(frame, npartitions=npartitions or max(1, math.ceil(len(frame) / 10_000)), sort=False)
