"""select_images: the columnar index gives the original per-record answers."""

from __future__ import annotations

import copy
import gzip
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from isicarchive import QueryError
from isicarchive.records import RecordStore
from isicarchive.selection import ImageIndex, normalise_criteria
from isicarchive.testing import ArchiveConfig, ArchiveData


# --------------------------------------------------------- the reference
# A plain per-record evaluation written from the original package's documented
# behaviour (getxattr + selected), independent of isicarchive.selection.
def ref_lookup(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if "." not in name:
        try:
            if isinstance(obj, dict):
                return len(obj) if name == "#" else obj.get(name)
            if name.lstrip("-").isdigit():
                return obj[int(name)]
            if isinstance(obj, list):
                return len(obj) if name == "#" else getattr(obj, name)
            return getattr(obj, name)
        except Exception:
            return None
    if isinstance(obj, dict) and name in obj:
        return obj[name]
    *walk, last = name.split(".")
    for part in walk:
        obj = ref_lookup(obj, part)
        if obj is None:
            return None
    return ref_lookup(obj, last)


REF_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda val, test: val == test, "!=": lambda val, test: val != test,
    "<": lambda val, test: val < test, "<=": lambda val, test: val <= test,
    ">": lambda val, test: val > test, ">=": lambda val, test: val >= test,
    "in": lambda val, test: val in test, "not in": lambda val, test: val not in test,
    "ni": lambda val, test: test in val, "not ni": lambda val, test: test not in val,
    "match": lambda val, test: re.search(test, val) is not None,
    "~": lambda val, test: re.search(test, val) is not None,
    "not match": lambda val, test: re.search(test, val) is None,
    "!~": lambda val, test: re.search(test, val) is None,
    "is": lambda val, test: val is test, "not is": lambda val, test: val is not test,
    "is None": lambda val, test: val is None, "not is None": lambda val, test: val is not None,
}


def ref_selected(record: dict, criteria: list) -> bool:
    """The original's per-record evaluation, written plainly: Python's operator, False where it raises."""
    if len(criteria) == 3 and isinstance(criteria[0], str):
        criteria = [criteria]
    try:
        for field, op, test in criteria:
            if not REF_OPS[op](ref_lookup(record, field), test):
                return False
    except Exception:
        return False
    return True


def ref_select(records: dict, criteria: list) -> set[str]:
    if len(criteria) == 2 and criteria[1] in ("is None", "not is None"):
        criteria = [*criteria, None]  # the documented two-element form of unary operators
    return {k for k, r in records.items() if ref_selected(r, criteria)}


# -------------------------------------------------------------- records
def odd_records() -> dict[str, dict]:
    """Generated archive records plus hand-made awkward ones."""
    records = {r["_id"]: copy.deepcopy(r) for r in ArchiveData(seed=9, config=ArchiveConfig(images=300)).images}
    ids = list(records)
    records[ids[0]]["meta"]["clinical"]["age_approx"] = "55"  # a string where numbers live
    records[ids[1]]["meta"]["clinical"]["age_approx"] = 55.0
    records[ids[2]]["meta"]["clinical"]["melanocytic"] = 1  # 1 == True, but 1 is not True
    records[ids[3]]["meta"]["clinical"]["sex"] = ["male"]  # a list where strings live
    records[ids[4]]["meta"]["clinical"] = "unknown"  # a string where a dict lives
    records[ids[5]]["notes"]["tags"] = "ISBI 2016: Training"  # substring semantics for ni
    records[ids[6]]["meta"]["unstructured"]["biopsy done"] = None
    records[ids[7]]["meta"]["acquisition"]["pixelsX"] = 2 ** 60  # beyond float precision
    records[ids[8]]["meta"]["clinical"]["age_approx"] = float("nan")
    records[ids[9]]["meta"]["clinical"]["age_approx"] = True
    del records[ids[10]]["notes"]
    records[ids[11]]["meta.flat key"] = "dotted root key"
    records[ids[12]]["notes.tags.#"] = 99  # what a look-up of notes.tags.# finds in this record
    return records


