"""v2 metadata at archive scale: disjoint searches walked in parallel, resumable, one request when nothing is new."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from isicarchive import ArchiveUnavailableError, IsicApi
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture
def server() -> Any:
    # ids ISIC_0000000 … ISIC_0001199: partitions ISIC_00 (everything) … the rest empty; a wider id spread below
    with LocalArchive(seed=29, config=ArchiveConfig(images=1200, datasets=2, private_datasets=0)) as archive:
        yield archive


def spread(archive: LocalArchive) -> None:
    """Give the images ids across all hundred partitions, as the real archive's are."""
    for n, image in enumerate(archive.data.images):
        image["name"] = f"ISIC_{(n * 8353) % 10**7:07d}"
    archive.data._index()


def test_partitions_in_parallel_give_every_record_once(server: LocalArchive, tmp_path: Path) -> None:
    spread(server)
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    server.clear_log()
    records = api.cache_images()
    assert sorted(records) == sorted(im["name"] for im in server.data.visible_images(None))
    searches = server.requests(r"/images/search/$")
    assert len({r.query["query"] for r in searches}) >= 100  # ISIC_00* … ISIC_99*, split where crowded
    assert not list((tmp_path).rglob(".sync/*"))  # a finished sync leaves no checkpoint
    server.clear_log()
    again = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    assert again.cache_images() == records and len(server.log) == 1  # nothing new: one request


def test_an_interrupted_sync_resumes_where_it_stopped(server: LocalArchive, tmp_path: Path) -> None:
    spread(server)
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False, retries=0)
    api.context.backend.sync_workers = 1  # type: ignore[attr-defined]  # partitions in order: the cut is exact
    rule = server.faults.add("status", r"/images/search/$", query=r"isic_id:ISIC_[5-9]", status=500)
    with pytest.raises(ArchiveUnavailableError):
        api.cache_images()
    assert rule.fired >= 1
    server.faults.clear()
    server.clear_log()
    resumed = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    records = resumed.cache_images()
    assert sorted(records) == sorted(im["name"] for im in server.data.visible_images(None))
    asked = {r.query["query"][len("isic_id:"):len("isic_id:") + 7] for r in server.requests(r"/images/search/$")}
    assert asked == {f"ISIC_{n:02d}" for n in range(50, 100)}  # the first half came from the checkpoint


def test_crowded_partitions_are_split_by_the_next_digit(server: LocalArchive, tmp_path: Path) -> None:
    # sequential ids (ISIC_0000000 …) all fall into ISIC_00*: it is split until partitions are small
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    api.context.backend.sync_partition_size = 150  # type: ignore[attr-defined]
    server.clear_log()
    records = api.cache_images()
    assert sorted(records) == sorted(im["name"] for im in server.data.visible_images(None))
    queries = {r.query["query"] for r in server.requests(r"/images/search/$")}
    # ISIC_00* (1,200 ids) → ISIC_000* (1,200) → ISIC_0000* (1,000) and ISIC_0001* (200) → ISIC_00000* (100 each)
    assert {"isic_id:ISIC_00*", "isic_id:ISIC_000*", "isic_id:ISIC_0000*", "isic_id:ISIC_00001*"} <= queries
    assert "isic_id:ISIC_000000*" not in queries  # 100 ids: small enough


def test_ids_of_another_form_fall_back_to_the_plain_walk(server: LocalArchive, tmp_path: Path) -> None:
    server.data.images[0]["name"] = "ISIC_X000000"  # in no partition
    server.data._index()
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    assert "ISIC_X000000" in api.cache_images()


def test_cursor_pages_stay_right_when_many_searches_push_kept_listings_out(server: LocalArchive) -> None:
    import requests

    server.data.view_limit = 3  # every listing is dropped almost at once
    names: list[str] = []
    url = f"{server.v2_url}/images/search/?query=isic_id:ISIC_0000*&limit=37"
    while url:
        page = requests.get(url, timeout=10).json()
        names += [r["isic_id"] for r in page["results"]]
        url = page["next"]
        for digit in range(4):  # other partitions asked in between
            requests.get(f"{server.v2_url}/images/search/", params={"query": f"isic_id:ISIC_000{digit}*"}, timeout=10)
    expected = sorted((im for im in server.data.visible_images(None) if im["name"].startswith("ISIC_0000")),
                      key=lambda im: im["created"])
    assert names == [im["name"] for im in expected]


def test_the_cyclic_collector_waits_while_records_are_built_and_runs_again_after(server: LocalArchive,
                                                                               tmp_path: Path) -> None:
    # a third of a 200,000-record sync went to collections that found nothing (docs/benchmarks.md)
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    gc.callbacks.append(count)
    try:
        assert len(api.cache_images()) == 1200
        during = len(collections)
        assert gc.isenabled()
        garbage = [[] for _ in range(5000)]  # enough new containers to start a collection again
        del garbage
    finally:
        gc.callbacks.remove(count)
    # one collection when the pause ends (the records built meanwhile are young); none while they were built
    assert during <= 1 and len(collections) > during


def test_a_collector_the_user_turned_off_stays_off(server: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    gc.disable()
    try:
        api.cache_images()
        assert not gc.isenabled()
    finally:
        gc.enable()
