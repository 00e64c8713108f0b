"""select_images against pandas and DuckDB: one battery of 69 criteria, the same records, the same process.

Records: a generated archive (default 400,000 image records).  Each peer gets the
records the way it works best: pandas a DataFrame of the flattened fields,
DuckDB a table made from it (with list and key-presence columns where a
criterion needs them); building those is not timed, as the index build is
not.  Every peer hands over the matching ids (ours a selection, pandas the
frame's index under the mask, DuckDB a numpy array of ids), and every answer
is checked against ours.  DuckDB is optional
(``pip install duckdb``); without it the script compares with pandas alone.

    python benchmarks/select_battery.py [--records 400000] [--repeat 3]

The battery ends with a set of regular expressions (suffixes, character
classes, counted repeats, alternations, ``not match``) that the literal-prefix
shortcuts do not cover: ours run on RE2 through pyarrow where the pattern means
what Python's ``re`` means (see isicarchive/regex.py).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from unittest.mock import patch

from _timing import best_of as best

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from isicarchive.selection import ImageIndex, _Column, get_path  # noqa: E402
from isicarchive.testing import ArchiveConfig, ArchiveData  # noqa: E402

NUMERIC = ["meta.clinical.age_approx", "meta.acquisition.pixelsX", "meta.acquisition.pixelsY",
           "meta.clinical.clin_size_long_diam_mm", "meta.clinical.mel_thick_mm"]
STRINGS = {"meta.clinical.diagnosis": ("melanoma", ["nevus", "melanoma"], "^(mel|bas)"),
           "meta.clinical.sex": ("female", ["male"], "^fe"),
           "meta.clinical.anatom_site_general": ("head/neck", ["head/neck", "palms/soles"], "torso"),
           "meta.clinical.diagnosis_confirm_type": ("histopathology", ["histopathology"], "^single"),
           "meta.acquisition.image_type": ("dermoscopic", ["clinical"], "^derm"),
           "dataset.name": ("HAM10000", ["UDA-1", "MSK-1"], "^(UDA|MSK)")}


def battery() -> list[list[Any]]:
    out: list[list[Any]] = []
    for field in NUMERIC:
        out += [[field, ">=", 50], [field, "<", 30], [field, "==", 55], [field, "!=", 55], [field, "is None", None],
                [field, "not is None", None]]
    for field, (value, values, pattern) in STRINGS.items():
        out += [[field, "==", value], [field, "!=", value], [field, "in", values], [field, "match", pattern]]
    out += [["name", "==", "ISIC_0001234"], ["name", "match", "^ISIC_00012"], ["_id", ">", "5a"],
            ["notes.tags", "ni", "ISBI 2017: Training"], ["meta.clinical", "ni", "mel_class"],
            ["meta.clinical", "not ni", "nevus_type"]]
    out += REGEX
    return out


#: regular expressions beyond literal prefixes: RE2 over the column where the meaning is Python's
REGEX = [["name", "match", "5$"], ["name", "~", r"^ISIC_00[0-1]\d{4}$"], ["name", "not match", "5$"],
         ["name", "match", r"\d{3}7$"], ["name", "match", "12.4"], ["_id", "match", "[a-f]{3}$"],
         ["meta.clinical.diagnosis", "match", r"^(basal|squamous) cell"],
         ["meta.clinical.anatom_site_general", "!~", r"\w+/\w+"], ["dataset.name", "~", r"-\d$"]]


def flat_fields(criteria: list[list[Any]]) -> list[str]:
    return sorted({c[0] for c in criteria if c[0] not in ("meta.clinical",)})


def build_frame(records: list[dict], ids: list[str], criteria: list[list[Any]]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for field in flat_fields(criteria):
        values = [get_path(r, field) for r in records]
        columns[field] = pd.Series(values, dtype="float64") if field in NUMERIC else pd.Series(values, dtype=object)
    for key in ("mel_class", "nevus_type"):  # a dict key's presence, as a column of its own
        columns[f"has:meta.clinical.{key}"] = [key in (r.get("meta") or {}).get("clinical", {}) for r in records]
    frame = pd.DataFrame(columns)
    frame.index = pd.Index(ids, name="id")
    for field in STRINGS:
        frame[field] = frame[field].astype("string")
    frame["name"] = frame["name"].astype("string")
    frame["_id"] = frame["_id"].astype("string")
    return frame


def pandas_mask(frame: pd.DataFrame, criterion: list[Any]) -> Any:
    field, op, test = criterion
    if field == "meta.clinical":
        has = frame[f"has:meta.clinical.{test}"]
        return has if op == "ni" else ~has
    column = frame[field]
    if op == "ni":
        return column.map(lambda tags: isinstance(tags, list) and test in tags)
    if op == "is None":
        return column.isna()
    if op == "not is None":
        return column.notna()
    if op == "in":
        return column.isin(test)
    if op in ("match", "~", "not match", "!~"):
        with warnings.catch_warnings():  # groups in a pattern are fine here: only the match counts
            warnings.simplefilter("ignore", UserWarning)
            found = column.str.contains(test, regex=True)
        if op in ("not match", "!~"):
            found = ~found
        return found.fillna(False).astype(bool)  # a missing value matches neither way
    if op == "!=":
        return (column != test).fillna(True).astype(bool)  # a missing value differs (Python: None != x)
    compare = {"==": column.__eq__, "<": column.__lt__, ">=": column.__ge__, ">": column.__gt__}[op]
    return compare(test).fillna(False).astype(bool)


def duckdb_sql(criterion: list[Any]) -> str:
    field, op, test = criterion
    if field == "meta.clinical":
        return f'{"" if op == "ni" else "NOT "}"has:meta.clinical.{test}"'
    column = f'"{field}"'
    literal = f"'{test}'" if isinstance(test, str) else str(test)
    if op == "ni":
        return f"list_contains({column}, '{test}')"
    if op == "is None":
        return f"{column} IS NULL"
    if op == "not is None":
        return f"{column} IS NOT NULL"
    if op == "in":
        return f"{column} IN ({', '.join(repr(v) for v in test)})"
    if op in ("match", "~"):
        return f"regexp_matches({column}, '{test}')"
    if op in ("not match", "!~"):
        return f"NOT regexp_matches({column}, '{test}')"
    if op == "!=":
        return f"{column} IS DISTINCT FROM {literal}"
    return f"{column} {'=' if op == '==' else op} {literal}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    data = ArchiveData(seed=1, config=ArchiveConfig(images=args.records, studies=0))
    records = {r["_id"]: r for r in data.images}
    print(f"{len(records)} generated records in {time.perf_counter() - started:.1f} s")
    criteria = battery()
    started = time.perf_counter()
    index = ImageIndex(records)
    print(f"our index: {time.perf_counter() - started:.1f} s")
    ids = list(records)
    started = time.perf_counter()
    frame = build_frame(list(records.values()), ids, criteria)
    print(f"pandas frame: {time.perf_counter() - started:.1f} s")
    connection = None
    try:
        import duckdb

        connection = duckdb.connect()
        table = frame.reset_index()
        table["notes.tags"] = [t if isinstance(t, list) else None for t in table["notes.tags"]]
        connection.register("frame_view", table)
        connection.execute("CREATE TABLE images AS SELECT * FROM frame_view")
        print(f"DuckDB {duckdb.__version__}: table made")
    except ImportError:
        print("DuckDB not installed: pandas only")
    totals = {"ours": 0.0, "pandas": 0.0, "duckdb": 0.0}
    regex_totals = {"ours": 0.0, "pandas": 0.0, "duckdb": 0.0, "re": 0.0}
    worst: tuple[float, str] = (0.0, "")
    print(f"\n{'criterion':58} {'matches':>8} {'ours ms':>8} {'pandas':>8} {'duckdb':>8} {'vs best':>8}  same")
    for criterion in criteria:
        ours_s, selection = best(lambda c=criterion: index.select(c), args.repeat)
        mine = set(selection)
        # each peer hands over the matching ids, as a selection does (pandas: the index of the rows)
        pandas_s, found_ids = best(lambda c=criterion: frame.index[np.asarray(pandas_mask(frame, c), bool)],
                                   args.repeat)
        same = set(found_ids) == mine
        duck_s = float("nan")
        if connection is not None:
            sql = f"SELECT id FROM images WHERE {duckdb_sql(criterion)}"
            # the ids as a numpy array (DuckDB's fastest hand-over; Python tuples would cost it more)
            duck_s, found = best(lambda q=sql: connection.execute(q).fetchnumpy()["id"], args.repeat)
            same = same and set(found.tolist()) == mine
        totals["ours"] += ours_s
        totals["pandas"] += pandas_s
        totals["duckdb"] += 0 if duck_s != duck_s else duck_s
        if criterion in REGEX:
            # the same criterion on Python's re alone (the fallback, and what every pattern took before RE2)
            with patch.object(_Column, "_re2_regex", lambda *_: None):
                re_s, on_re = best(lambda c=criterion: index.select(c), args.repeat)
            same = same and set(on_re) == mine
            regex_totals["re"] += re_s
            print(f"{'  (the same on re alone)':58} {'':8} {re_s * 1e3:8.2f}")
            for name, took in (("ours", ours_s), ("pandas", pandas_s), ("duckdb", duck_s)):
                regex_totals[name] += 0 if took != took else took
        peer = min(pandas_s, duck_s) if duck_s == duck_s else pandas_s
        ratio = ours_s / peer
        worst = max(worst, (ratio, str(criterion)))
        label = re.sub(r"\s+", " ", str(criterion))[:58]
        print(f"{label:58} {len(mine):8d} {ours_s * 1e3:8.2f} {pandas_s * 1e3:8.2f} {duck_s * 1e3:8.2f} "
              f"{ratio:7.2f}x  {same}")
    print(f"\ntotal over {len(criteria)} criteria: ours {totals['ours']:.3f} s, pandas {totals['pandas']:.3f} s"
          + (f", DuckDB {totals['duckdb']:.3f} s" if connection is not None else ""))
    print(f"slowest relative to the faster peer: {worst[0]:.2f}x for {worst[1]}")
    print(f"regular expressions ({len(REGEX)}): ours {regex_totals['ours']:.3f} s (on re alone "
          f"{regex_totals['re']:.3f} s), pandas {regex_totals['pandas']:.3f} s"
          + (f", DuckDB {regex_totals['duckdb']:.3f} s" if connection is not None else ""))


if __name__ == "__main__":
    main()
