"""One pixel limit on every decoder (TIFF, PNG, JPEG), whether the bytes come from the cache, the
network or an archive on disk: an image announcing gigapixels is refused from its header."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from reliability_report import record  # type: ignore[import-not-found]

import isicarchive.limits
from isicarchive import IsicApi, IsicError
from isicarchive.testing import LocalArchive


def tiff_bomb(width: int, height: int) -> bytes:
    """A little-endian TIFF of one deflate-compressed strip that announces ``width`` × ``height``
    grey pixels while holding a few kilobytes: a decoder allocates the whole image first."""
    strip = zlib.compress(bytes(1 << 16), 9)
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, len(strip))]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + b"\x00\x00\x00\x00" + strip


def picture(kind: str, size: tuple[int, int] = (120, 90)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, (10, 120, 200)).save(out, kind)
    return out.getvalue()


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=53) as server:
        yield server


@pytest.fixture
def small_limit() -> Iterator[int]:
    previous = isicarchive.limits.configure(max_pixels=5_000)
    try:
        yield 5_000
    finally:
        isicarchive.limits.configure(**vars(previous))


def quick_api(url: str, **kw: object) -> IsicApi:
    kw.setdefault("api_version", 1)  # the legacy API unless a test asks for v2
    return IsicApi(hostname=url, progress=False, retries=1, backoff=0.001, timeout=(2.0, 5.0), **kw)  # type: ignore[arg-type]


def test_a_cached_tiff_bomb_is_refused_from_its_header(archive: LocalArchive, tmp_path: Path) -> None:
    bomb = tiff_bomb(40_000, 40_000)  # 1.6 gigapixels in about 200 bytes
    assert len(bomb) < 1000
    archive.faults.add("wrong_type", r"/download$", body=bomb, content_type="image/tiff")
    try:
        image = quick_api(archive.url, cache_folder=str(tmp_path)).image(archive.data.images[0]["_id"])
        with pytest.raises(IsicError, match="announces 1,600,000,000 pixels, more than the limit"):
            image.load_imagedata()
    finally:
        archive.faults.clear()
    record("decompression bomb", "load_imagedata with a cache folder", "a 300-byte TIFF announcing 40000x40000",
           "ImageTooLargeError (an IsicError) from the header, before any decode; the pixel limit names "
           "isicarchive.limits.configure(max_pixels=…)")


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "TIFF"])
def test_the_pixel_limit_applies_to_every_decoder_and_path(kind: str, archive: LocalArchive, tmp_path: Path,
                                                          small_limit: int) -> None:
    data = picture(kind)  # 10,800 pixels: over the limit of 5,000
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff"}[kind]
    archive.faults.add("wrong_type", r"/download$", body=data, content_type=mime)
    try:
        for cache in (None, str(tmp_path / "cache")):  # from the network, then from the cache
            image = quick_api(archive.url, cache_folder=cache).image(archive.data.images[1]["_id"])
            with pytest.raises(IsicError, match="announces 10,800 pixels, more than the limit of 5,000"):
                image.load_imagedata()
    finally:
        archive.faults.clear()
    folder = tmp_path / "disk"
    folder.mkdir()
    suffix = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif"}[kind]
    (folder / f"ISIC_0000001.{suffix}").write_bytes(data)
    (folder / "metadata.csv").write_text("isic_id,attribution,copyright_license\nISIC_0000001,x,CC-0\n")
    pytest.importorskip("pyarrow")
    disk = IsicApi(hostname=folder.as_uri(), progress=False)
    with pytest.raises(IsicError, match="announces 10,800 pixels"):
        disk.image("ISIC_0000001").load_imagedata()
    record("decompression bomb", f"load_imagedata of a {kind}", "max_pixels=5,000 configured; a 120x90 image from "
           "the network, the cache and an archive on disk", "ImageTooLargeError on each of the three paths")


def test_the_audit_of_near_duplicates_decodes_under_the_limit(archive: LocalArchive, tmp_path: Path,
                                                            small_limit: int) -> None:
    pytest.importorskip("imagehash")
    from isicarchive.leakage import audit

    api = quick_api(archive.url, api_version=2, cache_folder=str(tmp_path))
    parts = api.search_images("", limit=4).split({"a": 0.5, "b": 0.5})
    with pytest.raises(IsicError, match="more than the limit of 5,000"):
        audit(parts, near_duplicates=True, check_bytes=False)
    record("decompression bomb", "audit(near_duplicates=True) (perceptual hashes)", "max_pixels=5,000 configured",
           "ImageTooLargeError before Pillow decodes an image over the limit")
