"""One way to lock a file across processes, and partial files no two writers can share.

Every cross-process lock of the library goes through :func:`file_lock`: the
cache's (:meth:`isicarchive.cache.Cache.lock`: image cache, annotation files,
single image fetches) and the download engine's (one lock per file, so two
processes sharing a cache or a target folder never fetch the same file twice).
It waits at most ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`, 10
minutes, or ``ISICARCHIVE_LOCK_TIMEOUT`` in the environment), logs a line on
the ``isicarchive`` logger every :data:`LOG_EVERY` seconds while it waits
("still waiting for …", as huggingface_hub does), and then raises
:class:`~isicarchive.errors.CacheError` naming the lock file.

Locks are ``flock`` locks (taken directly where the system has them, else through
:mod:`filelock`), which the kernel drops when a process dies: a killed run leaves no
lock behind.  Some network file systems
(NFS and Lustre mounts without lock support) let ``flock`` succeed without
locking anything; two processes would then write into one ``.part`` file and
interleave their bytes.  So a transfer never writes into the shared partial
file itself: :func:`adopt_partial` moves it (an atomic rename, which only one
process can win) to a name of the writer's own,
``<name>.<host>.<pid>.<random>.part``, and :func:`release_partial` moves what
is left back after an interrupted transfer, so the next attempt resumes it.
A partial file a killed process left under its own name is adopted by the next
writer on the same machine once that process is gone (or on any machine once
it has not changed for :data:`STALE_PARTIAL_SECONDS`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import CacheError

try:
    import fcntl
except ImportError:  # Windows: filelock's msvcrt lock
    fcntl = None  # type: ignore[assignment]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

__all__ = ["DEFAULT_TIMEOUT", "LOG_EVERY", "STALE_PARTIAL_SECONDS", "adopt_partial", "file_lock",
           "lock_timeout", "own_partial", "release_partial"]

log = logging.getLogger("isicarchive")

#: seconds a lock is waited for unless the caller or ``ISICARCHIVE_LOCK_TIMEOUT`` says otherwise
DEFAULT_TIMEOUT = 600.0
#: seconds between two "still waiting" log lines
LOG_EVERY = 10.0
#: a partial file of another machine's writer that has not grown for this long is abandoned
STALE_PARTIAL_SECONDS = 3600.0


def lock_timeout(timeout: float | None = None) -> float:
    """``timeout`` if given, else ``ISICARCHIVE_LOCK_TIMEOUT`` (seconds), else :data:`DEFAULT_TIMEOUT`."""
    if timeout is not None:
        return float(timeout)
    text = os.environ.get("ISICARCHIVE_LOCK_TIMEOUT", "").strip()
    try:
        return float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise CacheError(f"ISICARCHIVE_LOCK_TIMEOUT must be a number of seconds, not {text!r}") from None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, timeout: float | None = None, what: str | None = None
              ) -> Iterator[None]:
    """Hold the cross-process lock file ``path`` while the block runs.

    Parameters
    ----------
    path : path
        The lock file (created if missing; its folder must exist).
    timeout : float, optional
        Seconds to wait; default :func:`lock_timeout`.
    what : str, optional
        What the lock guards, for the log lines and the error (default: the lock file's name).

    Raises
    ------
    CacheError
        The lock was not granted within ``timeout`` seconds; the message names the lock file.
    """
    lock_path = Path(path)
    seconds = lock_timeout(timeout)
    waiting = _Waiting(lock_path, seconds, what)
    fd = _flock(os.fspath(path), waiting) if fcntl is not None else None
    if fd is not None:
        try:
            yield
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return
    # no flock here (Windows, or a file system without it): filelock's own ways (msvcrt, a marker file)
    import filelock

    lock = filelock.FileLock(str(lock_path))
    while True:
        try:
            lock.acquire(timeout=max(0.0, min(LOG_EVERY, waiting.remaining())))
            break
        except filelock.Timeout:
            waiting.waited()
    try:
        yield
    finally:
        lock.release()


class _Waiting:
    """The bounded wait for one lock: a log line every :data:`LOG_EVERY` seconds, then :class:`CacheError`."""

    def __init__(self, lock_path: Path, seconds: float, what: str | None) -> None:
        self.lock_path, self.seconds, self.what = lock_path, seconds, what or lock_path.name
        self.started = time.monotonic()
        self._next_line = self.started + LOG_EVERY

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def waited(self) -> None:
        """After a try that failed: raise once the time is up, log a line when one is due."""
        now = time.monotonic()
        if now - self.started >= self.seconds:
            raise CacheError(
                f"timed out waiting for another process to finish {self.what}: the lock {self.lock_path} was not "
                f"granted within {self.seconds:g} s. If that process hangs, stop it; a slow one may need a longer "
                "ISICARCHIVE_LOCK_TIMEOUT") from None
        if now >= self._next_line:
            self._next_line = now + LOG_EVERY
            log.info("still waiting for %s (the lock %s, held elsewhere; %.0f s so far)", self.what, self.lock_path,
                     now - self.started)


#: errors of a non-blocking flock that mean "held by someone else" (some file systems say EACCES)
_HELD = frozenset({errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK})
#: longest pause between two tries of a lock held elsewhere
_POLL_AT_MOST = 0.05


def _flock(path: str, waiting: _Waiting) -> int | None:
    """The descriptor of ``path`` holding its ``flock``, or None where this file system has no flock.

    The same kernel lock :mod:`filelock` takes on POSIX (so processes running either exclude each
    other), taken directly: filelock's bookkeeping (reentrancy, thread and fork registries, fallback
    markers) cost 0.5-0.7 ms per lock, more than a download's other work per file, and the library
    needs none of it here (each call opens the file afresh, and a lock is never taken twice by one
    block).  A lock file unlinked while it was waited for (a cleaner of temporary folders) is opened
    again, since a lock on an unlinked file excludes nobody.
    """
    pause = 0.001
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        except PermissionError:  # another account's lock file: a lock needs only read access
            try:
                fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
            except OSError:
                return None
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _HELD:
                return None  # no flock on this file system
        else:
            if os.fstat(fd).st_nlink > 0:
                return fd
            os.close(fd)  # unlinked meanwhile: the next open makes a file the others will see
        waiting.waited()
        time.sleep(min(pause, max(0.0, waiting.remaining())))
        pause = min(pause * 2, _POLL_AT_MOST)


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
_OWN = re.compile(r"(.+)\.([A-Za-z0-9-]+)\.(\d+)\.[0-9a-f]{8}\.part")
#: seconds a folder's list of partial files of other writers is reused (listing a folder of 400,000
#: images for every file would make a bulk download quadratic)
_LISTING_SECONDS = 300.0
_listings: dict[Path, tuple[float, dict[str, list[str]]]] = {}
_listings_lock = threading.Lock()


def _stem(part: Path) -> str:
    return part.name[:-len(".part")] if part.name.endswith(".part") else part.name


def _own_name(part: Path) -> Path:
    return part.with_name(f"{_stem(part)}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.part")


def own_partial(part: Path) -> Path:
    """A fresh partial file name of this writer's own for the shared name ``part`` (nothing adopted):
    for a writer that starts from nothing and must not share its file with another."""
    return _own_name(part)


def _others(folder: Path) -> dict[str, list[str]]:
    """Shared partial name's stem → the partial files of writers' own names in ``folder`` (listed once a while)."""
    now = time.monotonic()
    with _listings_lock:
        listed = _listings.get(folder)
        if listed is not None and now - listed[0] < _LISTING_SECONDS:
            return listed[1]
        found: dict[str, list[str]] = {}
        with contextlib.suppress(OSError):
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = _OWN.fullmatch(entry.name)
                    if match is not None:
                        found.setdefault(match.group(1), []).append(entry.name)
        _listings[folder] = (now, found)
        return found


def _orphans(part: Path) -> list[Path]:
    """Partial files of earlier writers of ``part`` that are gone (this machine) or long silent (others)."""
    found = []
    for name in list(_others(part.parent).get(_stem(part), ())):
        match = _OWN.fullmatch(name)
        assert match is not None
        candidate = part.with_name(name)
        try:
            silent = time.time() - candidate.stat().st_mtime
        except OSError:
            continue
        if (match.group(2) == _HOST and not _alive(int(match.group(3)))) or silent > STALE_PARTIAL_SECONDS:
            found.append(candidate)
    return found


def _forget(path: Path) -> None:
    match = _OWN.fullmatch(path.name)
    with _listings_lock:
        listed = _listings.get(path.parent)
        names = listed[1].get(match.group(1), []) if listed and match else []
        if path.name in names:
            names.remove(path.name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier attempt of this process, already over (attempts do not overlap under the lock)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def adopt_partial(part: Path) -> Path:
    """A partial file of this writer's own for the shared partial name ``part``, holding what an
    earlier, interrupted transfer left (under ``part``, or under the own name of a writer that is gone).

    Call it while holding the lock of ``part``; the rename is atomic, so even where the lock locks
    nothing only one writer gets the bytes.  Pair with :func:`release_partial`.
    """
    own = _own_name(part)
    orphans = sorted(_orphans(part), key=_size, reverse=True)
    for candidate in [part, *orphans]:
        try:
            os.rename(candidate, own)
        except FileNotFoundError:
            continue  # none there, or another writer took it first
        except OSError as exc:
            log.info("could not take over the partial file %s (%s)", candidate, exc)
            continue
        break
    for orphan in orphans:  # the leftovers of writers that are gone: adopted above, or not worth keeping
        _forget(orphan)
        with contextlib.suppress(OSError):
            orphan.unlink()
    return own


def release_partial(own: Path, part: Path) -> None:
    """Put what is left of this writer's partial file back under the shared name ``part``, for the
    next attempt to resume (nothing to do when the transfer finished or discarded its bytes; a larger
    partial file already there is kept)."""
    try:
        size = own.stat().st_size
    except FileNotFoundError:
        return
    try:
        kept = part.stat().st_size
    except FileNotFoundError:
        kept = -1
    if size == 0 or size <= kept:
        own.unlink(missing_ok=True)
    else:
        os.replace(own, part)
