"""Crash safety (SIGKILL mid-operation), corruption, full and read-only disks."""

from __future__ import annotations

import contextlib
import errno
import glob
import gzip
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import pytest
from forked import fork_alone
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import CacheError, IsicApi
from isicarchive.cache import IMCACHE_ID, CacheCorruptionWarning
from isicarchive.testing import ArchiveConfig, LocalArchive


def verify_every_file(folder: Path) -> int:
    """Decode every cache file; returns how many; fails on any truncated or half-written one."""
    checked = 0
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.endswith((".lock", ".part")) or path.name.startswith(".isicarchive"):
            continue
        assert not path.name.endswith(".tmp"), f"temporary file left: {path}"
        if path.name.endswith(".json.gz"):
            json.loads(gzip.decompress(path.read_bytes()))
        elif path.suffix in (".jpg", ".png"):
            iio.imread(path)
        elif path.suffix == ".npz":
            import numpy as np

            np.load(path)["idx"]
        checked += 1
    return checked


def kill_midway(work: Callable[[], object], watch: Path, pattern: str, minimum: int = 1, timeout: float = 60) -> None:
    """Run ``work`` in a child and SIGKILL it once ``minimum`` files match ``pattern`` under ``watch``.

    The child is forked (a fresh interpreter importing the package cost 0.4 s of CPU a run, and what is tested
    is the files a killed process leaves): it starts with this thread alone, and makes its own session.
    """
    pid = fork_alone()
    if pid == 0:
        try:
            os.setsid()
            work()
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            if len(list(watch.glob(pattern))) >= minimum:
                break
            time.sleep(0.005)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


@pytest.fixture(scope="module")
def slow_server() -> LocalArchive:
    config = ArchiveConfig(images=1500, image_size=(64, 48), image_bytes=(200_000, 400_000), study_images=6)
    with LocalArchive(seed=41, config=config, latency=0.003) as server:
        yield server


def test_sigkill_during_cache_images_then_rerun(slow_server: LocalArchive, tmp_path: Path) -> None:
    def sync_again_and_again() -> None:
        from isicarchive.backends import v1

        v1.IMAGE_PAGE = 100  # many small pages, so that the kill lands mid-way (the child's module alone)
        api = IsicApi(hostname=slow_server.url, api_version=1, cache_folder=tmp_path, progress=False)
        for _ in range(50):
            api.image_cache = {}
            api.cache_images()

    kill_midway(sync_again_and_again, tmp_path / "0", "imcache_*.json.gz")
    verify_every_file(tmp_path)
    api = IsicApi(hostname=slow_server.url, api_version=1, cache_folder=tmp_path, progress=False)
    assert len(api.cache_images()) == len(slow_server.data.visible_images(None))
    assert verify_every_file(tmp_path) >= 1
    record("crash safety", "cache_images", "child SIGKILLed mid-sync, then rerun",
           "rerun completes; every file decodes; no temporary file left")


def _partial_bytes(part: Path) -> int:
    """Bytes a killed run left of a file: under the shared partial name, or the killed writer's own
    (``<name>.<host>.<pid>.<random>.part``, which the next run adopts; the largest is kept)."""
    stem = part.name[:-len(".part")]
    return max((p.stat().st_size for p in part.parent.glob(glob.escape(stem) + "*.part")), default=0)


