"""The cache folder: layout, compatibility, atomic writes, corruption, sharing."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from isicarchive import CacheError
from isicarchive.cache import IMCACHE_ID, Cache, CacheCorruptionWarning, safe_name, shard_of
from isicarchive.testing import LocalArchive


def test_shard_rule() -> None:
    assert shard_of("5436e3abbae478396759f0cf") == "f"
    assert shard_of("ISIC_0000000") == __import__("hashlib").sha1(b"ISIC_0000000").hexdigest()[-1]
    assert shard_of("ISIC_0000000") == shard_of("ISIC_0000000")


def test_safe_names_stay_inside_the_folder(tmp_path: Path) -> None:
    assert "/" not in safe_name("../../x") and ".." not in safe_name("../../x")
    assert safe_name("") == "unnamed"
    cache = Cache(tmp_path, "http://127.0.0.1/api/v1")
    path = cache.image_path("5436e3abbae478396759f0cf", "../../etc/passwd", ".jpg")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    with pytest.raises(CacheError):
        cache.path("image", "../../x", ".jpg")


def test_atomic_write_leaves_nothing_partial_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path, "http://127.0.0.1/api/v1")
    target = cache.path("stann", "a" * 24, ".json.gz")
    cache.write_json_gz(target, {"ok": 1})

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CacheError, match="disk is full"):
        cache.write_json_gz(target, {"ok": 2})
    monkeypatch.undo()
    assert cache.read_json_gz(target) == {"ok": 1}  # the old file is intact
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left


def test_read_only_cache_folder_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CacheError):
            Cache(tmp_path / "sub", "http://127.0.0.1/api/v1")
    finally:
        tmp_path.chmod(0o700)


def test_cache_folder_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cache folder"):
        Cache(blocker, "http://127.0.0.1/api/v1")


def test_corrupt_files_are_detected_removed_and_reported_once(tmp_path: Path) -> None:
    cache = Cache(tmp_path, "http://127.0.0.1/api/v1")
    gz = cache.path("imcache", IMCACHE_ID, ".json.gz")
    gz.write_bytes(gzip.compress(b'{"a": 1')[:-4])
    npz = cache.path("spidx", "b" * 24, ".npz")
    npz.write_bytes(b"PK\x03\x04garbage")
    png = cache.path("spimg", "b" * 24, ".png")
    png.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.read_json_gz(gz) is None
        assert cache.read_npz(npz, "idx") is None
        assert cache.read_image(png) is None
    assert sum(issubclass(w.category, CacheCorruptionWarning) for w in caught) == 3
    assert not gz.exists() and not npz.exists() and not png.exists()


def test_corrupt_files_are_refetched_by_the_client(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    api = api_factory(archive, cache_folder=tmp_path)
    name = archive.data.visible_images(None)[0]["name"]
    image = api.image(name)
    image.load_imagedata()
    image.load_superpixels()
    image_file = next(p for p in tmp_path.glob(f"?/image_{image.id}_*") if not p.name.endswith(".sha256"))
    spidx = tmp_path / image.id[-1] / f"spidx_{image.id}.npz"
    spimg = tmp_path / image.id[-1] / f"spimg_{image.id}.png"
    good = image.data.copy(), image.superpixels["idx"].copy()
    for path in (image_file, spidx, spimg):
        path.write_bytes(path.read_bytes()[: 40])
    fresh = api_factory(archive, cache_folder=tmp_path)
    twin = type(image)(image.as_json(), fresh)
    with pytest.warns(CacheCorruptionWarning):
        twin.load_imagedata()
        twin.load_superpixels()
    np.testing.assert_array_equal(twin.data, good[0])
    np.testing.assert_array_equal(twin.superpixels["idx"], good[1])
    assert fresh.request_count >= 2  # both were fetched again


def test_original_flat_layout_loads_as_is(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    """A cache folder written by the original package: files in [cache]/<last hex digit>/."""
    source = api_factory(archive, cache_folder=tmp_path / "ours")
    records = source.cache_images()
    image = source.image(archive.data.visible_images(None)[1]["name"])
    image.load_imagedata()
    image.load_superpixels()
    legacy = tmp_path / "legacy"
    for shard in "0123456789abcdef":
        (legacy / shard).mkdir(parents=True)
    with gzip.open(legacy / "0" / f"imcache_{IMCACHE_ID}.json.gz", "wt") as fh:
        json.dump(dict(records), fh)  # the original wrote with the standard json module
    for path in (tmp_path / "ours").glob("?/*"):
        if path.name.startswith(("image_", "spimg_")):
            shutil.copy(path, legacy / path.parent.name / path.name)
    api = api_factory(archive, cache_folder=legacy)
    archive.clear_log()
    assert api.cache_images() == records
    twin = api.image(image.id)
    twin.load_imagedata()
    twin.load_superpixels()
    assert len(archive.log) == 1  # only the freshness check; image and superpixels from disk
    np.testing.assert_array_equal(twin.data, image.data)


def test_later_releases_two_level_layout_is_read(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    source = api_factory(archive, cache_folder=tmp_path / "ours")
    image = source.image(archive.data.visible_images(None)[2]["name"])
    image.load_imagedata()
    legacy = tmp_path / "two-level"
    original = next(p for p in (tmp_path / "ours").glob(f"?/image_{image.id}_*") if not p.name.endswith(".sha256"))
    target = legacy / image.id[-2] / image.id[-1]
    target.mkdir(parents=True)
    shutil.copy(original, target / original.name)
    api = api_factory(archive, cache_folder=legacy)
    before = api.request_count
    twin = type(image)(image.as_json(), api)
    twin.load_imagedata()
    assert api.request_count == before
    np.testing.assert_array_equal(twin.data, image.data)


def _sync_into(url: str, folder: str, queue: multiprocessing.Queue[int]) -> None:
    from isicarchive import IsicApi

    api = IsicApi(hostname=url, api_version=1, cache_folder=folder, progress=False, backoff=0.001)
    records = api.cache_images()
    study = api.study("ISIC Annotation Study 0")
    study.cache_imagedata(progress=False)
    queue.put(len(records))


def test_two_processes_share_one_cache(archive: LocalArchive, tmp_path: Path) -> None:
    # forked, not spawned: two processes writing one cache folder is what is tested, not a fresh interpreter's
    # start (a spawned child imported this module, pytest and the package again: 1.2 s of CPU); the child has
    # no thread but its own, so none of this worker's (its archives' servers) holds a lock it needs
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_sync_into, args=(archive.url, str(tmp_path), queue)) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "this process is multi-threaded"
        for w in workers:
            w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    counts = [queue.get(timeout=5), queue.get(timeout=5)]
    assert counts[0] == counts[1] == len(archive.data.visible_images(None))
    cache = Cache(tmp_path, archive.v1_url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any corrupt file fails the test
        for path in cache.files():
            assert not path.name.endswith((".part", ".tmp"))
            if path.name.endswith(".json.gz"):
                assert cache.read_json_gz(path) is not None
            elif path.suffix in (".png", ".jpg"):
                assert cache.read_image(path) is not None


def test_a_large_image_cache_is_streamed_as_the_same_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 5,001 entries go to the compressor in slices; the file holds exactly the JSON of the whole mapping
    import isicarchive._json as fast_json

    cache = Cache(tmp_path, "http://127.0.0.1:1/api/v1")
    payload = {f"{i:024x}": {"name": f"ISIC_{i:07d}", "meta": {"clinical": {"age_approx": i % 90, "x": None}}}
               for i in range(5001)}
    largest: list[int] = []
    real_dumps = fast_json.dumps

    def recording_dumps(obj: object) -> bytes:
        text = real_dumps(obj)
        largest.append(len(text))
        return text

    monkeypatch.setattr(fast_json, "dumps", recording_dumps)
    path = cache.write_json_gz(cache.path("imcache", IMCACHE_ID, ".json.gz"), payload)
    with gzip.open(path, "rb") as fh:
        assert fh.read() == json.dumps(payload, separators=(",", ":")).encode()
    assert cache.read_json_gz(path) == payload
    assert len(largest) == 3 and max(largest) < len(json.dumps(payload)) / 2  # never the whole text at once
    small = cache.write_json_gz(tmp_path / "small.json.gz", {"a": 1})
    assert cache.read_json_gz(small) == {"a": 1}
