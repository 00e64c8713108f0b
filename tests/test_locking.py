"""One file-lock helper: a bounded wait with a clear error, and partial files no two writers share."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from isicarchive import CacheError, locking
from isicarchive.cache import Cache
from isicarchive.locking import adopt_partial, file_lock, release_partial


@contextmanager
def _held_by_another_thread(take: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
    """Within the block, a thread of this process holds the lock ``take()`` acquires."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with take():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        yield
    finally:
        release.set()
        holder.join()


def _held_by_another_process(lock: Path) -> subprocess.Popen:
    """A child process that takes ``lock`` and keeps it until killed."""
    script = textwrap.dedent(f"""
        import sys, time, filelock
        lock = filelock.FileLock({str(lock)!r})
        lock.acquire()
        print("held", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_lock_held_by_another_process_times_out_with_a_clear_cache_error(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / "image.part.lock"
    monkeypatch.setattr(locking, "LOG_EVERY", 0.2)
    child = _held_by_another_process(lock)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="isicarchive"), pytest.raises(CacheError) as caught:
            with file_lock(lock, timeout=0.7, what="ISIC_0000001"):
                pytest.fail("the lock was granted while another process held it")
        waited = time.monotonic() - started
    finally:
        child.kill()
        child.wait()
    assert 0.7 <= waited < 5
    message = str(caught.value)
    assert str(lock) in message and "ISIC_0000001" in message and "0.7 s" in message
    assert "ISICARCHIVE_LOCK_TIMEOUT" in message
    still = [r.getMessage() for r in caplog.records if "still waiting for ISIC_0000001" in r.getMessage()]
    assert 2 <= len(still) <= 4  # one line per 0.2 s of waiting
    with file_lock(lock, timeout=5):  # the holder is gone: granted at once (flock dies with its process)
        pass


def test_the_cache_lock_times_out_after_the_configured_seconds(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache", "http://127.0.0.1:1/api/v1")
    target = cache.root / "0" / "imcache_x.json.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    with _held_by_another_thread(lambda: cache.lock(target)):
        monkeypatch.setenv("ISICARCHIVE_LOCK_TIMEOUT", "0.3")
        with pytest.raises(CacheError, match=r"imcache_x\.json\.gz.*imcache_x\.json\.gz\.lock.*within 0\.3 s"):
            with cache.lock(target):
                pass
    monkeypatch.setenv("ISICARCHIVE_LOCK_TIMEOUT", "ten minutes")
    with pytest.raises(CacheError, match="ISICARCHIVE_LOCK_TIMEOUT must be a number"):
        with cache.lock(target):
            pass


def test_two_writers_never_share_a_partial_file(tmp_path: Path) -> None:
    # where flock locks nothing, both writers get past the lock: only one may get the kept bytes
    part = tmp_path / ".ISIC_0000001.jpg.part"
    part.write_bytes(b"x" * 100)
    first, second = adopt_partial(part), adopt_partial(part)
    assert first != second and not part.exists()
    assert first.read_bytes() == b"x" * 100 and not second.exists()
    assert first.name.startswith(".ISIC_0000001.jpg.") and first.name.endswith(".part")
    with open(second, "wb") as fh:  # the second starts afresh, in its own file
        fh.write(b"y" * 10)
    release_partial(first, part)  # interrupted: its bytes wait under the shared name
    release_partial(second, part)  # the second's fewer bytes do not replace them
    assert part.read_bytes() == b"x" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [part.name]


def test_a_killed_writers_own_partial_file_is_adopted_and_a_live_ones_is_not(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    host = locking._HOST
    part = tmp_path / ".image_abc.part"
    dead = tmp_path / f".image_abc.{host}.{dead_pid}.0badc0de.part"
    dead.write_bytes(b"d" * 50)
    smaller = tmp_path / f".image_abc.{host}.{dead_pid}.0badc0df.part"
    smaller.write_bytes(b"s" * 5)
    live = tmp_path / f".image_abc.{host}.{os.getppid()}.0badc0e0.part"  # a writer still running
    live.write_bytes(b"l" * 70)
    locking._listings.clear()
    own = adopt_partial(part)
    assert own.read_bytes() == b"d" * 50  # the largest a gone writer left
    assert not dead.exists() and not smaller.exists() and live.read_bytes() == b"l" * 70


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_without_flock_the_lock_falls_back_to_filelock_and_still_excludes(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # a file system without flock (ENOSYS) takes the lock through filelock instead of failing
    import errno
    import fcntl

    class NoFlock:
        LOCK_EX, LOCK_NB, LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_NB, fcntl.LOCK_UN

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            raise OSError(errno.ENOSYS, "flock not supported")

    monkeypatch.setattr(locking, "fcntl", NoFlock)
    lock = tmp_path / "image.part.lock"
    with _held_by_another_thread(lambda: file_lock(lock)):
        with pytest.raises(CacheError, match="within 0.3 s"):
            with file_lock(lock, timeout=0.3):
                pytest.fail("granted while another thread held it")
    with file_lock(lock, timeout=5):
        pass