def test_sigkill_during_bulk_download_then_rerun(slow_server: LocalArchive, tmp_path: Path) -> None:
    names = [im["name"] for im in slow_server.data.visible_images(None)[:60]]
    def download() -> None:
        IsicApi(hostname=slow_server.url, api_version=1, cache_folder=tmp_path, progress=False,
                workers=4).download_images(names)

    kill_midway(download, tmp_path, "?/image_*.jpg", minimum=10)
    complete_before = len(list(tmp_path.glob("?/image_*.jpg")))
    assert 0 < complete_before < len(names)
    verify_every_file(tmp_path)
    api = IsicApi(hostname=slow_server.url, api_version=1, cache_folder=tmp_path, progress=False)
    ids = [slow_server.data.images_by_name[name]["_id"] for name in names]
    kept = {i: api.context.store._image_job(slow_server.data.images_by_id[i]).part for i in ids}
    kept_bytes = {i: size for i, part in kept.items() if (size := _partial_bytes(part))}
    rerun_started = time.monotonic()  # what the killed child had in flight may still be logged later
    result = api.download_images(names)
    assert result.ok and len(result.skipped) >= complete_before
    fetched = [r for r in slow_server.requests(r"/download$", method="GET") if r.started >= rerun_started]
    with_body = [r.path for r in fetched if r.bytes_sent]
    assert len(with_body) == len(set(with_body))  # no file transferred twice
    needed = sum(slow_server.data.image_file_size(i) - kept_bytes.get(i, 0) for i in ids if i not in result.skipped)
    assert sum(r.bytes_sent for r in fetched) == needed  # not one byte that was on disk is sent again
    assert verify_every_file(tmp_path) >= len(names)
    assert not list(tmp_path.glob("?/.*.part"))
    record("crash safety", "bulk download", "child SIGKILLed mid-download, then rerun",
           f"{complete_before} complete files kept and skipped; the rest fetched without resending a byte "
           "already on disk; every file decodes")


def test_corrupt_study_annotations_file_is_refetched(tmp_path: Path) -> None:
    with LocalArchive(seed=8) as server:
        api = IsicApi(hostname=server.url, api_version=1, cache_folder=tmp_path, progress=False)
        study = api.study("ISIC Annotation Study 0")
        expected = sorted((a.id, sorted(a.features)) for a in study.load_annotations())
        stann = tmp_path / study.id[-1] / f"stann_{study.id}.json.gz"
        stann.write_bytes(stann.read_bytes()[:30])
        again = IsicApi(hostname=server.url, api_version=1, cache_folder=tmp_path, progress=False).study(study.id)
        with pytest.warns(CacheCorruptionWarning) as caught:
            got = sorted((a.id, sorted(a.features)) for a in again.load_annotations())
        assert got == expected and len(caught) == 1
        json.loads(gzip.decompress(stann.read_bytes()))
    record("corruption", "stann_ (study annotations)", "truncated file", "detected, warned once, refetched")


def test_corrupt_image_cache_file_is_refetched(tmp_path: Path) -> None:
    with LocalArchive(seed=8) as server:
        api = IsicApi(hostname=server.url, api_version=1, cache_folder=tmp_path, progress=False)
        expected = api.cache_images()
        imcache = tmp_path / "0" / f"imcache_{IMCACHE_ID}.json.gz"
        imcache.write_bytes(b"\x1f\x8b garbage")
        with pytest.warns(CacheCorruptionWarning):
            again = IsicApi(hostname=server.url, api_version=1, cache_folder=tmp_path, progress=False)
            assert again.cache_images() == expected
    record("corruption", "imcache_ (image records)", "garbled file", "detected, warned once, rebuilt")
    for kind in ("spidx_ (npz)", "spimg_ (PNG)", "image_ (JPEG)"):
        record("corruption", kind, "truncated file", "detected, warned, refetched (tests/test_cache.py)")


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_disk_errors_are_clear_and_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        code: int, words: str) -> None:
    with LocalArchive(seed=9) as server:
        api = IsicApi(hostname=server.url, api_version=1, cache_folder=tmp_path, progress=False)
        real_replace = os.replace

        def failing_replace(src: str, dst: str) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(CacheError, match=words):
            api.cache_images()
        monkeypatch.setattr(os, "replace", real_replace)
        leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
        assert not leftovers
        assert not (tmp_path / "0" / f"imcache_{IMCACHE_ID}.json.gz").exists()
        assert len(api.cache_images()) == len(server.data.visible_images(None))  # the session still works
    record("disk", "cache write", f"OSError {errno.errorcode[code]}",
           f"CacheError saying '{words}'; no partial file; session still usable")


def test_unwritable_cache_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(CacheError):
        IsicApi(hostname="http://127.0.0.1:9", cache_folder=blocker / "cache")
    record("bad input", "cache_folder", "a path under a file (not creatable)", "CacheError naming the folder")