BATTERY: list[Any] = [
    ["meta.clinical.diagnosis", "==", "melanoma"],
    ["meta.clinical.diagnosis", "!=", "nevus"],
    ["meta.clinical.diagnosis", "==", None],
    ["meta.clinical.diagnosis", "!=", None],
    ["meta.clinical.age_approx", ">=", 50],
    ["meta.clinical.age_approx", ">", 50.5],
    ["meta.clinical.age_approx", "<", 30],
    ["meta.clinical.age_approx", "<=", 30],
    ["meta.clinical.age_approx", "==", 55],
    ["meta.clinical.age_approx", "!=", 55],
    ["meta.clinical.age_approx", ">=", "50"],
    ["meta.clinical.age_approx", "<", True],
    ["meta.clinical.age_approx", "in", [20, 25, 55]],
    ["meta.clinical.age_approx", "not in", [20, 25, 55]],
    ["meta.clinical.age_approx", "is None", None],
    ["meta.clinical.age_approx", "not is None", None],
    ["meta.clinical.age_approx", "is None"],
    ["meta.clinical.sex", "==", "male"],
    ["meta.clinical.sex", "<=", "male"],
    ["meta.clinical.sex", ">", "female"],
    ["meta.clinical.sex", "in", "female"],
    ["meta.clinical.sex", "in", ["male", None]],
    ["meta.clinical.sex", "ni", "ale"],
    ["meta.clinical.sex", "not ni", "fe"],
    ["meta.clinical.sex", "match", "^fe"],
    ["meta.clinical.sex", "~", "male$"],
    ["meta.clinical.sex", "not match", "^fe"],
    ["meta.clinical.sex", "!~", "x"],
    ["meta.clinical.melanocytic", "is", True],
    ["meta.clinical.melanocytic", "not is", True],
    ["meta.clinical.melanocytic", "==", True],
    ["meta.clinical.melanocytic", "==", 1],
    ["meta.clinical.melanocytic", "is", False],
    ["meta.clinical.melanocytic", "is", None],
    ["meta.clinical.melanocytic", "not is", None],
    ["meta.clinical.melanocytic", ">", 0],
    ["notes.tags", "ni", "ISBI 2017: Training"],
    ["notes.tags", "not ni", "ISBI 2017: Training"],
    ["notes.tags", "ni", "ISBI 2016"],
    ["notes.tags", "==", []],
    ["notes.tags", "!=", []],
    ["notes.tags", "match", "ISBI"],
    ["notes.tags.0", "==", "ISBI 2016: Training"],
    ["notes.tags.#", ">=", 2],
    ["notes.tags.-1", "match", "Challenge"],
    ["notes.tags.#", "==", 99],
    # a level above the parent holds text in one record (its attribute), the parent holds dicts
    ["meta.clinical.upper.__name__", "==", "upper"],
    ["meta.clinical.#", ">", 3],
    ["notes.reviewed.accepted", "is", True],
    ["meta.unstructured.biopsy done", "==", "Y"],
    ["meta.unstructured.biopsy done", "is None", None],
    ["meta.unstructured.biopsy done", "!=", "Y"],
    ["meta.unstructured", "ni", "biopsy done"],
    ["meta.unstructured", "not ni", "lesion_id"],
    ["meta.acquisition.pixelsX", ">=", 2048],
    ["meta.acquisition.pixelsX", ">", 2 ** 59],
    ["meta.acquisition.pixelsX", "==", 160],
    ["meta.acquisition.image_type", "==", "dermoscopic"],
    ["meta.acquisition.dermoscopic_type", "in", ["contact polarized", "contact non-polarized"]],
    ["meta.clinical.nonexistent", "==", None],
    ["meta.clinical.nonexistent", "!=", 3],
    ["meta.clinical.nonexistent", ">", 3],
    ["meta.clinical.nonexistent.deeper", "is None", None],
    ["meta.clinical.sex.upper", "not is None", None],
    ["meta.clinical.sex.real", "is None", None],
    ["meta.flat key", "==", "dotted root key"],
    ["dataset.name", "match", "^(UDA|MSK)"],
    ["dataset", "ni", "name"],
    # dict-key membership (vectorised): a key present with a None value, a key holding a dict, a dict path
    # that is a string in one record (substring there), keys that exist nowhere
    ["meta.clinical", "ni", "diagnosis"],
    ["meta.clinical", "not ni", "diagnosis"],
    ["meta.clinical", "ni", "unk"],
    ["meta.unstructured", "ni", "biopsy done"],
    ["meta", "ni", "clinical"],
    ["meta", "not ni", "clinical"],
    ["meta.acquisition", "ni", "no such key"],
    ["meta.acquisition", "not ni", "no such key"],
    # string ranges (vectorised by sorted order) and literal regular expressions (numpy string functions)
    ["_id", ">", "5a"],
    ["_id", "<=", "54"],
    ["meta.clinical.sex", "<", "m"],
    ["meta.clinical.age_approx", ">", "5"],
    ["name", "match", "^ISIC_000012"],
    ["name", "~", "00012"],
    ["name", "!~", "^(ISIC_00001|ISIC_00002)"],
    ["meta.clinical.diagnosis", "match", "^(mel|bas)"],
    ["notes.tags", "not match", "ISBI"],
    ["name", "==", "ISIC_0000007"],
    ["name", ">=", "ISIC_0000290"],
    ["_id", "in", []],
    ["meta.clinical.mel_thick_mm", ">", 1.0],
    ["meta.clinical.clin_size_long_diam_mm", "<=", 10],
    [["meta.clinical.diagnosis", "==", "nevus"], ["meta.clinical.age_approx", ">=", 40],
     ["meta.clinical.sex", "==", "female"]],
    [["meta.acquisition.pixelsX", ">=", 100], ["meta.acquisition.image_type", "==", "dermoscopic"],
     ["meta.clinical.diagnosis", "!=", "nevus"]],
    [["notes.tags", "ni", "Challenge 2019: Training"], ["meta.clinical.melanocytic", "is", False]],
    [["meta.clinical.benign_malignant", "==", "malignant"], ["meta.clinical.age_approx", "is None", None]],
]


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    return odd_records()


