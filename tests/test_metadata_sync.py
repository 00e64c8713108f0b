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
    # ids ISIC_0000000 … ISIC_0000599: partitions ISIC_00 (everything) … the rest empty; a wider id spread below.
    # 600 records: past the five pages (500) that one cursor walks, so the sync is partitioned
    with LocalArchive(seed=29, config=ArchiveConfig(images=600, datasets=2, private_datasets=0)) as archive:
        yield archive


@pytest.fixture
def few_pages() -> Any:
    # 240 records, walked with one cursor (a fifth of the CPU of a partitioned sync)
    with LocalArchive(seed=29, config=ArchiveConfig(images=240, datasets=2, private_datasets=0)) as archive:
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


def test_an_archive_of_a_few_pages_is_walked_with_one_cursor(tmp_path: Path) -> None:
    # 100 prefix searches for 240 records cost 24 parallel requests a round for five rounds; three pages do
    with LocalArchive(seed=29, config=ArchiveConfig(images=240, datasets=2, private_datasets=0)) as archive:
        spread(archive)
        api = IsicApi(hostname=archive.url, api_version=2, cache_folder=tmp_path, progress=False)
        archive.clear_log()
        records = api.cache_images()
        assert sorted(records) == sorted(im["name"] for im in archive.data.visible_images(None))
        assert not archive.requests(r"/images/search/$")
        assert len(archive.requests(r"/images/$")) == 1 + 3  # the count, then three pages of 100
        again = IsicApi(hostname=archive.url, api_version=2, cache_folder=tmp_path, progress=False)
        archive.clear_log()
        assert again.cache_images() == records and len(archive.log) == 1  # nothing new: one request


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
    # ISIC_00* (600 ids) → ISIC_000* (600) → ISIC_0000* (600) → ISIC_00000* … ISIC_00005* (100 each)
    assert {"isic_id:ISIC_00*", "isic_id:ISIC_000*", "isic_id:ISIC_0000*", "isic_id:ISIC_00005*"} <= queries
    assert "isic_id:ISIC_000000*" not in queries  # 100 ids: small enough


def test_ids_of_another_form_fall_back_to_the_plain_walk(server: LocalArchive, tmp_path: Path) -> None:
    server.data.images[0]["name"] = "ISIC_X000000"  # in no partition
    server.data._index()
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    assert "ISIC_X000000" in api.cache_images()


