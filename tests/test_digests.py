"""SHA-256 computed while images stream in, kept beside the cached file, checked by ``cache verify``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from isicarchive import IsicApi
from isicarchive.cli import main
from isicarchive.digests import image_digests
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture(scope="module")
def big_files() -> LocalArchive:
    config = ArchiveConfig(images=8, image_size=(64, 48), image_bytes=(300_000, 600_000), studies=1)
    with LocalArchive(seed=23, config=config) as server:
        yield server


def _public(server: LocalArchive) -> list[dict]:
    return server.data.visible_images(None)


@pytest.mark.parametrize("version", [1, 2])
def test_downloads_keep_the_sha256_of_the_bytes_that_came(big_files: LocalArchive, tmp_path: Path,
                                                          version: int) -> None:
    api = IsicApi(hostname=big_files.url, api_version=version, cache_folder=tmp_path, progress=False,
                  backoff=0.001)
    images = _public(big_files)[:3]
    keys = [im["_id"] if version == 1 else im["name"] for im in images]
    result = api.download_images(keys)
    assert result.ok and len(result.sha256) == 3
    for image, key in zip(images, keys, strict=True):
        expected = hashlib.sha256(big_files.data.image_jpeg(image["_id"])).hexdigest()
        assert result.sha256[key] == expected
        cached = api._cache.find_image(key)  # type: ignore[union-attr]
        sidecar = cached.with_name(cached.name + ".sha256")
        assert sidecar.read_text() == f"{expected}  {cached.name}\n"  # sha256sum's own format


def test_a_resumed_download_has_the_digest_of_the_whole_file(big_files: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=big_files.url, api_version=2, cache_folder=tmp_path, progress=False, backoff=0.001)
    image = _public(big_files)[3]
    big_files.faults.add("truncate", r"/storage/images/", times=1, fraction=0.5)
    try:
        found = image_digests(api._store, [api._backend.image(image["name"])])
    finally:
        big_files.faults.clear()
    assert any(r.fault == "truncate" for r in big_files.requests(r"/storage/images/"))
    data = big_files.data.image_jpeg(image["_id"])
    assert found[image["name"]] == (hashlib.sha256(data).hexdigest(), len(data))


def test_digests_without_a_cache_come_from_a_temporary_download(big_files: LocalArchive) -> None:
    api = IsicApi(hostname=big_files.url, api_version=2, progress=False, backoff=0.001)
    image = _public(big_files)[4]
    found = image_digests(api._store, [api._backend.image(image["name"])])
    assert found[image["name"]].sha256 == hashlib.sha256(big_files.data.image_jpeg(image["_id"])).hexdigest()


def test_cache_verify_names_a_file_with_one_byte_changed(big_files: LocalArchive, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    api = IsicApi(hostname=big_files.url, api_version=2, cache_folder=tmp_path, progress=False, backoff=0.001)
    names = [im["name"] for im in _public(big_files)[:3]]
    assert api.download_images(names).ok
    victim = api._cache.find_image(names[1])  # type: ignore[union-attr]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # still a JPEG that decodes: only the digest can tell
    victim.write_bytes(bytes(data))
    assert main(["--json", "--cache-folder", str(tmp_path), "cache", "verify"]) != 0
    report = json.loads(capsys.readouterr().out)
    assert report["corrupt_removed"] == [str(victim)]
    assert not victim.exists()
    assert main(["--json", "--cache-folder", str(tmp_path), "cache", "verify"]) == 0