@pytest.fixture(scope="module")
def index(records: dict[str, dict]) -> ImageIndex:
    return ImageIndex(records)


def test_battery_is_large_enough() -> None:
    assert len(BATTERY) >= 60
    used = {c[1] for crit in BATTERY for c in (crit if isinstance(crit[0], list) else [crit])}
    assert used >= {"==", "!=", "<", "<=", ">", ">=", "in", "not in", "ni", "not ni", "match", "~",
                    "not match", "!~", "is", "not is", "is None", "not is None"}


@pytest.mark.parametrize("criteria", BATTERY, ids=[json.dumps(c)[:70] for c in BATTERY])
def test_same_answer_as_per_record_evaluation(index: ImageIndex, records: dict, criteria: Any) -> None:
    expected = ref_select(records, criteria)
    got = set(index.select(criteria))
    assert got == expected


def test_battery_selects_something_and_not_everything(index: ImageIndex, records: dict) -> None:
    sizes = [len(ref_select(records, c)) for c in BATTERY]
    assert sum(0 < s < len(records) for s in sizes) >= 40  # the battery discriminates


def test_sub_selection_narrows(index: ImageIndex, records: dict) -> None:
    first = index.select(["meta.clinical.diagnosis", "!=", "nevus"])
    second = index.select(["meta.clinical.age_approx", ">=", 50], within=first.keys())
    expected = ref_select(records, [["meta.clinical.diagnosis", "!=", "nevus"], ["meta.clinical.age_approx", ">=", 50]])
    assert set(second) == expected
    assert set(second) <= set(first)


def test_incremental_add_matches_rebuild(records: dict) -> None:
    items = list(records.items())
    grown = ImageIndex(dict(items[:100]))
    grown.add(dict(items[100:]))
    criteria = [["meta.clinical.age_approx", ">=", 50], ["notes.tags", "ni", "ISBI 2017: Training"]]
    assert set(grown.select(criteria)) == ref_select(records, criteria)
    replaced = dict(items[:1])
    key = next(iter(replaced))
    changed = copy.deepcopy(replaced[key])
    changed["name"] = "RENAMED"
    grown.add({key: changed})
    assert set(grown.select(["name", "==", "RENAMED"])) == {key}
    assert len(grown) == len(records)


def test_selections_find_their_records_by_id_after_records_are_appended(records: dict) -> None:
    # the index's id -> row table is filled when first asked for, and with the appended rows when asked again
    items = list(records.items())
    grown = ImageIndex(dict(items[:100]))
    criterion = ["meta.clinical.age_approx", ">=", 50]
    before = grown.select(criterion)
    first = next(iter(before))
    assert first in before and before[first] == records[first]
    grown.add(dict(items[100:]))
    after = grown.select(criterion)
    expected = ref_select(records, criterion)
    assert set(after) == expected and all(key in after and after[key] == records[key] for key in expected)
    later = [key for key, _ in items[150:200]]
    assert set(grown.select(criterion, within=later)) == expected & set(later)
    assert first in before and not any(key in before for key, _ in items[100:])


@pytest.mark.parametrize("bad", [
    [], "meta.x == 1", ["meta.x", "equals", 1], ["meta.x", "=="], ["meta.x", "==", 1, 2], [3, "==", 1],
    [["meta.x", "==", 1], "oops"], ["meta.x", "in", 5], ["meta.x", "match", 5], ["meta.x", "match", "(unclosed"],
    ["", "==", 1],
])
def test_bad_criteria_raise_query_error(bad: Any) -> None:
    with pytest.raises(QueryError):
        normalise_criteria(bad)


def test_query_error_is_a_value_error_naming_the_criterion() -> None:
    with pytest.raises(ValueError, match="equals"):
        normalise_criteria(["meta.clinical.sex", "equals", "male"])


def test_selection_hand_off(index: ImageIndex) -> None:
    sel = index.select(["meta.clinical.diagnosis", "==", "melanoma"])
    assert sel.ids() == list(sel.keys()) and len(sel.names()) == len(sel)
    assert "Selection(" in repr(sel) and "<table>" in sel._repr_html_()
    pd = pytest.importorskip("pandas")
    frame = sel.to_dataframe(["name", "meta.clinical.age_approx"])
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == sel.ids()


def test_real_dump_differential() -> None:
    from fixture_paths import IMCACHE_DUMP

    if not IMCACHE_DUMP.exists():
        pytest.skip("../shared/fixtures is not present")
    with gzip.open(IMCACHE_DUMP, "rb") as fh:
        real = orjson.loads(fh.read())
    index = ImageIndex(real)
    reference = ColumnReference(real)
    for criteria in BATTERY:
        assert set(index.select(criteria)) == reference.select(criteria), criteria