def test_cursor_pages_stay_right_when_many_searches_push_kept_listings_out(few_pages: LocalArchive,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    from isicarchive.testing import v2routes

    # 0543d10: a kept listing's cursor positions were kept beside it under id() of the listing.  A listing built
    # after another was dropped could get the dropped one's address, and met its positions: its next cursor
    # pointed into the other search, and once many searches had pushed both out, the page after it was cut at
    # the wrong place.  Whether an address comes back depends on everything allocated in between (the client
    # runs in this process too), so here every object has one id(): the second search's listing gets the
    # first one's, always.  The routes use id() for nothing else.  (Without it the old code passed: the views
    # drop the oldest first, a listing and then its positions, so one client asking in turn never met them apart.)
    monkeypatch.setattr(v2routes, "id", lambda obj: 0, raising=False)
    few_pages.data.view_limit = 8  # both searches' views are kept; the eight searches between pages push them out

    def first_page(prefix: str) -> dict:
        return requests.get(f"{few_pages.v2_url}/images/search/", timeout=10,
                            params={"query": f"isic_id:{prefix}*", "limit": 37}).json()

    first_page("ISIC_00001")  # another partition, its listing kept first
    page = first_page("ISIC_00000")
    names = [r["isic_id"] for r in page["results"]]
    while page["next"]:
        for digit in range(8):  # other partitions asked in between
            first_page(f"ISIC_000020{digit}")
        page = requests.get(page["next"], timeout=10).json()
        names += [r["isic_id"] for r in page["results"]]
    expected = sorted((im for im in few_pages.data.visible_images(None) if im["name"].startswith("ISIC_00000")),
                      key=lambda im: im["created"])
    assert len(expected) == 100  # three pages
    assert names == [im["name"] for im in expected]


def test_the_cyclic_collector_waits_while_records_are_built_and_runs_again_after(server: LocalArchive,
                                                                               tmp_path: Path) -> None:
    # a third of a 200,000-record sync went to collections that found nothing (docs/benchmarks.md)
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    # (the partitioned sync of 600 records: 56 collections while it runs, were the collector not paused)
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    gc.callbacks.append(count)
    try:
        assert len(api.cache_images()) == 600
        during = len(collections)
        assert gc.isenabled()
        garbage = [[] for _ in range(5000)]  # enough new containers to start a collection again
        del garbage
    finally:
        gc.callbacks.remove(count)
    # one collection when the pause ends (the records built meanwhile are young); none while they were built
    assert during <= 1 and len(collections) > during


def test_a_collector_the_user_turned_off_stays_off(few_pages: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=few_pages.url, api_version=2, cache_folder=tmp_path, progress=False)
    gc.disable()
    try:
        api.cache_images()
        assert not gc.isenabled()
    finally:
        gc.enable()


# ------------------------------------------------- partitions as the pieces of the image cache file
def _cache_file(folder: Path) -> Path:
    (found,) = folder.rglob("imcache_*.json.gz")
    return found


def _members(data: bytes) -> int:
    """How many gzip members the bytes hold."""
    import zlib

    count = 0
    while data:
        reader = zlib.decompressobj(wbits=31)
        reader.decompress(data)
        assert reader.eof
        data = reader.unused_data
        count += 1
    return count


def test_a_complete_sync_writes_the_cache_file_from_its_partitions(server: LocalArchive, tmp_path: Path) -> None:
    import gzip
    import io
    import json

    from isicarchive.records import write_lines

    spread(server)
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    records = api.cache_images()
    data = _cache_file(tmp_path).read_bytes()
    expected = io.BytesIO()
    write_lines(expected, records)  # type: ignore[arg-type]
    text = gzip.decompress(data)
    assert text == expected.getvalue()  # the same file as one written whole (any JSON reader reads it)
    assert json.loads(text) == dict(records)
    assert _members(data) > 100  # the partitions' own members, not compressed again
    assert not list(tmp_path.rglob(".sync/*"))


def test_a_damaged_partition_is_fetched_again(server: LocalArchive, tmp_path: Path) -> None:
    spread(server)
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False, retries=0)
    api.context.backend.sync_workers = 1  # type: ignore[attr-defined]
    server.faults.add("status", r"/images/search/$", query=r"isic_id:ISIC_[5-9]", status=500)
    with pytest.raises(ArchiveUnavailableError):
        api.cache_images()
    server.faults.clear()
    kept = sorted(tmp_path.rglob(".sync/*/*.lines.gz"))
    assert len(kept) == 50
    kept[3].write_bytes(kept[3].read_bytes()[:-9] + b"\x00" * 9)  # a torn tail: its CRC fails
    kept[7].write_bytes(b"not gzip")
    server.clear_log()
    with pytest.warns(UserWarning, match="corrupt"):
        records = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False).cache_images()
    assert sorted(records) == sorted(im["name"] for im in server.data.visible_images(None))
    asked = {r.query["query"][len("isic_id:"):len("isic_id:") + 7] for r in server.requests(r"/images/search/$")}
    damaged = {path.name[:7] for path in (kept[3], kept[7])}
    assert asked == {f"ISIC_{n:02d}" for n in range(50, 100)} | damaged


def test_the_cache_file_is_written_whole_when_a_partition_went_away(server: LocalArchive, tmp_path: Path) -> None:
    # another process that finished the same sync removes the partitions before this one writes its file
    import gzip
    import io
    import shutil

    from isicarchive.metadata_sync import SyncedRecords
    from isicarchive.records import write_lines

    spread(server)
    api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
    backend = api.context.backend
    saved = api._store.sync_checkpoint("v2-count-600")
    records = backend._partitioned(None, saved)  # type: ignore[attr-defined]
    assert isinstance(records, SyncedRecords) and records.partitions
    shutil.rmtree(saved.folder)  # type: ignore[union-attr]
    api._store.save_image_cache(records, replace=True)
    expected = io.BytesIO()
    write_lines(expected, records)
    assert gzip.decompress(_cache_file(tmp_path).read_bytes()) == expected.getvalue()


def test_records_outside_their_partition_are_left_out() -> None:
    # a server that ignores the search would hand every partition the same records: the count check
    # then sends the sync to the plain walk, and no record is there twice
    from isicarchive.backends.v2 import _kept

    records = [{"isic_id": "ISIC_0100000", "metadata": {}}, {"isic_id": "ISIC_0200000", "metadata": {}}]
    assert list(_kept(records, "ISIC_01")) == ["ISIC_0100000"]


