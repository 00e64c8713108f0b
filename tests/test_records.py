"""The compact record store (isicarchive.records): records kept as JSON bytes read back equal."""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
from pathlib import Path

import pytest

from isicarchive.records import RecordStore, read_lines, write_lines
from isicarchive.testing import ArchiveConfig, ArchiveData


class Text(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


def test_records_read_back_equal_to_the_parsed_json() -> None:
    data = ArchiveData(seed=5, config=ArchiveConfig(images=120))
    records = {r["_id"]: r for r in data.images}
    as_sent = json.loads(json.dumps(records))  # what a page of the archive parses into
    store = RecordStore.of_json(as_sent.items())
    assert len(store) == len(records) and list(store) == list(records)
    assert all(type(held) is bytes for _, held in store.held())  # kept as JSON, not as dicts
    assert dict(store.items()) == as_sent and store == as_sent
    first = next(iter(records))
    assert store[first] is not store[first]  # a fresh dict per read: changing one changes nothing stored
    assert store.names == {r["name"]: key for key, r in records.items()}
    assert store.subset([first, "no such id"]) == {first: as_sent[first]}


@pytest.mark.parametrize("odd", [(1, 2), float("nan"), float("inf"), {5: "int key"}, Text("x"),
                                 datetime.date(2024, 1, 2), Point(1), 2 ** 70, {1, 2}])
def test_what_json_cannot_hold_exactly_is_kept_as_it_is(odd: object) -> None:
    record = {"name": "ISIC_0000001", "meta": {"clinical": {"value": odd}}}
    store = RecordStore({"a": record, "b": {"plain": [1, "x", None, 2.5]}})
    kept = store["a"]
    assert kept["meta"]["clinical"]["value"] is odd  # the very object, never a lossy JSON form
    assert type(dict(store.held())["b"]) is bytes and store["b"] == {"plain": [1, "x", None, 2.5]}
    store["c"] = "not a record"
    assert store["c"] == "not a record" and store.names == {"ISIC_0000001": "a"}


def test_the_cache_file_is_json_read_a_line_at_a_time(tmp_path: Path) -> None:
    records = {f"{i:024x}": {"name": f"ISIC_{i:07d}", "meta": {"clinical": {"age_approx": i % 90, "x": None}},
                             "text": "line\nbreak \u2028 \"quoted\""} for i in range(2500, 0, -1)}
    store = RecordStore(records)
    store["kept"] = {"name": "odd", "value": (1, 2)}  # a record kept as a dict is written as JSON too
    path = tmp_path / "imcache.json.gz"
    with gzip.open(path, "wb") as fh:
        write_lines(fh, store)
    with gzip.open(path, "rb") as fh:
        whole = json.load(fh)  # any JSON reader reads it whole (the original package did)
    assert list(whole) == sorted(whole) and whole == {**records, "kept": {"name": "odd", "value": [1, 2]}}
    again = read_lines(path)
    assert again is not None and again == whole and again.names["odd"] == "kept"
    other = tmp_path / "other.json.gz"
    with gzip.open(other, "wt") as fh:
        json.dump(records, fh)  # one line: another writer's shape, read whole by the caller
    assert read_lines(other) is None
    cut = tmp_path / "cut.json.gz"
    with gzip.open(path, "rb") as fh, gzip.open(cut, "wb") as out:
        out.write(fh.read()[:-40])
    with pytest.raises(ValueError):
        read_lines(cut)