class ColumnReference:
    """ref_select over many records, computed a column at a time (91 criteria over the 23,906 real
    records took 6.7 s record by record).  A dotted field's values come from its parent path's, one
    ref_lookup of the last part each, exactly as ref_lookup walks a path (a record with the dotted
    name as a key of its own gets that value, as there).  A record passes a list of criteria when it
    passes each, as in ref_selected, where a False or an exception ends the record's evaluation.

    Each criterion is evaluated once per distinct value of a field: equal values of one type (hashable:
    JSON's scalars) give every operator the same answer, and so does ``is`` against True, False or None
    (singletons); lists and dicts are each evaluated alone, as is ``is`` against anything else."""

    def __init__(self, records: dict) -> None:
        self.records = records
        self.keys = list(records)
        self.walks: dict[tuple[str, ...], dict[str, Any]] = {}
        self.columns: dict[str, dict[str, Any]] = {}
        self.coded: dict[str, tuple[np.ndarray, list[Any]]] = {}

    def _walk(self, parts: tuple[str, ...]) -> dict[str, Any]:
        walked = self.walks.get(parts)
        if walked is None:
            if len(parts) == 1:
                walked = {k: ref_lookup(r, parts[0]) for k, r in self.records.items()}
            else:
                walked = {k: None if v is None else ref_lookup(v, parts[-1])
                          for k, v in self._walk(parts[:-1]).items()}
            self.walks[parts] = walked
        return walked

    def _column(self, field: str) -> dict[str, Any]:
        column = self.columns.get(field)
        if column is None:
            walked = self._walk(tuple(field.split(".")))
            column = self.columns[field] = {
                k: r[field] if "." in field and isinstance(r, dict) and field in r else walked[k]
                for k, r in self.records.items()}
        return column

    def _codes(self, field: str) -> tuple[np.ndarray, list[Any]]:
        """A code per record (in the records' order) into the field's distinct values (see above)."""
        found = self.coded.get(field)
        if found is None:
            distinct: list[Any] = []
            seen: dict[tuple[type, Any], int] = {}
            codes = []
            for value in self._column(field).values():
                if isinstance(value, (list, dict)):
                    codes.append(len(distinct))
                    distinct.append(value)
                else:
                    codes.append(seen.setdefault((type(value), value), len(distinct)))
                    if codes[-1] == len(distinct):
                        distinct.append(value)
            found = self.coded[field] = (np.asarray(codes, np.int64), distinct)
        return found

    def select(self, criteria: list) -> set[str]:
        if len(criteria) == 2 and criteria[1] in ("is None", "not is None"):
            criteria = [*criteria, None]
        if len(criteria) == 3 and isinstance(criteria[0], str):
            criteria = [criteria]
        keep = np.ones(len(self.keys), bool)
        for field, op, test in criteria:
            if op in ("is", "not is") and not (test is None or test is True or test is False):
                column = self._column(field)
                keep &= [_holds(REF_OPS[op], column[k], test) for k in self.keys]
                continue
            codes, distinct = self._codes(field)
            keep &= np.array([_holds(REF_OPS[op], value, test) for value in distinct], bool)[codes]
        return {self.keys[i] for i in np.flatnonzero(keep).tolist()}


def _holds(op: Callable[[Any, Any], bool], value: Any, test: Any) -> bool:
    try:
        return bool(op(value, test))
    except Exception:
        return False


def test_the_column_reference_is_the_record_reference(records: dict) -> None:
    reference = ColumnReference(records)
    for criteria in BATTERY:
        assert reference.select(criteria) == ref_select(records, criteria), criteria


def test_selection_view_survives_index_rebuild_and_becomes_a_dict_on_change(records: dict) -> None:
    items = list(records.items())
    index = ImageIndex(dict(items[:50]))
    view = index.select(["meta.clinical.sex", "==", "male"])
    before = dict(view.items())
    assert before and all(r["meta"]["clinical"]["sex"] == "male" for r in before.values())
    key = next(iter(before))
    index.add({key: {**records[key], "name": "CHANGED"}})  # replacing a record rebuilds the index
    index.add(dict(items[50:]))
    assert dict(view.items()) == before  # the old selection still shows what it selected
    assert key in view and "missing-id" not in view and len(view) == len(before)
    with pytest.raises(KeyError):
        view["missing-id"]
    del view[key]
    view["extra"] = {"name": "extra"}
    assert key not in view and view["extra"]["name"] == "extra" and len(view) == len(before)


# records whose fields mix kinds Python's == merges (1, 1.0, True), lists of strings and of other
# things, a dict in some records and a scalar in others, keys that no path names: the bulk build
# tells apart exactly what the per-value build did, added at once or in two steps
MIXED = {
    "a": {"v": 1, "t": ["x", "y"], "d": {"k": 1}, "s": "1", 5: "int key", "x.y": 1},
    "b": {"v": 1.0, "t": ["x"], "d": "k", "s": None, "n": float("nan")},
    "c": {"v": True, "t": ["x", 1], "d": {"k": None, "j": {"deep": "x"}}, "s": "2"},
    "d": {"v": None, "t": [], "d": None},
    "e": {"v": "1", "t": "x", "d": {}, "s": "1", "n": 2.5},
    "f": {},
    "g": "not a record",
    "h": {"v": 0, "t": ["y", "x"], "d": {"k": True}, "s": "3", "n": 0.0},
}
MIXED_CRITERIA = [
    ["v", "==", 1], ["v", "==", True], ["v", "is", True], ["v", "==", "1"], ["v", "!=", 1], ["v", ">", 0.5],
    ["v", "is None", None], ["t", "ni", "x"], ["t", "ni", 1], ["t", "==", ["x"]], ["t", "==", []],
    ["t", "in", [["x", "y"], ["y", "x"]]], ["d", "ni", "k"], ["d", "not ni", "k"], ["d.k", "==", 1],
    ["d.k", "is None", None], ["d.j.deep", "==", "x"], ["s", "match", "^[12]$"], ["s", "not match", "1"],
    ["n", ">=", 0], ["n", "!=", 2.5], ["x.y", "==", 1], ["d", "==", "k"],
]