# --------------------------------------------------------------------------- normalising, remembered
def test_remembered_legacy_terms_keep_each_records_own_values() -> None:
    from isicarchive.backends.v2 import normalise

    def clinical(value: Any) -> dict:
        record = {"isic_id": "ISIC_0000001", "metadata": {"clinical": {"diagnosis_1": "Benign", "diagnosis_2": value}}}
        return normalise(record)["meta"]["clinical"]

    # 1, True and 1.0 are one key of a dict: each record keeps its own value as its diagnosis
    assert [type(clinical(v)["diagnosis"]) for v in (1, True, 1.0)] == [int, bool, float]
    assert clinical("Benign melanocytic proliferations")["diagnosis"] == "Benign melanocytic proliferations"
    assert clinical(["a list"])["diagnosis"] == ["a list"]  # a TypeError before: no key of the legacy table
    odd = {"isic_id": "ISIC_0000002", "metadata": {"clinical": {"diagnosis_1": ["x"], "anatom_site_special": {"y": 1}}}}
    assert normalise(odd)["meta"]["clinical"]["diagnosis"] == ["x"]
    first = clinical("Benign melanocytic proliferations")
    first["diagnosis"] = "changed"  # a record's dict is its own: the remembered answer is not changed
    assert clinical("Benign melanocytic proliferations")["diagnosis"] == "Benign melanocytic proliferations"


def test_decimals_an_archive_sends_as_text_become_numbers_once_json_cannot_hold_them_exactly() -> None:
    from isicarchive.backends.v2 import _kept

    records = [{"isic_id": "ISIC_0000001", "metadata": {"clinical": {"mel_thick_mm": "1e999"}}},
               {"isic_id": "ISIC_0000002", "metadata": {"clinical": {"mel_thick_mm": "0.80",
                                                                      "clin_size_long_diam_mm": "x"}}}]
    store = _kept(records)
    held = dict(store.held())
    assert type(held["ISIC_0000001"]) is dict  # an infinity: kept as it is, not as lossy JSON
    assert store["ISIC_0000001"]["meta"]["clinical"]["mel_thick_mm"] == float("inf")
    assert type(held["ISIC_0000002"]) is bytes
    assert store["ISIC_0000002"]["metadata"]["clinical"] == {"mel_thick_mm": 0.8, "clin_size_long_diam_mm": "x"}


# ------------------------------------------------------------------------------- reading the cache file
def test_the_cache_file_is_read_in_blocks_that_split_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    from isicarchive import records as records_module
    from isicarchive.records import RecordStore, read_lines, write_lines

    store = RecordStore({f"ISIC_{i:07d}": {"name": f"ISIC_{i:07d}", "x": "é" * (i % 7), "quoted\"key": i}
                         for i in range(300)})
    store["odd \"id\""] = {"name": "escaped"}  # a key with an escaped quote: the slower path
    path = tmp_path / "imcache.json.gz"
    with gzip.open(path, "wb") as fh:
        write_lines(fh, store)
    for block in (1, 7, 100, 1 << 20):
        monkeypatch.setattr(records_module, "READ_BLOCK", block)
        read = read_lines(path)
        assert read is not None and dict(read.items()) == dict(store.items()) and read.names == store.names
    text = gzip.decompress(path.read_bytes())
    for broken in (text[:-1], text + b"\n", text[:-2] + b"\n}\n}", text.replace(b'"ISIC_0000007":', b'"ISIC_0000007"')):
        path.write_bytes(gzip.compress(broken))
        with pytest.raises(ValueError):
            read_lines(path)


def test_a_record_nested_too_deep_is_refused_where_the_sync_keeps_it() -> None:
    # the sync's pages are not encoded again to check their depth: the records it keeps are checked as encoded
    import orjson

    from isicarchive.backends.v2 import _kept
    from isicarchive.errors import ArchiveResponseError

    deep = orjson.loads(b"[" * 300 + b"]" * 300)  # as a page parsed without the depth check holds it
    records = [{"isic_id": "ISIC_0000001", "metadata": {}}, {"isic_id": "ISIC_0000002", "metadata": {"x": deep}}]
    with pytest.raises(ArchiveResponseError, match="ISIC_0000002.*nested deeper than 254 levels"):
        _kept(records)
