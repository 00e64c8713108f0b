"""The download engine: parallel, resumable, verified, with progress.

Every file the library fetches goes through :func:`fetch_file`:

* the body streams in 64 KiB chunks to ``.<name>.part`` in the destination
  folder (memory stays bounded whatever the file size);
* an interrupted transfer leaves the part file, and the next attempt asks for
  the rest with an HTTP ``Range`` request (a server that ignores Range gets
  a fresh start);
* the size is checked against ``Content-Length``/``Content-Range`` and the
  size the API announced, then the part file is moved into place with
  :func:`os.replace` — a destination file is always complete (it is not
  fsynced: a file damaged by a power loss fails verification on read and is
  fetched again).

:class:`Downloader` runs many of them on a thread pool that shares the
session's connection pool and back-off (a 429 pauses every worker), skips
files already complete, and reports downloaded / skipped / failed at the end.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3

from .errors import ArchiveUnavailableError, AuthenticationError, IsicError, QueryError
from .locking import adopt_partial, file_lock, release_partial
from .progress import progress as _progress
from .transport import Transport, deadline_of, record_id

__all__ = ["DEFAULT_WORKERS", "MAX_FILE_BYTES", "MIN_TRANSFER_RATE", "DownloadResult", "Downloader", "Job",
           "extension_for", "fetch_file", "jobs_for",
           "looks_like_html", "sniffed_type"]

# Reads of a part file kept from an earlier attempt (for its digest).
CHUNK = 1 << 16
#: most bytes one read of a body hands over. Each read returns what has arrived (``read1``), so a
#: transfer cut short keeps every byte received before the cut, a slow link's bytes count for its speed
#: floor as they come, and a fast one is read in few large pieces (64 KiB reads cost a fifth of the
#: client's CPU on a 50 ms link: every read passes through requests', urllib3's and http.client's layers)
READ_AT_MOST = 1 << 20
# Downloads wait on the network, not the CPU: with 50-100 ms per request, 32
# transfers in flight keep a link busy where 8-10 leave it idle most of the time.
DEFAULT_WORKERS = 32

_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/png": ".png", "image/tiff": ".tif",
    "image/gif": ".gif", "image/bmp": ".bmp", "image/webp": ".webp",
}


#: every extension a downloaded file can get (the "already done" check looks for exactly these)
EXTENSIONS = tuple(dict.fromkeys([*_EXTENSIONS.values(), ".bin"]))


def extension_for(content_type: str | None) -> str:
    """File extension for a Content-Type (``.bin`` when unknown)."""
    base = (content_type or "").split(";")[0].strip().lower()
    return _EXTENSIONS.get(base, ".bin")


@dataclass
class Job:
    """One file to fetch.

    Attributes
    ----------
    key : str
        What the caller calls it (an image id); used in the result.
    endpoint : str
        API endpoint or absolute URL of the bytes.
    destination : callable
        Content type → final path (the extension may depend on it).
    part : Path
        Where the partial transfer lives (same folder as the destination).
    size : int, optional
        Size the API announced, checked after the transfer.
    renew : callable, optional
        A fresh URL for the file, for when a pre-signed one has expired
        (the storage host answers 403).
    """

    key: str
    endpoint: str
    destination: Callable[[str], Path]
    part: Path
    size: int | None = None
    #: cross-process lock file (default: next to the part file)
    lock: Path | None = None
    renew: Callable[[], str] | None = None
    #: called with (final path, SHA-256 hex digest) just before the file is moved into place
    on_digest: Callable[[Path, str], None] | None = None
    #: the SHA-256 of the file, set once it is complete (computed as the bytes stream in)
    sha256: str | None = None
    #: readable by its owner only (0600): a signed-in session's cache may hold private images
    private: bool = False


@dataclass
class DownloadResult:
    """What a bulk download did."""

    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    #: SHA-256 (hex) of every file this run fetched, computed while its bytes streamed in
    sha256: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0
    #: ids or names the archive did not know (withdrawn, or not visible), left out by ``missing="skip"``
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No transfer failed (ids left out as :attr:`missing` do not count: they were asked to be skipped)."""
        return not self.failed

    def raise_for_failures(self) -> None:
        """Raise one :class:`ArchiveUnavailableError` listing every failure."""
        if self.failed:
            listed = "; ".join(f"{k}: {v}" for k, v in list(self.failed.items())[:10])
            more = f" (and {len(self.failed) - 10} more)" if len(self.failed) > 10 else ""
            raise ArchiveUnavailableError(f"{len(self.failed)} of {self.total} downloads failed: {listed}{more}")

    @property
    def total(self) -> int:
        return len(self.downloaded) + len(self.skipped) + len(self.failed)

    def __repr__(self) -> str:
        rate = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        missing = f", missing={len(self.missing)}" if self.missing else ""
        return (f"DownloadResult(downloaded={len(self.downloaded)}, skipped={len(self.skipped)}, "
                f"failed={len(self.failed)}{missing}, bytes={self.bytes}, seconds={self.seconds:.2f}, "
                f"MB/s={rate:.1f})")