@pytest.mark.parametrize("split", [None, 3])
def test_mixed_kinds_are_told_apart_as_python_does(split: int | None) -> None:
    items = list(MIXED.items())
    index = ImageIndex(dict(items) if split is None else dict(items[:split]))
    if split is not None:
        index.add(dict(items[split:]))
    for criterion in MIXED_CRITERIA:
        assert set(index.select(criterion)) == ref_select(MIXED, criterion), criterion


@pytest.mark.parametrize("slice_size", [2, 7])
def test_an_index_over_a_record_store_answers_as_over_dicts(monkeypatch: pytest.MonkeyPatch,
                                                            slice_size: int) -> None:
    # records kept as JSON bytes, read a few at a time: columns merge across slices (a kind seen first in
    # a later slice, near-unique strings, lists), and the index's records are equal to the originals
    monkeypatch.setattr(ImageIndex, "SLICE", slice_size)
    records = odd_records()
    store = RecordStore(records)
    index = ImageIndex(store)
    for criteria in BATTERY:
        assert set(index.select(criteria)) == ref_select(records, criteria), criteria
    mixed = ImageIndex(RecordStore(MIXED))
    for criterion in MIXED_CRITERIA:
        assert set(mixed.select(criterion)) == ref_select(MIXED, criterion), criterion
    # one kind per slice of two: ints, then bools (== 1 and 0), then floats, strings and None; lists then text
    across = {"r0": {"v": 1, "t": ["x"]}, "r1": {"v": 2, "t": ["x", "y"]}, "r2": {"v": True, "t": "x"},
              "r3": {"v": False, "t": "y"}, "r4": {"v": 1.0, "t": ["x"]}, "r5": {"v": 2.5}, "r6": {"v": "1"},
              "r7": {"v": None, "t": ["y"]}}
    crossed = ImageIndex(RecordStore(across))
    for criterion in [["v", "==", 1], ["v", "is", True], ["v", "==", 0], ["v", ">", 0.5], ["v", "==", "1"],
                      ["v", "is None", None], ["t", "ni", "x"], ["t", "==", ["x"]], ["t", "==", "x"]]:
        assert set(crossed.select(criterion)) == ref_select(across, criterion), criterion
    chosen = index.select(["meta.clinical.diagnosis", "==", "melanoma"])
    assert chosen and all(record == records[key] for key, record in chosen.items())
    assert [index.values_of(path) for path in ("name", "meta.clinical.age_approx", "notes.tags")] == \
        [ImageIndex(records).values_of(path) for path in ("name", "meta.clinical.age_approx", "notes.tags")]


# ------------------------------------------------- the columnar (pyarrow) build
# pyarrow's JSON reader builds the columns from the records' text; where Arrow reads JSON otherwise than
# Python (null and missing alike, 1 read as 1.0, lists of objects), the index must still be the pure one
def awkward_records(version: int) -> dict[str, dict]:
    data = ArchiveData(seed=11, config=ArchiveConfig(images=120))
    if version == 1:
        records = {r["_id"]: copy.deepcopy(r) for r in data.images}
    else:
        records = {r["name"]: data.v2_record(r, "http://archive.test") for r in data.images}
    ids = list(records)
    nested = "meta" if version == 1 else "metadata"
    for n, key in enumerate(ids):
        record = records[key]
        clinical = record[nested].setdefault("clinical", {})
        if n % 3 == 0:
            clinical["sex"] = None  # an explicit null beside missing keys elsewhere
        if n % 5 == 0:
            clinical["size_mm"] = [2.0, 2, 2.5, -0.0, 0.0, 1e300, 3][n % 7]  # whole numbers as floats and ints
        else:
            clinical["size_mm"] = 0.5 + n
        if n % 4 == 0:
            record["extra"] = {"k": None, "other": n} if n % 8 else {"other": n}
    special: list[dict] = [
        {"notes": None, "tags": [None, "x"], "é": "ünïcødé 日本", "": "empty key", "#": 3},
        {"tags": ["a\x1fb"], "lists": [[1, 2], []], "objects": [{"a": 1}, {"b": 2}], "floats": [1.0, 2]},
        {"tags": ["a", "b"], "lists": [["x"]], "objects": [], "floats": [0.5], "big": 2 ** 70},
        {"text": 'say "k":null', "q\"k": None, "x.y": {"k": None}, "deep": {"p.q": 1, "k": "v"}},
        {"extra": {"k": "v", "other": None}, "deep": {"k": None}, "nullonly": None, "v": True},
        {"v": 1, "mixed": "1"},
    ]
    for n, fields in enumerate(special):
        records[ids[n]].update(fields)
    # a key's null where no path of the index reaches (in a list of objects, under a dotted key), beside a dict
    # that lacks a key of that name (it is missing there, not null); in slices Arrow reads
    records[ids[61]].update({"extra": {"other": 61}, "listed": [{"k": None}]})
    records[ids[62]].update({"extra": {"other": 62}, "dot.ted": {"k": None}})
    return records


