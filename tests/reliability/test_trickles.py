"""A floor on transfer speed (curl's --speed-limit/--speed-time): a server that trickles its headers or a
small body a few bytes a second fails within a few read timeouts, not at the exchange's 300 s deadline,
while a large file on a slow but honest link still finishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hostile import Exchange, finishes, serving  # type: ignore[import-not-found]
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import ArchiveUnavailableError
from isicarchive.downloads import Job, fetch_file
from isicarchive.transport import RetryPolicy, Transport

#: the speed floor's window: a trickle fails within a few of them (each test waits them out); the honest link
#: below sends 4 kB every 0.1 s, so only a server thread starved for most of a window could trip it
READ_TIMEOUT = 0.5


def patient(url: str) -> Transport:
    """A transport whose exchange deadline (300 s) is far away: only the speed floor can stop a trickle."""
    return Transport(url, timeout=(2.0, READ_TIMEOUT), policy=RetryPolicy(retries=1, backoff=0.001, body_retries=1),
                     deadline=300.0)


def trickle(opening: bytes, drip: bytes, pause: float = 0.2):  # noqa: ANN201
    def answer(exchange: Exchange) -> None:
        exchange.write(opening)
        exchange.endless(drip, pause=pause)
    return answer


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 272\r\n\r\n["
IMAGE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 631\r\n\r\n\xff\xd8\xff"


@pytest.mark.parametrize(("part", "opening", "drip"), [
    ("a 272-byte JSON answer", JSON_HEAD, b" "),
    ("endless headers", b"HTTP/1.1 200 OK\r\nX-Slow: ", b"x"),
], ids=["json-body", "headers"])
def test_a_trickled_answer_fails_within_a_few_read_timeouts(part: str, opening: bytes, drip: bytes) -> None:
    with serving(trickle(opening, drip)) as server:
        started = time.monotonic()
        outcome = finishes(lambda: patient(server.url).get_json("image"), within=20)
        took = time.monotonic() - started
    assert isinstance(outcome, ArchiveUnavailableError), outcome
    assert "trickles" in str(outcome)
    assert took < 6 * READ_TIMEOUT, took
    record("hostile server", f"any API request, read timeout {READ_TIMEOUT:g} s, deadline 300 s",
           f"{part} at 5 bytes/s",
           f"ArchiveUnavailableError naming the trickle after {took:.1f} s (was: the 300 s deadline)")


def test_a_trickled_image_download_fails_within_a_few_read_timeouts(tmp_path: Path) -> None:
    job = Job("ISIC_0000001", "file", lambda ctype: tmp_path / "ISIC_0000001.jpg", tmp_path / ".ISIC_0000001.part",
              631)
    with serving(trickle(IMAGE_HEAD, b"\0")) as server:
        started = time.monotonic()
        outcome = finishes(lambda: fetch_file(patient(server.url), job), within=20)
        took = time.monotonic() - started
    assert isinstance(outcome, ArchiveUnavailableError) and "trickles" in str(outcome), outcome
    assert took < 6 * READ_TIMEOUT, took
    assert not (tmp_path / "ISIC_0000001.jpg").exists()
    record("hostile server", f"image download, read timeout {READ_TIMEOUT:g} s", "a 631-byte image at 5 bytes/s",
           f"ArchiveUnavailableError after {took:.1f} s; no file kept")


def test_a_large_file_on_a_slow_honest_link_still_finishes(tmp_path: Path) -> None:
    content = b"\xff\xd8\xff" + bytes(range(256)) * 300  # 76.8 kB
    head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(content)}\r\n\r\n".encode()

    def answer(exchange: Exchange) -> None:
        exchange.write(head)
        for start in range(0, len(content), 4096):  # 4 kB every 0.1 s: 40 kB/s, 2 s in all
            exchange.write(content[start:start + 4096])
            time.sleep(0.1)

    job = Job("ISIC_0000001", "file", lambda ctype: tmp_path / "ISIC_0000001.jpg", tmp_path / ".ISIC_0000001.part",
              len(content))
    with serving(answer) as server:
        started = time.monotonic()
        outcome = finishes(lambda: fetch_file(patient(server.url), job), within=30)
        took = time.monotonic() - started
    assert not isinstance(outcome, BaseException), outcome
    assert (tmp_path / "ISIC_0000001.jpg").read_bytes() == content
    record("slow link", f"image download, read timeout {READ_TIMEOUT:g} s",
           "77 kB at 40 kB/s (longer than the read timeout)",
           f"finished whole in {took:.1f} s: the speed floor (1 KiB/s) leaves honest slow links alone")


def test_a_gzip_encoded_download_stops_at_its_announced_length(tmp_path: Path) -> None:
    import zlib

    # 200 MB of zeros in one gzip member, about 870 KB on the wire: made a megabyte at a time at the fastest
    # level (level 6 sends 190 KB but cost 1.7 s of CPU); it decodes to 200 times the limit below
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(1_000_000)
    bomb = packer.compress(b"\xff\xd8\xff") + b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()

    def answer(exchange: Exchange) -> None:
        exchange.send(200, bomb, {"Content-Encoding": "gzip"}, "image/jpeg")

    job = Job("ISIC_0000001", "file", lambda ctype: tmp_path / "ISIC_0000001.jpg", tmp_path / ".ISIC_0000001.part")
    sizes: list[int] = []
    with serving(answer) as server:
        outcome = finishes(lambda: fetch_file(patient(server.url), job, on_bytes=sizes.append), within=30)
    limit = len(bomb) + max(len(bomb) // 8, 64 * 1024)
    assert isinstance(outcome, ArchiveUnavailableError) and f"more than the {limit} bytes" in str(outcome), outcome
    assert sum(sizes) <= limit and not list(tmp_path.iterdir())
    record("hostile server", "image download (no size in the record)",
           f"gzip-encoded despite identity asked: {len(bomb) // 1000} KB on the wire, 200 MB decoded",
           f"stopped at the encoded length plus 1/8 ({sum(sizes) // 1000} KB written, was 20x: "
           f"{20 * len(bomb) // 1_000_000} MB), nothing kept")