#: slowest transfer rate a download's deadline allows for (bytes per second, on top of the
#: transport's deadline): a 20 MB image may take more than 3 minutes before it is given up
MIN_TRANSFER_RATE = 100_000
#: how much larger than its encoded length a file may be when the server compresses it on the way
#: although identity was asked for: images hardly compress, so a little (a share, at least 64 KiB)
_ENCODED_MARGIN = (8, 64 * 1024)
#: most a file of no announced size at all may grow to
MAX_FILE_BYTES = 2 * 1024**3
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _total_size(response: requests.Response) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() and not _encoded(response) else None


def _encoded(response: requests.Response) -> bool:
    return response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")


def _range_start(response: requests.Response) -> int | None:
    """Where a 206 answer's bytes start (None: no usable Content-Range)."""
    match = _RANGE.match(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _limit(job: Job, response: requests.Response, have: int) -> int:
    """Most bytes this answer may add to the part file before the transfer is cut off."""
    announced = job.size if job.size is not None else _total_size(response)
    if announced is not None:
        return max(0, announced - have)
    length = response.headers.get("Content-Length", "")
    if length.isdigit():  # compressed on the way: the announced length plus a small margin
        share, least = _ENCODED_MARGIN
        return int(length) + max(int(length) // share, least)
    return MAX_FILE_BYTES


class _TooLong(Exception):
    pass


def _open_part(job: Job, append: bool) -> Any:
    """The part file for writing; created 0600 (and kept so) for a private job."""
    if not job.private:
        return open(job.part, "ab" if append else "wb")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_BINARY", 0)
    handle = os.open(job.part, flags, 0o600)
    if hasattr(os, "fchmod"):
        with contextlib.suppress(OSError):
            os.fchmod(handle, 0o600)  # a part file left by an earlier run
    return os.fdopen(handle, "ab" if append else "wb")


def fetch_file(transport: Transport, job: Job, on_bytes: Callable[[int], None] | None = None) -> tuple[Path, int]:
    """Fetch one file with resume; returns (final path, bytes transferred).

    The bytes go to a partial file of this writer's own (see
    :func:`isicarchive.locking.adopt_partial`), which starts from what an
    interrupted transfer left under ``job.part``.

    Raises
    ------
    ArchiveUnavailableError
        When the transfer keeps failing after the policy's retries (the part
        file stays for a later resume).
    """
    shared = job.part
    shared.parent.mkdir(parents=True, exist_ok=True)
    job.part = adopt_partial(shared)  # no second writer can interleave bytes with these, whatever flock does
    try:
        return _fetch(transport, job, on_bytes)
    finally:
        release_partial(job.part, shared)  # what an interrupted transfer got waits there for the next attempt
        job.part = shared


def _fetch(transport: Transport, job: Job, on_bytes: Callable[[int], None] | None) -> tuple[Path, int]:
    attempts = transport.policy.body_retries + 1
    transferred = 0
    last_problem = "no attempt"
    job.part.parent.mkdir(parents=True, exist_ok=True)
    renewed = False
    attempt = 0
    while attempt < attempts:
        attempt += 1
        have = job.part.stat().st_size if job.part.exists() else 0
        # the file's own bytes: a compressed transfer's length says nothing of the file's size
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            response = transport.stream(job.endpoint, headers=headers,
                                        deadline=transport.deadline + (job.size or 0) / MIN_TRANSFER_RATE)
        except AuthenticationError:
            if job.renew is None or renewed:
                raise
            # a pre-signed URL (from a cached record, or a long queue) has expired: ask for a new one
            job.endpoint = job.renew()
            renewed = True
            attempt -= 1  # not a failed transfer
            continue
        except IsicError as exc:
            if exc.status != 416 or not have:
                raise
            # nothing lies beyond the part file: it may be whole (a run killed just before the
            # rename), or longer than the file; the file's own size tells which
            finished = _finish_whole_part(transport, job, have)
            if finished is not None:
                return finished, transferred
            job.part.unlink(missing_ok=True)
            last_problem = "stale partial file"
            continue
        with contextlib.closing(response):
            if have and response.status_code != 206:
                have = 0  # the server ignored Range: start from scratch
            elif have and _range_start(response) != have:
                # bytes from somewhere else in the file: appended, they would make a corrupt file
                last_problem = f"the server answered the resume at byte {have} with Content-Range " \
                               f"{response.headers.get('Content-Range', '(none)')!r}"
                job.part.unlink(missing_ok=True)
                continue
            total = _total_size(response)
            content_type = response.headers.get("Content-Type", "")
            limit = _limit(job, response, have)
            written = 0
            # the digest grows with the bytes as they arrive: no second read of the file (only a
            # resumed transfer reads back the part it kept, once)
            digest = _digest_of_part(job.part, have)
            try:
                with _open_part(job, append=bool(have)) as fh:
                    for chunk in body_chunks(response, READ_AT_MOST):
                        written += len(chunk)
                        if written > limit:
                            raise _TooLong()
                        digest.update(chunk)
                        fh.write(chunk)
                        transferred += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                # No fsync: os.replace already makes the file appear whole to every
                # process, and after a power loss a damaged file fails the size or
                # decode check on read and is fetched again; syncing each image
                # would cost more than the transfer.
            except _TooLong:
                job.part.unlink(missing_ok=True)
                raise ArchiveUnavailableError(f"download of {job.key}: the server sent more than the {limit + have} "
                                              "bytes the file can have; stopped and discarded") from None
            except (requests.exceptions.RequestException, ConnectionError) as exc:
                if deadline_of(response).expired:
                    why = deadline_of(response).why or f"not complete within {deadline_of(response).seconds:g} s"
                    raise ArchiveUnavailableError(f"download of {job.key}: {why}") from None
                last_problem = f"transfer interrupted ({type(exc).__name__})"
                time.sleep(transport.policy.delay(attempt))
                continue
            except OSError as exc:
                from .errors import CacheError

                with contextlib.suppress(OSError):
                    job.part.unlink()
                raise CacheError(f"cannot write {job.part.parent}: {exc.strerror or exc}") from exc
        size = job.part.stat().st_size
        expected = job.size if job.size is not None else total
        if expected is not None and size != expected:
            last_problem = f"size {size} where {expected} bytes were expected"
            if size > expected:
                job.part.unlink(missing_ok=True)
            time.sleep(transport.policy.delay(attempt))
            continue
        mismatch = _content_mismatch(job.part, content_type)
        if mismatch:
            job.part.unlink(missing_ok=True)
            raise ArchiveUnavailableError(f"download of {job.key}: {mismatch}")
        final = job.destination(content_type)
        _place(job, final, digest.hexdigest())
        return final, transferred
    raise ArchiveUnavailableError(f"download of {job.key} failed after {attempts} attempts: {last_problem}")


def body_chunks(response: requests.Response, at_most: int) -> Iterator[bytes]:
    """The body of a streamed answer as it arrives: pieces of up to ``at_most`` bytes, each what one read
    found waiting (decoded if the server compressed it), with urllib3's errors raised as requests raises
    them from ``iter_content``."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # not urllib3's response: requests' own iteration
        yield from response.iter_content(min(at_most, CHUNK))
        return
    try:
        while chunk := raw.read1(at_most, decode_content=True):
            yield chunk
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


#: how files of the image types the archive serves begin
_SIGNATURES = {
    "image/jpeg": (b"\xff\xd8\xff",), "image/jpg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/tiff": (b"II*\x00", b"MM\x00*"), "image/gif": (b"GIF87a", b"GIF89a"), "image/bmp": (b"BM",),
    "image/webp": (b"RIFF",),
}


def sniffed_type(start: bytes) -> str | None:
    """The image type bytes begin as (None: none the archive serves)."""
    return next((kind for kind, signatures in _SIGNATURES.items() if start.startswith(signatures)), None)


def looks_like_html(start: bytes) -> bool:
    """Whether bytes sent as an image are a web page (a portal's, a proxy's, an error page)."""
    return start[:200].lstrip().lower().startswith((b"<!doc", b"<html"))


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(16)


def _content_mismatch(path: Path, content_type: str) -> str | None:
    """Why the bytes are not the image the server said they are (None: they look right)."""
    kind = content_type.split(";")[0].strip().lower()
    signatures = _SIGNATURES.get(kind)
    if signatures is None:
        return None
    start = _head(path)
    if start.startswith(signatures):
        return None
    looks = "an HTML page" if looks_like_html(start) else "something else"
    return f"the server announced {kind} but sent {looks}; discarded"


def _finish_whole_part(transport: Transport, job: Job, have: int) -> Path | None:
    """Put a part file in place if it already holds the whole file.

    The size comes from HEAD, or from the API's announcement when HEAD is
    refused (pre-signed URLs are signed for GET only); the type from HEAD or
    the file's first bytes.
    """
    if job.size is not None and have != job.size:
        return None
    content_type: str | None = None
    try:
        head = transport.request("HEAD", job.endpoint)
    except IsicError:
        if job.size is None:
            return None
    else:
        length = head.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) != have:
            return None
        content_type = head.headers.get("Content-Type")
    content_type = content_type or sniffed_type(_head(job.part))
    if content_type is None:
        return None
    final = job.destination(content_type)
    _place(job, final, _digest_of_part(job.part, have).hexdigest())
    return final


def _digest_of_part(part: Path, have: int) -> Any:
    """A SHA-256 that has seen the first ``have`` bytes of a part file kept from an earlier attempt."""
    digest = hashlib.sha256()
    if have:
        with open(part, "rb") as fh:
            while have > 0 and (block := fh.read(min(CHUNK, have))):
                digest.update(block)
                have -= len(block)
    return digest


def _place(job: Job, final: Path, sha256: str) -> None:
    """Record the digest (its keeper writes it before the file appears), then move the file into place."""
    job.sha256 = sha256
    if job.on_digest is not None:
        job.on_digest(final, sha256)
    os.replace(job.part, final)


def jobs_for(records: Iterable[dict], make: Callable[[dict], Job]) -> tuple[list[Job], dict[str, str]]:
    """One job per image of ``records`` (a repeated image once), and the records no job can be made
    for (an id that cannot be a file name or an address), each with the reason: they become failed
    items of the download rather than stopping it."""
    jobs: list[Job] = []
    unusable: dict[str, str] = {}
    keys: set[str] = set()
    for record in records:
        key = record_id(record) if isinstance(record, dict) else repr(record)[:60]
        if key in keys:
            continue
        keys.add(key)
        try:
            jobs.append(make(record))
        except (IsicError, KeyError, TypeError, ValueError, OSError) as exc:
            unusable[key] = f"unusable record: {exc}"
    return jobs, unusable


class _Stopped(Exception):
    """The download was interrupted: a transfer in flight ends at its next chunk."""


#: how long an interrupted download waits for its transfers in flight to reach their next chunk
STOP_GRACE = 0.3


def _run_interruptibly(jobs: list[Job], work: Callable[[Job], tuple[Path, bool]],
                       finished: Callable[[Job, tuple[Path, bool] | None, BaseException | None], None],
                       stop: threading.Event, workers: int) -> None:
    """Run ``work`` on every job on daemon threads; ``finished`` reports each, on the calling thread.

    Ctrl-C (or any exception on the calling thread) sets ``stop``: queued jobs
    never start, transfers in flight end at their next chunk (their part
    files stay, so a second run resumes them), and the interrupt is re-raised
    after at most :data:`STOP_GRACE` seconds.  Daemon threads, unlike a
    ``ThreadPoolExecutor``'s, are not joined when the interpreter exits, so a
    transfer blocked on a silent server cannot hold the process open.
    """
    if not jobs:
        return
    pending = collections.deque(jobs)
    pending_lock = threading.Lock()
    outcomes: queue.SimpleQueue[tuple[Job, tuple[Path, bool] | None, BaseException | None]] = queue.SimpleQueue()

    def worker() -> None:
        while not stop.is_set():
            with pending_lock:
                if not pending:
                    return
                job = pending.popleft()
            try:
                outcomes.put((job, work(job), None))
            except BaseException as exc:  # reported on the calling thread, which decides
                outcomes.put((job, None, exc))

    threads = [threading.Thread(target=worker, name=f"isic-download-{n}", daemon=True)
               for n in range(min(workers, len(jobs)))]
    for thread in threads:
        thread.start()
    try:
        for _ in range(len(jobs)):
            while True:
                try:  # a short timeout: the calling thread stays responsive to Ctrl-C
                    job, outcome, error = outcomes.get(timeout=0.1)
                    break
                except queue.Empty:
                    continue
            finished(job, outcome, None if isinstance(error, _Stopped) else error)
    except BaseException:
        stop.set()
        with pending_lock:
            pending.clear()  # queued transfers are cancelled
        deadline = time.monotonic() + STOP_GRACE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        raise


class Downloader:
    """Runs many :class:`Job` s on a thread pool.

    Parameters
    ----------
    transport : Transport
        The session's transport (its connection pool and back-off are shared).
    workers : int
        Parallel transfers.
    progress : bool
        Show a progress bar (files, bytes, rate, ETA).
    """

    def __init__(self, transport: Transport, workers: int = DEFAULT_WORKERS, progress: bool = True) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise QueryError(f"workers must be a whole number of at least 1, not {workers!r}")
        self.transport = transport
        self.workers = workers
        self.progress = progress
        self._claimed: set[Path] = set()
        self._claim_lock = threading.Lock()

    def run(self, jobs: Iterable[Job], done: Callable[[Job], Path | None] | None = None,
            desc: str = "Downloading", done_before: Callable[[Job], Path | None] | None = None) -> DownloadResult:
        """Fetch every job; ``done(job)`` returns the path of a file already complete (skipped).

        ``done`` is asked again under each file's lock (another process may have fetched it meanwhile);
        ``done_before``, if given, answers the first question, asked of every job before any transfer
        starts (e.g. from one listing of the folder rather than a look-up per file and extension).
        """
        started = time.monotonic()
        result = DownloadResult()
        todo: list[Job] = []
        first_check = done_before or done
        for job in jobs:
            try:
                existing = first_check(job) if first_check else None
            except OSError as exc:  # a name the file system refuses
                result.failed[job.key] = f"cannot check {job.part.parent}: {exc.strerror or exc}"
                continue
            if existing is not None:
                result.skipped.append(job.key)
                result.paths[job.key] = existing
            elif self._claim(job.part):
                todo.append(job)
            else:
                result.failed[job.key] = "another file of this download has the same name"
        lock = threading.Lock()
        bar = _progress(len(todo), desc, unit="file", enabled=self.progress and bool(todo))
        received = [0]

        stop = threading.Event()

        def on_bytes(n: int) -> None:
            if stop.is_set():  # interrupted: the transfer ends at this chunk, its part file kept for a resume
                raise _Stopped()
            with lock:
                received[0] += n

        def one(job: Job) -> tuple[Path, bool]:
            # another process sharing the folder may be fetching the same file
            with file_lock(job.lock or job.part.with_name(job.part.name + ".lock"), what=job.key):
                existing = done(job) if done else None
                if existing is not None:
                    return existing, False
                return fetch_file(self.transport, job, on_bytes)[0], True

        def finished(job: Job, outcome: tuple[Path, bool] | None, error: BaseException | None) -> None:
            try:
                if isinstance(error, IsicError):
                    result.failed[job.key] = str(error)
                elif isinstance(error, OSError):  # the file system refused a name or a write
                    result.failed[job.key] = f"cannot write {job.part.name}: {error.strerror or error}"
                elif error is not None:
                    raise error
                elif outcome is not None:
                    path, fetched = outcome
                    (result.downloaded if fetched else result.skipped).append(job.key)
                    result.paths[job.key] = path
                    if fetched and job.sha256 is not None:
                        result.sha256[job.key] = job.sha256
            finally:
                self._release(job.part)
            bar.update(1)
            bar.set_postfix_str(f"{received[0] / 1e6:.1f} MB", refresh=False)

        try:
            _run_interruptibly(todo, one, finished, stop, self.workers)
        finally:
            bar.close()
        result.bytes = received[0]
        result.seconds = time.monotonic() - started
        return result

    def _claim(self, part: Path) -> bool:
        """One worker per destination: a second job for the same file is dropped."""
        with self._claim_lock:
            if part in self._claimed:
                return False
            self._claimed.add(part)
            return True

    def _release(self, part: Path) -> None:
        with self._claim_lock:
            self._claimed.discard(part)