def index_state(index: ImageIndex) -> tuple:
    """Everything an index answers from: each column's distinct values (in order) and codes, the dict paths
    (every column built: an index over a record store defers them)."""
    index.build()
    return ({path: (column.uniques, column.codes.tolist()) for path, column in index._columns.items()},
            index._dict_paths, {path: sorted(rows) for path, rows in index._dict_rows.items()},
            index._dotted_root_keys)


AWKWARD_CRITERIA: list[Any] = [
    ["meta.clinical.sex", "is None"], ["metadata.clinical.sex", "is None"], ["meta.clinical", "ni", "sex"],
    ["metadata.clinical", "ni", "sex"], ["meta.clinical.size_mm", "==", 2], ["metadata.clinical.size_mm", ">", 1],
    ["extra", "ni", "k"], ["extra.k", "is None"], ["extra.k", "==", "v"], ["extra.other", "is None"],
    ["notes", "is None"], ["notes", "ni", "tags"], ["tags", "ni", "x"], ["tags", "==", ["a\x1fb"]],
    ["lists", "==", [[1, 2], []]], ["objects", "==", [{"a": 1}, {"b": 2}]], ["floats", "==", [1, 2]],
    ["big", "==", 2 ** 70], ["é", "match", "日本"], ["text", "~", "null"], ["deep", "ni", "k"],
    ["deep.k", "is None"], ["nullonly", "is None"], ["nullonly", "not is None"], ["v", "==", 1], ["mixed", "==", "1"],
    ["meta.clinical.diagnosis", "==", "melanoma"], ["metadata.clinical.diagnosis_1", "==", "Malignant"],
    ["name", "match", "5$"], ["isic_id", ">", "ISIC_00001"], ["files.full.size", ">=", 40000],
]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("arrow_slice", [7, 40, 20000])
def test_the_columnar_build_is_the_pure_one(monkeypatch: pytest.MonkeyPatch, version: int, arrow_slice: int) -> None:
    pytest.importorskip("pyarrow")
    records = awkward_records(version)
    store = RecordStore(records)
    keys = list(store)
    # text a foreign cache file may hold: spaces and a carriage return, a key twice (the last one counts)
    store._held[keys[10]] = b'{"name": "spaced",\r\n "meta" : {"clinical": {"sex": null}}}'
    store._held[keys[11]] = b'{"name":"twice","v":1,"v":2}'
    store.put(keys[12], {"name": "kept", "t": (1, 2)})  # no exact JSON: kept as the record itself
    decoded = {key: store[key] for key in keys}
    monkeypatch.setattr(ImageIndex, "ARROW_SLICE", arrow_slice)
    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    monkeypatch.setattr(ImageIndex, "SLICE", 5)
    columnar = ImageIndex(store)
    monkeypatch.setattr(ImageIndex, "COLUMNAR", False)
    pure = ImageIndex(store)
    assert index_state(columnar) == index_state(pure)
    for criteria in [*AWKWARD_CRITERIA, *BATTERY]:
        assert set(columnar.select(criteria)) == ref_select(decoded, criteria), criteria
    assert columnar.values_of("meta.clinical.size_mm" if version == 1 else "metadata.clinical.size_mm") == \
        pure.values_of("meta.clinical.size_mm" if version == 1 else "metadata.clinical.size_mm")


def test_the_columnar_reader_takes_nulls_and_whole_floats_without_the_pure_path() -> None:
    # explicit nulls and whole numbers among floats are settled from the text and a few decoded records:
    # no record of plain archive data falls back to the pure way (which would forfeit the speed)
    pytest.importorskip("pyarrow")
    from isicarchive.arrowindex import read_slice

    records = {f"r{n}": {"a": {"sex": None if n % 3 == 0 else "male", "size": [2.0, 2, 0.5][n % 3]},
                         "b": {"sex": "female"} if n % 2 else {}, "tags": ["x"] if n % 2 else [],
                         "day": f"2015-01-{n % 9 + 1:02d}", "days": ["2015-01-01"]}  # (Arrow: timestamps)
               for n in range(30)}
    got = read_slice([held for _, held in RecordStore(records).held()], threads=False)
    assert got is not None and got.pure.size == 0
    day = got.leaves[("day",)]
    distinct = day.distinct if isinstance(day.distinct, list) else day.distinct.to_pylist()
    assert [distinct[c] for c in day.codes.tolist()] == [records[f"r{n}"]["day"] for n in range(30)]
    sex = got.leaves[("a", "sex")]
    assert [sex.distinct[c] for c in sex.codes.tolist()] == [records[f"r{n}"]["a"]["sex"] for n in sex.rows.tolist()]
    assert sex.rows.tolist() == list(range(30))
    size = got.leaves[("a", "size")]
    assert [type(size.distinct[c]) for c in size.codes.tolist()] == [float, int, float] * 10
    assert got.leaves[("b", "sex")].rows.tolist() == list(range(1, 30, 2))
    assert got.dict_rows[("b",)].tolist() == list(range(30))


