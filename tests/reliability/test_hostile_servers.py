"""Small hostile servers of the tests' own: secrets stay at the archive's origin, every exchange is
bounded in time, memory and disk, and no wrong file is ever counted as done."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hostile import Exchange, HostileServer, finishes, serving  # type: ignore[import-not-found]
from PIL import Image as PILImage
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import ArchiveUnavailableError, AuthenticationError, IsicApi, IsicError, NotFoundError
from isicarchive.cache import Cache, CacheError
from isicarchive.downloads import Job, fetch_file
from isicarchive.oauth import OAuthClient, OAuthToken
from isicarchive.testing import LocalArchive
from isicarchive.transport import RetryPolicy, Transport


def quick(url: str, deadline: float = 3.0) -> Transport:
    return Transport(url, timeout=(2.0, 2.0), policy=RetryPolicy(retries=1, backoff=0.001, body_retries=1),
                     deadline=deadline)


def quick_api(url: str, **kw: object) -> IsicApi:
    kw.setdefault("api_version", 1)  # the legacy API unless a test asks for v2
    return IsicApi(hostname=url, progress=False, retries=1, backoff=0.001, timeout=(2.0, 2.0), **kw)  # type: ignore[arg-type]


@pytest.fixture
def witness() -> Iterator[HostileServer]:
    """Another origin (another port), which must never hear anything secret."""
    with serving(lambda exchange: exchange.send(200, b"[]")) as server:
        yield server


def _redirect_to(target: HostileServer, status: int = 307):
    def answer(exchange: Exchange) -> None:
        exchange.send(status, headers={"Location": f"{target.url}{exchange.request.path}"})
    return answer


# ------------------------------------------------------------------ secrets
def test_credentials_never_follow_a_redirect(witness: HostileServer) -> None:
    with serving(_redirect_to(witness, 307)) as server:
        with pytest.raises(IsicError, match="never re-sent"):
            quick_api(server.url, username="alice", password="PASSWORD-SECRET")
        oauth = OAuthClient(quick(server.url + "/api/v2"), server.url + "/oauth")
        with pytest.raises(IsicError, match="never re-sent"):
            oauth.password_grant("alice", "PASSWORD-SECRET")
        with pytest.raises(IsicError, match="never re-sent"):
            oauth.refresh(OAuthToken("ACCESS-SECRET", refresh_token="REFRESH-SECRET"))
        oauth.revoke(OAuthToken("ACCESS-SECRET", refresh_token="REFRESH-SECRET"))  # best effort: logged
        assert len(server.requests) == 5
    assert witness.requests == []
    record("hostile server", "password login, OAuth token, refresh and revoke", "307 to another origin",
           "IsicError; the other origin received 0 requests (no password or token re-sent)")


def test_no_cookies_are_kept_or_sent(witness: HostileServer) -> None:
    def answer(exchange: Exchange) -> None:
        if exchange.request.path.endswith("/user/authentication"):
            body = json.dumps({"authToken": {"token": "GIRDER-TOKEN"}, "user": {"login": "alice"}}).encode()
            exchange.send(200, body, {"Set-Cookie": "girderToken=COOKIE-SECRET; Path=/"})
        elif exchange.request.path.endswith("/user/me"):
            exchange.send(200, b'{"login": "alice"}', {"Set-Cookie": "session=COOKIE-SECRET2; Path=/"})
        else:
            exchange.send(302, headers={"Location": f"{witness.url}{exchange.request.path}",
                                        "Set-Cookie": "other=COOKIE-SECRET3; Path=/"})

    with serving(answer) as server:
        api = quick_api(server.url, username="alice", password="pw")
        list(api.study_list())
        api.logout()
        list(api.study_list())
        sent = [r.headers.get("Cookie") for r in server.requests + witness.requests]
    assert len(witness.requests) == 2
    assert sent and not any(sent), sent
    record("hostile server", "v1 login, listings, logout", "Set-Cookie on every answer, redirects to another port",
           "no Cookie header ever sent, to the archive or the other origin")


def test_a_netrc_entry_never_replaces_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password PASSWORD-SECRET\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with serving(lambda exchange: exchange.send(200, b'{"id": 1, "results": [], "count": 0, "next": null}')) \
            as server:
        api = quick_api(server.url, api_version=2, token="BEARER-TOKEN")
        api.search_images("age_approx:50")
        sent = [r.headers.get("Authorization") for r in server.requests]
    assert sent and all(header == "Bearer BEARER-TOKEN" for header in sent), sent
    record("secrets", "v2 session with a token", "a ~/.netrc entry for the archive's host",
           "every request carries the bearer token; requests' netrc Basic credentials never replace it")


def test_urllib3_debug_lines_hide_signatures(caplog: pytest.LogCaptureFixture) -> None:
    with serving(lambda exchange: exchange.send(200, b"\x89PNG bytes", content_type="image/png")) as server:
        with caplog.at_level(logging.DEBUG, logger="urllib3"):
            quick(server.url).get_bytes(f"{server.url}/bucket/ISIC_0000000.jpg"
                                        "?X-Amz-Signature=SIGNATURE-SECRET&X-Amz-Credential=CREDENTIAL-SECRET")
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("/bucket/ISIC_0000000.jpg" in line for line in urllib3_lines)  # urllib3 did log the request
    assert "SECRET" not in caplog.text
    record("secrets", "download from a pre-signed URL", "urllib3 debug logging on",
           "the URL is logged without its query: no signature or credential in the log")


# ------------------------------------------------------- time, memory, disk
def test_retryable_status_with_an_endless_body() -> None:
    def answer(exchange: Exchange) -> None:
        exchange.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 100000000000\r\nRetry-After: 0\r\n\r\n")
        exchange.endless()

    with serving(answer) as server:
        started = time.monotonic()
        outcome = finishes(lambda: quick(server.url).get_json("image"))
        took = time.monotonic() - started
    assert isinstance(outcome, ArchiveUnavailableError) and "503" in str(outcome)
    record("hostile server", "any API request", "503 whose body never ends",
           f"ArchiveUnavailableError after {took:.1f} s, retried without reading the body "
           f"({server.bytes_sent / 1e6:.0f} MB sent into socket buffers)")


@pytest.mark.parametrize(("part", "opening", "drip"), [
    ("headers", b"HTTP/1.1 200 OK\r\n", b"X"),
    ("body", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[", b" "),
])
def test_a_byte_at_a_time_meets_the_deadline(part: str, opening: bytes, drip: bytes) -> None:
    def answer(exchange: Exchange) -> None:
        exchange.write(opening)
        exchange.endless(drip, pause=0.1)

    # a byte every 0.1 s: the read timeout (2 s) and the speed floor's window (the same) never trip before the
    # exchange's deadline, which alone ends it
    with serving(answer) as server:
        started = time.monotonic()
        outcome = finishes(lambda: quick(server.url, deadline=0.5).get_json("image"))
        took = time.monotonic() - started
    assert isinstance(outcome, ArchiveUnavailableError) and "within 0.5 s" in str(outcome), outcome
    record("hostile server", "any API request", f"{part} sent a byte every 0.1 s (read timeout never trips)",
           f"ArchiveUnavailableError at the 0.5 s deadline ({took:.1f} s)")


@pytest.mark.parametrize("status", [404, 200])
def test_endless_error_pages_and_binaries_are_read_capped(status: int) -> None:
    def answer(exchange: Exchange) -> None:
        exchange.write(f"HTTP/1.1 {status} X\r\nContent-Type: image/png\r\n\r\n".encode())  # no length: till close
        exchange.endless()

    with serving(answer) as server:
        transport = quick(server.url, deadline=20.0)
        transport.max_binary_bytes = 1 << 20
        outcome = finishes(lambda: transport.get_bytes("image/1/superpixels"))
    assert isinstance(outcome, NotFoundError if status == 404 else IsicError), outcome
    assert server.bytes_sent < 64e6  # stopped reading near the cap (what the socket buffers took aside)
    record("hostile server", "superpixel PNG / mask / image without cache", f"HTTP {status}, endless body",
           f"{type(outcome).__name__}: read capped ({'64 KiB of an error page' if status == 404 else '1 MiB set'}), "
           f"{server.bytes_sent / 1e6:.0f} MB sent in all")


def _file_server(content: bytes, *, gzipped: bool = False, wrong_range: bool = False,
                 content_type: str = "image/jpeg"):
    # compressed once, before any request: compressing 50 MB in the answer took over the client's 2 s read
    # timeout on a loaded machine (a timeout, not the cap, then ended the download)
    body = gzip.compress(content) if gzipped else content

    def answer(exchange: Exchange) -> None:
        headers = {"Content-Encoding": "gzip"} if gzipped else {}
        wanted = exchange.request.headers.get("Range")
        if wanted and wrong_range:
            have = int(wanted.split("=")[1].rstrip("-"))
            part = content[: len(content) - have]  # the right length, from the wrong offset
            headers["Content-Range"] = f"bytes 0-{len(part) - 1}/{len(content)}"
            exchange.send(206, part, headers, content_type)
            return
        exchange.send(200, body, headers, content_type)
    return answer


def _job(tmp_path: Path, size: int | None = None) -> Job:
    return Job("ISIC_0000001", "file", lambda ctype: tmp_path / "ISIC_0000001.jpg", tmp_path / ".ISIC_0000001.part",
               size)


def test_download_stops_at_the_size_the_file_can_have(tmp_path: Path) -> None:
    def answer(exchange: Exchange) -> None:
        exchange.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff")
        exchange.endless()

    with serving(answer) as server:
        outcome = finishes(lambda: fetch_file(quick(server.url, deadline=20), _job(tmp_path, size=100_000)))
    assert isinstance(outcome, ArchiveUnavailableError) and "more than the 100000 bytes" in str(outcome)
    assert list(tmp_path.iterdir()) == []
    record("hostile server", "image download (size announced)", "endless body",
           "stopped at the announced 100,000 bytes, part file removed, failed item")


def test_compressed_downloads(tmp_path: Path) -> None:
    bomb = b"\0" * 50_000_000
    with serving(_file_server(bomb, gzipped=True)) as server:
        outcome = finishes(lambda: fetch_file(quick(server.url, deadline=20), _job(tmp_path)))
        asked = server.requests[0].headers.get("Accept-Encoding")
    assert asked == "identity"
    assert isinstance(outcome, ArchiveUnavailableError) and "more than" in str(outcome), outcome
    assert list(tmp_path.iterdir()) == []
    record("hostile server", "image download (no size announced)", "50 MB of zeros gzip-encoded (49 KB sent)",
           "identity asked for; stopped at the encoded length plus 1/8 (64 KiB at least), nothing left on disk")
    # an image sent compressed all the same with the right (encoded) length: downloaded whole
    content = b"\xff\xd8\xff" + random.Random(7).randbytes(100_000) + bytes(20_000)  # compresses a little
    with serving(_file_server(content, gzipped=True)) as server:
        path, _ = fetch_file(quick(server.url), _job(tmp_path))
    assert path.read_bytes() == content


def test_a_resume_answered_from_the_wrong_offset_is_not_appended(tmp_path: Path) -> None:
    content = b"\xff\xd8\xff" + hashlib.sha256(b"x").digest() * 1000
    job = _job(tmp_path)
    job.part.write_bytes(content[:5000])
    with serving(_file_server(content, wrong_range=True)) as server:
        outcome = finishes(lambda: fetch_file(quick(server.url), job))
    # the range is refused, the part file dropped; the retry asks for the whole file
    assert not isinstance(outcome, BaseException), outcome
    assert (tmp_path / "ISIC_0000001.jpg").read_bytes() == content
    record("hostile server", "resumed download", "206 whose Content-Range starts at 0, not at the offset asked",
           "not appended: part file dropped, file fetched whole, identical to the original")


def test_an_html_page_served_as_jpeg_is_not_a_download(tmp_path: Path) -> None:
    with serving(_file_server(b"<!DOCTYPE html><html>Sign in to the Wi-Fi</html>")) as server:
        outcome = finishes(lambda: fetch_file(quick(server.url), _job(tmp_path)))
    assert isinstance(outcome, ArchiveUnavailableError) and "HTML" in str(outcome)
    assert list(tmp_path.iterdir()) == []
    record("hostile server", "image download", "an HTML page with Content-Type image/jpeg",
           "failed item, no file written")


def test_listings_that_never_end() -> None:
    records = [{"_id": f"{n:024x}", "name": f"d{n}"} for n in range(200)]

    def ignores_offset(exchange: Exchange) -> None:
        exchange.send(200, json.dumps(records).encode())

    with serving(ignores_offset) as server:
        outcome = finishes(lambda: list(quick_api(server.url).dataset_list()))
        pages = len(server.requests)
    assert isinstance(outcome, IsicError) and "repeated records" in str(outcome), outcome
    assert pages == 2
    record("hostile server", "v1 listing", "offset ignored (the same page every time)",
           f"IsicError after {pages} pages instead of an endless loop")

    def next_is_itself(exchange: Exchange) -> None:
        page = {"count": 10**6, "next": f"http://{exchange.request.headers['Host']}{exchange.request.path}",
                "results": [{"isic_id": "ISIC_0000000", "metadata": {}}]}
        exchange.send(200, json.dumps(page).encode())

    with serving(next_is_itself) as server:
        outcome = finishes(lambda: quick_api(server.url, api_version=2).search_images("age_approx:50"))
        pages = len(server.requests)
    assert isinstance(outcome, IsicError) and "already read" in str(outcome), outcome
    record("hostile server", "v2 search", "`next` pointing at the page itself",
           f"IsicError after {pages} pages instead of an endless loop")


@pytest.mark.parametrize(("label", "body", "expected"), [
    ("`results` an object", {"count": 1, "next": None, "results": {"isic_id": "ISIC_0000000"}}, "list of records"),
    ("`next` a number", {"count": 2, "next": 2, "results": [{"isic_id": "ISIC_0000000"}]}, "not an address"),
    ("records that are strings", {"count": 1, "next": None, "results": ["ISIC_0000000"]}, "where a record"),
    ("a record without an id", {"count": 1, "next": None, "results": [{"isic_id": None}]}, "usable 'isic_id'"),
])
def test_wrong_shapes_below_the_top_level(label: str, body: dict, expected: str) -> None:
    with serving(lambda exchange: exchange.send(200, json.dumps(body).encode())) as server:
        outcome = finishes(lambda: quick_api(server.url, api_version=2).search_images("age_approx:50"))
    assert isinstance(outcome, IsicError) and expected in str(outcome), outcome
    record("hostile server", "v2 search", f"page with {label}", f"IsicError: ...{expected}...")


@pytest.mark.parametrize(("version", "body"), [(2, b'{"isic_id": null, "metadata": {}}'), (1, b'{"name": "x"}')])
def test_a_single_record_without_its_id(version: int, body: bytes) -> None:
    with serving(lambda exchange: exchange.send(200, body)) as server:
        image_id = "ISIC_0000000" if version == 2 else "5700006fba8f7fdf69cdb8e3"
        outcome = finishes(lambda: quick_api(server.url, api_version=version).image(image_id))
    key = "isic_id" if version == 2 else "_id"
    assert isinstance(outcome, IsicError) and f"usable {key!r}" in str(outcome), outcome
    record("hostile server", f"image(...) (v{version})", "a record without its id",
           "IsicError where the record enters (no Image with an id of None)")


def test_html_login_answer_deep_json_and_redirect_loops(witness: HostileServer) -> None:
    with serving(lambda exchange: exchange.send(200, b"<html>login</html>", content_type="text/html")) as server:
        outcome = finishes(lambda: quick_api(server.url, username="alice", password="pw"))
    assert isinstance(outcome, AuthenticationError) and "no token" in str(outcome), outcome

    deep = b"[" * 300 + b"]" * 300
    with serving(lambda exchange: exchange.send(200, deep)) as server:
        outcome = finishes(lambda: list(quick_api(server.url).study_list()))
    assert isinstance(outcome, IsicError) and "nested deeper" in str(outcome), outcome

    def loop(exchange: Exchange) -> None:
        exchange.send(302, headers={"Location": exchange.request.path})

    with serving(loop) as server:
        outcome = finishes(lambda: list(quick_api(server.url).study_list()))
    assert isinstance(outcome, IsicError) and "redirect loop" in str(outcome), outcome

    for location in ("file:///etc/passwd", "ftp://127.0.0.1/x"):
        with serving(lambda exchange, where=location: exchange.send(302, headers={"Location": where})) as server:
            outcome = finishes(lambda: list(quick_api(server.url).study_list()))
        assert isinstance(outcome, IsicError) and "never followed" in str(outcome), outcome
    record("hostile server", "login, listings", "HTML login page; JSON 300 deep; redirect loop; redirect to "
           "file:// and ftp://", "one IsicError each (AuthenticationError for the login), no raw exception")


# ------------------------------------------------ the local archive, turned
@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=52) as server:
        yield server


def test_superpixel_labels_beyond_the_pixel_count(archive: LocalArchive, tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = 255  # label 0xFFFFFF in a 16-pixel image: a map of 16 million rows
    png = io.BytesIO()
    PILImage.fromarray(rgb).save(png, format="PNG")
    archive.faults.add("wrong_type", r"/superpixels$", body=png.getvalue(), content_type="image/png")
    try:
        image = quick_api(archive.url, cache_folder=str(tmp_path)).image(archive.data.images[0]["_id"])
        with pytest.raises(IsicError, match="label of 16777215 in an image of only 16 pixels"):
            image.load_superpixels()
            image.map_superpixels()
    finally:
        archive.faults.clear()
    assert not list(tmp_path.rglob("spimg_*"))
    record("hostile server", "load_superpixels", "4x4 PNG with a pixel of 0xFFFFFF",
           "IsicError before any allocation; nothing cached")


def test_undecodable_image_without_a_cache(archive: LocalArchive) -> None:
    archive.faults.add("wrong_type", r"/download$", body=b"<!DOCTYPE html><html>no</html>",
                       content_type="image/jpeg")
    try:
        image = quick_api(archive.url).image(archive.data.images[0]["_id"])
        with pytest.raises(IsicError, match="HTML page"):
            image.load_imagedata()
    finally:
        archive.faults.clear()
    record("hostile server", "load_imagedata without a cache", "HTML page as image/jpeg",
           "IsicError naming an HTML page (no imageio/PIL exception)")


def test_a_tampered_cache_marker(tmp_path: Path) -> None:
    Cache(tmp_path, "http://127.0.0.1:1/api/v1")
    marker = next(tmp_path.glob(".isicarchive*"))
    for tampered in (b'{"base_url": 5}', b"[1, 2]", b"not json"):
        marker.write_bytes(tampered)
        with pytest.raises(CacheError, match="damaged"):
            Cache(tmp_path, "http://127.0.0.1:1/api/v1")
    record("bad input", "opening a cache folder", "marker file changed by hand (wrong types, not JSON)",
           "CacheError: the marker is damaged")


def test_folder_downloads_account_for_every_record(archive: LocalArchive, tmp_path: Path) -> None:
    api = quick_api(archive.url)
    first, second, third = (dict(api.image(r["_id"]).as_json()) for r in archive.data.images[:3])
    first["name"], second["name"] = "a/b", "a_b"  # one cleaned name, one that is already clean
    third["name"] = "x" * 300
    bad = dict(first, _id="..")
    result = api.download_images([first, second, third, bad, first], tmp_path / "out")
    assert sorted(result.downloaded) == sorted(r["_id"] for r in (first, second, third))
    assert list(result.failed) == [".."] and "not an image id" in result.failed[".."]
    files = sorted(p.name for p in (tmp_path / "out").glob("*.jpg"))
    assert len(files) == 3 and "a_b.jpg" in files, files
    assert all(len(name) < 130 for name in files)
    record("bad input", "download_images(folder=...)", "names `a/b` and `a_b`, a 300-character name, id `..`, "
           "a record twice", "3 distinct files, `..` one failed item, the repeat counted once")


def test_bytes_of_no_image_type_are_refused_without_trying_every_decoder() -> None:
    # imageio, asked to read bytes of no known type, tried each plugin, and its legacy DICOM one warned
    script = ("from isicarchive.store import _decode_image\nfrom isicarchive import IsicError\n"
              "try:\n    _decode_image(b'no image at all ' * 64, 'image x')\n"
              "except IsicError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "image x: the archive sent 1024 bytes that are no image"
    assert done.stderr == ""
