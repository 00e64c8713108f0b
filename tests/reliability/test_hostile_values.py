"""Paths and values from servers: licence names never reach a request path, oversized ids and numbers are
IsicErrors, records of the wrong shape deep down are refused as they enter, a partitioned sync that a
server keeps splitting stops."""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from hostile import Exchange, serving  # type: ignore[import-not-found]
from PIL import Image as PILImage
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import IsicApi, IsicError, QueryError
from isicarchive.cache import Cache
from isicarchive.cli import main as cli
from isicarchive.search import parse
from isicarchive.testing import LocalArchive


def quick_api(url: str, **kw: object) -> IsicApi:
    kw.setdefault("api_version", 1)  # the legacy API unless a test asks for v2
    return IsicApi(hostname=url, progress=False, retries=1, backoff=0.001, timeout=(2.0, 2.0), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=56) as server:
        yield server


def jpeg() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (6, 4), (9, 9, 9)).save(out, "JPEG")
    return out.getvalue()


def test_a_licence_name_never_reaches_a_request_path(tmp_path: Path) -> None:
    picture = jpeg()

    def answer(exchange: Exchange) -> None:
        path = exchange.request.path
        if "/users/me" in path:
            exchange.send(200, b'{"email": "alice@example.org", "full_name": "Alice PRIVATE"}')
        elif path.startswith("/files/"):
            exchange.send(200, picture, content_type="image/jpeg")
        else:
            exchange.send(404, b'{"detail": "Not found."}')

    with serving(answer) as server:
        records = [{"isic_id": "ISIC_0000001", "public": True, "attribution": "x",
                    "copyright_license": "../../users/me",
                    "metadata": {"acquisition": {}, "clinical": {}},
                    "files": {"full": {"url": f"{server.url}/files/ISIC_0000001.jpg", "size": len(picture)}}}]
        api = quick_api(server.url, api_version=2, token="BEARER-TOKEN")
        result = api.download_images(records, tmp_path / "out")
        paths = [r.path for r in server.requests]
    assert result.downloaded == ["ISIC_0000001"]
    # the one /users/me/ is the session's own check of its token; the licence asked for none
    assert sum("users/me" in p for p in paths) <= 1 and not any("license-file" in p for p in paths), paths
    written = "".join(p.read_text() for p in (tmp_path / "out" / "licenses").glob("*.txt"))
    assert "PRIVATE" not in written and "alice@" not in written
    record("hostile server", "folder download: licenses/<name>.txt", "a record's licence ../../users/me",
           "no request for it (only CC-0, CC-BY, CC-BY-NC are asked for); the file holds the name alone")


def test_oversized_ids_and_numbers_are_isic_errors(tmp_path: Path) -> None:
    cache = Cache(tmp_path, "http://127.0.0.1:1/api/v2")
    for call in (lambda: cache.find("image", "a" * 10_000), lambda: cache.path("image", "a" * 10_000, ".jpg"),
                 lambda: cache.find_image("ISIC_" + "1" * 10_000)):
        with pytest.raises(IsicError, match="refusing to build a cache file name"):
            call()
    for query in ("age_approx:" + "9" * 5000, "age_approx:[" + "9" * 5000 + " TO *]"):
        with pytest.raises(QueryError, match="longer than any field holds"):
            parse(query)
    record("bad input", "an id of 10,000 characters; a search with a 5,000-digit number",
           "cache look-ups, query parsing", "CacheError and QueryError (IsicErrors), not OSError or ValueError")


def test_a_v2_record_whose_metadata_is_a_list(archive: LocalArchive) -> None:
    image_id = archive.data.images[0]["isic_id"] if "isic_id" in archive.data.images[0] else None
    api = quick_api(archive.url, api_version=2)
    image_id = image_id or api.search_images("", limit=1).names()[0]
    body = json.dumps({"isic_id": image_id, "public": True, "metadata": ["acquisition", "clinical"]}).encode()
    archive.faults.add("wrong_type", rf"/images/{image_id}/$", body=body)
    try:
        with pytest.raises(IsicError, match="metadata as a JSON list"):
            quick_api(archive.url, api_version=2).image(image_id)
    finally:
        archive.faults.clear()
    record("hostile server", "a v2 image record", "metadata is a JSON list",
           "ArchiveResponseError naming the field (was AttributeError)")