def test_without_pyarrow_the_pure_build_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from isicarchive import arrowindex

    monkeypatch.setattr(arrowindex, "arrow_available", lambda: False)
    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    records = awkward_records(1)
    index = ImageIndex(RecordStore(records))
    for criteria in AWKWARD_CRITERIA:
        assert set(index.select(criteria)) == ref_select(records, criteria), criteria


def test_the_columnar_build_holds_no_second_copy_of_the_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # a column whose values are the records' ids (v2: isic_id, _id, name) holds the id strings themselves
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(ImageIndex, "ARROW_SLICE", 7)
    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    records = {f"ISIC_{n:07d}": {"isic_id": f"ISIC_{n:07d}", "other": f"x{n}", "n": n} for n in range(30)}
    index = ImageIndex(RecordStore(records))
    index.build()
    assert all(value is key for value, key in zip(index._columns["isic_id"].uniques[1:], index.ids, strict=True))
    assert index.values_of("other") == [f"x{n}" for n in range(30)]
    assert set(index.select(["isic_id", "==", "ISIC_0000003"])) == {"ISIC_0000003"}


@pytest.mark.parametrize("version", [1, 2])
def test_records_added_to_a_columnar_index_make_the_pure_index_of_them_all(monkeypatch: pytest.MonkeyPatch,
                                                                          version: int) -> None:
    # a finished column takes more slices (its values then keyed in Python): the same index as one pure build
    pytest.importorskip("pyarrow")
    records = awkward_records(version)
    items = list(records.items())
    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    monkeypatch.setattr(ImageIndex, "ARROW_SLICE", 13)
    grown = ImageIndex(RecordStore(dict(items[:50])))
    grown.add(RecordStore(dict(items[50:])))
    monkeypatch.setattr(ImageIndex, "COLUMNAR", False)
    assert index_state(grown) == index_state(ImageIndex(RecordStore(records)))


# ------------------------------------------------- a deferred index: the paths a selection names, read alone
def lazy_records(version: int) -> RecordStore:
    """The awkward records as a store, with what only a read of some paths alone could get wrong: a record's own
    top-level key equal to a nested path, keys written with escapes or spaces, a level above a path that is
    null, types that the sample of the first records does not show."""
    records = awkward_records(version)
    keys = list(records)
    nested = "meta" if version == 1 else "metadata"
    for n, key in enumerate(keys):
        records[key]["x"] = {"y": n % 3, "z": {"w": f"w{n % 4}"}}
        records[key]["level"] = {"v": n} if n % 9 else None  # null at the level above level.v
        records[key]["day"] = f"2015-01-{n % 28 + 1:02d}"  # text Arrow would take for a timestamp
    records[keys[100]]["x.y"] = 7  # a look-up of x.y finds this record's own key
    records[keys[101]]["late"] = {"kind": "text"}
    records[keys[102]]["x"]["z"]["w"] = 5  # a number where the sample saw text
    records[keys[2]]["big"] = 2 ** 62  # (2 ** 70: no JSON orjson writes, kept as a dict: nothing deferred)
    store = RecordStore(records)
    assert {type(held) for _, held in store.held()} == {bytes}
    # a null written with an escaped key, one after a space: the text search alone would miss them
    store._held[keys[103]] = (b'{"name":"esc","x":{"y":1},"' + nested.encode() + b'":{"clinical":{"s\\u0065x":null,'
                              b'"size_mm":1.5}}}')
    store._held[keys[104]] = (b'{"name":"spaced","x":{"y":2},"' + nested.encode() + b'":{"clinical":{"sex": null,'
                              b'"size_mm":2.5}}}')
    return store


LAZY_CRITERIA: list[Any] = [
    ["x.y", "==", 1], ["x.y", "==", 7], ["x.z.w", "==", "w1"], ["x.z.w", ">", 4], ["level.v", ">=", 50],
    ["level.v", "is None"], ["level", "is None"], ["late.kind", "==", "text"], ["x.z", "==", {"w": "w1"}],
    ["meta.clinical.sex", "==", "female"], ["metadata.clinical.sex", "==", "female"], ["day", "==", "2015-01-05"],
    ["day", ">", "2015-01-20"],
    [["x.y", "==", 2], ["meta.clinical.sex", "is None", None]],
    [["x.y", "==", 2], ["metadata.clinical.sex", "is None", None]],
]


