"""The local archive's per-request cost: no Nagle stall, listings linear in the number of records."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from isicarchive import search as search_module
from isicarchive.testing import ArchiveConfig, LocalArchive, v1routes


def test_responses_are_sent_with_nagle_off() -> None:
    # Headers and body leave in two writes; with Nagle on, the second waits ~40 ms for the
    # client's delayed ACK on every kept-alive request.  Read the option off the server's own sockets.
    seen: list[int] = []
    with LocalArchive(seed=1, config=ArchiveConfig(images=5)) as archive:
        handler = archive._server.RequestHandlerClass  # type: ignore[union-attr]
        original = handler.setup

        def recording_setup(self: Any) -> None:
            original(self)
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        handler.setup = recording_setup
        with requests.Session() as session:
            for _ in range(3):
                assert session.get(f"{archive.v1_url}/image", params={"limit": 1}, timeout=5).ok
    assert seen and all(seen)


def page_through_v1(archive: LocalArchive, limit: int) -> list[str]:
    names: list[str] = []
    offset = 0
    while True:
        page = requests.get(f"{archive.v1_url}/image", params={"limit": limit, "offset": offset}, timeout=10).json()
        names += [im["name"] for im in page]
        if len(page) < limit:
            return names
        offset += limit


class CallsOfMadeFunctions:
    """Wraps a factory of functions (a sort key maker, a query compiler) and counts calls of what it makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
        self.calls = 0
        real = getattr(module, name)

        def factory(*args: Any) -> Any:
            made = real(*args)

            def counted(*inner: Any) -> Any:
                self.calls += 1
                return made(*inner)
            return counted

        monkeypatch.setattr(module, name, factory)


def test_v1_listing_sorts_once_not_once_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    sort_keys = CallsOfMadeFunctions(monkeypatch, v1routes, "_sort_key")
    with LocalArchive(seed=2, config=ArchiveConfig(images=600)) as archive:
        names = page_through_v1(archive, limit=20)  # 31 pages
        assert names == sorted(im["name"] for im in archive.data.visible_images(None))
        assert sort_keys.calls <= 600  # one sort; per-page sorting made this 31 × 600
        # new content is listed: views are dropped when the archive changes
        archive.data.add_images(3)
        assert len(page_through_v1(archive, limit=200)) == len(archive.data.visible_images(None)) > len(names)


def test_v2_search_is_evaluated_once_for_all_its_cursor_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    predicates = CallsOfMadeFunctions(monkeypatch, search_module, "compile_query")
    with LocalArchive(seed=3, config=ArchiveConfig(images=300)) as archive:
        url: str | None = f"{archive.v2_url}/images/search/"
        params: dict[str, Any] | None = {"query": "age_approx:[0 TO 100]", "limit": 10}
        found: list[str] = []
        while url:
            body = requests.get(url, params=params, timeout=10).json()
            found += [r["isic_id"] for r in body["results"]]
            url, params = body["next"], None
        assert len(found) == len(set(found)) > 10
        assert 0 < predicates.calls <= 300  # one pass; per-page evaluation made this pages × 300


def test_the_log_lists_requests_in_the_order_they_arrived() -> None:
    # a handler logs after it answers: a redirect's follow-up, answered on another connection, can be logged
    # first (this made a redirect test flaky); the log is ordered by arrival
    from isicarchive.testing.server import RequestRecord

    archive = LocalArchive(seed=1, config=ArchiveConfig(images=1))
    for path, started in (("/second", 2.0), ("/first", 1.0)):
        archive._begin_request()
        archive._end_request(RequestRecord("GET", path, {}, 200, None, 0, None, started))
    assert [r.path for r in archive.log] == ["/first", "/second"]