def test_a_v1_study_whose_features_or_images_are_text(archive: LocalArchive,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    study = archive.data.studies[0]
    real = requests.get(f"{archive.url}/api/v1/study/{study['_id']}", timeout=5).json()
    for key, value in (("features", "melanoma"), ("images", "ISIC_0000001"), ("images", ["ISIC_0000001"])):
        archive.faults.add("wrong_type", rf"/study/{study['_id']}$", body=json.dumps({**real, key: value}).encode())
        try:
            with pytest.raises(IsicError, match=f"{key!r}"):
                quick_api(archive.url).study(study["_id"])
            assert cli(["--host", archive.url, "--api", "v1", "--quiet", "study", "show", study["_id"]]) != 0
        finally:
            archive.faults.clear()
        err = capsys.readouterr().err
        assert "Traceback" not in err and key in err
    record("hostile server", "a v1 study (API and `isicarchive study show`)",
           "features or images as text, images as a list of strings",
           "ArchiveResponseError naming the field; the CLI prints one line, no traceback")


def test_an_image_record_cache_whose_record_is_a_list(archive: LocalArchive, tmp_path: Path) -> None:
    api = quick_api(archive.url, cache_folder=str(tmp_path))
    records = api.cache_images()
    first = sorted(records)[0]
    imcache = next(tmp_path.rglob("imcache_*.json.gz"))
    payload = json.loads(gzip.decompress(imcache.read_bytes()))
    payload[first] = ["not", "a", "record"]
    imcache.write_bytes(gzip.compress(json.dumps(payload).encode()))
    again = quick_api(archive.url, cache_folder=str(tmp_path))
    image = again.image(first)
    assert image.id == first
    assert len(again.cache_images()) == len(records)
    record("damaged cache", "the image-record cache", "one record is a JSON list",
           "that entry is left out and fetched again (was AttributeError)")


def test_superpixels_of_another_size_than_the_image(archive: LocalArchive, tmp_path: Path) -> None:
    png = io.BytesIO()
    PILImage.fromarray(np.zeros((5, 7, 3), np.uint8)).save(png, format="PNG")
    archive.faults.add("wrong_type", r"/superpixels$", body=png.getvalue(), content_type="image/png")
    try:
        image = quick_api(archive.url, cache_folder=str(tmp_path)).image(archive.data.images[0]["_id"])
        with pytest.raises(IsicError, match=r"superpixels of .* are \(5, 7\) pixels"):
            image.paint_superpixels([0])
        with pytest.raises(IsicError, match="do not belong together"):
            image.overlay([0.5])
    finally:
        archive.faults.clear()
    record("hostile server", "paint_superpixels / overlay", "a 5x7 superpixel PNG for a larger image",
           "ArchiveResponseError (was ValueError)")


def test_a_partitioned_sync_the_server_keeps_splitting_stops() -> None:
    one = {"isic_id": "ISIC_0000001", "public": True, "metadata": {"acquisition": {}, "clinical": {}}}

    def answer(exchange: Exchange) -> None:
        path = exchange.request.path
        if "/images/" in path:  # every search announces 5,000 images and links back to itself
            nxt = f"http://{exchange.request.headers['Host']}{path}" if "/search/" in path else None
            exchange.send(200, json.dumps({"count": 5000, "next": nxt, "previous": None,
                                           "results": [one]}).encode())
        else:
            exchange.send(404, b"{}")

    with serving(answer) as server:
        api = quick_api(server.url, api_version=2)
        outcome: list[object] = []
        started = time.monotonic()
        thread = threading.Thread(target=lambda: outcome.append(_raised(api.cache_images)), daemon=True)
        thread.start()
        thread.join(30)
        seconds = time.monotonic() - started
        count = len(server.requests)
    assert outcome and isinstance(outcome[0], IsicError), (outcome, count)
    # stopped by the parts announcing more than their whole, at the first split (the ids' number would stop it
    # one level further down, after ~1,000 requests); how many partitions reach their first split before the
    # stop depends on the threads' timing: 107-1,005 requests seen in 200 runs (a bound of 400 failed on a quiet
    # machine), endless splitting made 18,000 in the 30 s
    assert "than in the whole" in str(outcome[0]), outcome
    assert count < 1_500, count
    record("hostile server", "cache_images() on v2 (parallel partitioned sync)",
           "every prefix search announces 5,000 images, its next link is itself",
           f"ArchiveResponseError after {count} requests ({seconds:.1f} s; was endless splitting, "
           "thousands of requests)")


def _raised(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - handed to the test
        return exc