@pytest.mark.parametrize(("version", "arrow_slice"), [(1, 32), (2, 40)])
def test_a_deferred_index_reads_paths_alone_as_the_whole_build_reads_them(monkeypatch: pytest.MonkeyPatch,
                                                                         version: int, arrow_slice: int) -> None:
    pytest.importorskip("pyarrow")
    store = lazy_records(version)
    decoded = {key: store[key] for key in store}
    monkeypatch.setattr(ImageIndex, "ARROW_SLICE", arrow_slice)
    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    monkeypatch.setattr(ImageIndex, "SAMPLE", 30)  # later records hold what the sample does not
    monkeypatch.setattr(ImageIndex, "COLUMNAR", False)
    whole = ImageIndex(store)
    assert not whole._deferred
    monkeypatch.setattr(ImageIndex, "COLUMNAR", True)

    def build(self: ImageIndex) -> None:  # (the whole build's answers are tested above)
        raise NotImplementedError

    monkeypatch.setattr(ImageIndex, "build", build)
    monkeypatch.setattr(ImageIndex, "DEFERRED_READS", 1000)  # one index reads path after path alone
    deferred = ImageIndex(store)
    read_alone = 0
    for criteria in [*LAZY_CRITERIA, *AWKWARD_CRITERIA, *BATTERY]:
        try:
            got = set(deferred.select(criteria))
        except NotImplementedError:
            continue
        assert got == ref_select(decoded, criteria), criteria
        read_alone += 1
    assert deferred._deferred
    for path, read in deferred._lazy.items():  # what it read alone is what the whole (pure) build has
        column = whole._columns.get(path)
        assert (read.column.uniques, read.column.codes.tolist()) == (column.uniques, column.codes.tolist()) \
            if column is not None else read.column is None, path
        assert read.holds_dicts == (path in whole._dict_paths), path
        assert read.plain == whole._plain_path(path), path
    # most criteria were answered by paths read alone, not by building every column (v2 records lack most of
    # the battery's v1 paths: those build every column)
    assert read_alone >= (40 if version == 1 else 20)


def test_a_deferred_index_builds_every_column_where_it_must(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    monkeypatch.setattr(ImageIndex, "ARROW_SLICE", 40)
    monkeypatch.setattr(ImageIndex, "SAMPLE", 30)
    store = lazy_records(2)
    decoded = {key: store[key] for key in store}
    index = ImageIndex(store)
    # x.y: a record's own key; x.z.w: a number after text; late.kind: in no record of the sample
    for path, alone in [("x.y", False), ("x.z.w", False), ("late.kind", False), ("level.v", True),
                        ("metadata.clinical.sex", True), ("day", True)]:
        fresh = ImageIndex(store)
        fresh.values_of(path)
        assert fresh._deferred == alone, path
    for criterion in [["x", "ni", "y"], ["nosuchfield", "==", 1]]:  # key membership; a path no sample record has
        fresh = ImageIndex(store)
        assert set(fresh.select(criterion)) == ref_select(decoded, criterion)
        assert not fresh._deferred
    index.select(["level.v", ">", 3])
    index.select(["x.y", "==", 1])
    assert not index._deferred
    reads = ImageIndex(store)
    for n, path in enumerate(["metadata.clinical.sex", "level.v", "metadata.clinical.age_approx", "isic_id"]):
        reads.select([path, "is None"])
        assert reads._deferred == (n < ImageIndex.DEFERRED_READS)
    from isicarchive.empty import check_empty_selection

    fresh = ImageIndex(store)  # an empty selection's diagnosis: from the path read alone where it exists
    with pytest.raises(QueryError, match="'female'"):
        check_empty_selection(fresh, normalise_criteria(["metadata.clinical.sex", "==", "femal"]), True)
    assert fresh._deferred
    with pytest.raises(QueryError, match="close matches: 'metadata.clinical.sex'"):
        check_empty_selection(fresh, normalise_criteria(["metadata.clinical.sx", "==", "female"]), True)
    assert not fresh._deferred
    grown = ImageIndex(RecordStore(dict(list(decoded.items())[:60])))
    assert grown.values_of("metadata.clinical.sex")
    grown.add(RecordStore(dict(list(decoded.items())[60:])))  # still deferred: what was read alone is read again
    monkeypatch.setattr(ImageIndex, "COLUMNAR", False)
    assert grown.values_of("metadata.clinical.sex") == ImageIndex(decoded).values_of("metadata.clinical.sex")
    assert index_state(grown) == index_state(ImageIndex(decoded))


def test_a_deferred_index_answers_selections_made_from_several_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # reads of paths and the whole build happen under one lock: a selection never sees half-built columns
    pytest.importorskip("pyarrow")
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(ImageIndex, "COLUMNAR_FROM", 0)
    monkeypatch.setattr(ImageIndex, "ARROW_SLICE", 16)
    store = lazy_records(1)
    decoded = {key: store[key] for key in store}
    criteria = [["x.y", "==", 1], ["meta.clinical.sex", "==", "female"], ["level.v", ">=", 50], ["x", "ni", "y"],
                ["meta.clinical.age_approx", ">", 40], ["x.z.w", "==", "w1"]] * 3
    index = ImageIndex(store)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda criterion: set(index.select(criterion)), criteria))
    assert answers == [ref_select(decoded, criterion) for criterion in criteria]
