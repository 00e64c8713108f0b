"""The local archive against the real v2 server's source, second round.

Every test names the file and function of ``ImageMarkup/isic`` (or of the
framework it pins: django-ninja 1.4.5, Django 5.2, django-cors-headers 4.9.0,
isic-metadata) whose behaviour it checks; expected values are written out
from that source, not computed by the code under test.  Real HTTP against
:class:`~isicarchive.testing.LocalArchive`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from isicarchive import IsicApi
from isicarchive import search as isic_search
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.testing.v2framework import decimal_text, django_datetime

DECIMAL_FIELDS = ("clin_size_long_diam_mm", "mel_thick_mm")
TWO_PLACES = re.compile(r"^\d{1,3}\.\d{2}$")  # DecimalField(max_digits=5, decimal_places=2)
DJANGO_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalArchive]:
    with LocalArchive(seed=41, config=ArchiveConfig(images=90)) as archive:
        yield archive


def get(server: LocalArchive, route: str, bearer: str | None = None, headers: dict[str, str] | None = None,
        **params: Any) -> requests.Response:
    sent = dict(headers or {})
    if bearer:
        sent["Authorization"] = f"Bearer {bearer}"
    return requests.get(f"{server.v2_url}/{route}", params=params, headers=sent, timeout=10, allow_redirects=False)


def every(server: LocalArchive, route: str, **params: Any) -> list[dict]:
    out: list[dict] = []
    page = get(server, route, **params).json()
    while True:
        out += page["results"]
        if not page["next"]:
            return out
        page = requests.get(page["next"], timeout=10).json()


# ------------------------------------------------------- values as typed
def test_decimal_metadata_comes_back_as_two_place_strings(server: LocalArchive) -> None:
    """isic/ingest/models/accession.py ``AccessionMetadata``: clin_size_long_diam_mm and mel_thick_mm are
    ``DecimalField(max_digits=5, decimal_places=2)``; ``ImageOut.resolve_metadata`` (isic/core/api/image.py)
    passes the Decimal through and ``DjangoJSONEncoder.default`` writes ``str(o)``: "24.10", never 24.1."""
    records = every(server, "images/")
    seen = {field: [r["metadata"]["clinical"][field] for r in records if field in r["metadata"]["clinical"]]
            for field in DECIMAL_FIELDS}
    for field, values in seen.items():
        assert values, field
        assert all(isinstance(v, str) and TWO_PLACES.match(v) for v in values), (field, values[:5])
    # whole numbers and one-place values keep two places, as Decimal('5.00') prints
    assert decimal_text(5) == "5.00" and decimal_text(24.1) == "24.10" and decimal_text("0.5") == "0.50"


def test_the_archive_search_compares_string_decimals_as_numbers(server: LocalArchive) -> None:
    """isic/core/dsl.py: number fields compare in the database's numeric column, so a range over a decimal
    field selects by value although the JSON carries text (here: checked against Decimal of that text)."""
    records = every(server, "images/")
    wanted = sorted(r["isic_id"] for r in records
                    if Decimal(r["metadata"]["clinical"].get("clin_size_long_diam_mm", "-1")) >= 10)
    found = sorted(r["isic_id"] for r in every(server, "images/search/", query="clin_size_long_diam_mm:[10 TO *]"))
    assert found == wanted and 0 < len(found) < len(records)
    one = next(r for r in records if "mel_thick_mm" in r["metadata"]["clinical"])
    value = one["metadata"]["clinical"]["mel_thick_mm"]
    exact = every(server, "images/search/", query=f"mel_thick_mm:{value.rstrip('0').rstrip('.')}")
    assert one["isic_id"] in {r["isic_id"] for r in exact}


def test_datetimes_render_as_djangos_json_encoder(server: LocalArchive) -> None:
    """django/core/serializers/json.py ``DjangoJSONEncoder.default``: isoformat, microseconds cut to
    milliseconds (r[:23] + r[26:]), "+00:00" written "Z"; CohortOut and StudyOut carry ``created``."""
    assert django_datetime("2015-01-01T00:10:00.123456+00:00") == "2015-01-01T00:10:00.123Z"
    assert django_datetime("2015-01-01T00:00:00+00:00") == "2015-01-01T00:00:00Z"
    assert django_datetime("2015-01-01T00:00:00.000999+02:00") == "2015-01-01T00:00:00.000+02:00"
    admin = server.token_for("admin")
    cohorts = get(server, "cohorts/", admin).json()["results"]
    studies = get(server, "studies/", admin).json()["results"]
    created = [c["created"] for c in cohorts] + [s["created"] for s in studies]
    assert created and all(DJANGO_DATETIME.match(c) for c in created), created[:3]


def test_client_reads_string_decimals_as_numbers(server: LocalArchive) -> None:
    """The client's decision (isicarchive.backends.v2.normalise): decimal strings become floats in both
    ``metadata`` and ``meta``, so select_images compares them, DataFrames hold float64, and the offline
    search language ranges over them; expected sets come from the raw JSON read as Decimal."""
    raw = every(server, "images/")
    thick = {r["isic_id"]: Decimal(r["metadata"]["clinical"]["mel_thick_mm"]) for r in raw
             if "mel_thick_mm" in r["metadata"]["clinical"]}
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    selected = api.select_images(["metadata.clinical.mel_thick_mm", ">=", 1.0])
    assert sorted(selected) == sorted(i for i, v in thick.items() if v >= 1) and selected
    legacy = api.select_images(["meta.clinical.mel_thick_mm", "<", 1])
    assert sorted(legacy) == sorted(i for i, v in thick.items() if v < 1)
    first = next(iter(thick))
    held = api.image(first).as_json()
    assert held["metadata"]["clinical"]["mel_thick_mm"] == held["meta"]["clinical"]["mel_thick_mm"] == float(
        thick[first])
    pytest.importorskip("pandas")
    columns = ["metadata.clinical.clin_size_long_diam_mm", "metadata.clinical.mel_thick_mm"]
    frame = api.select_images(["metadata.clinical.mel_thick_mm", "not is None"]).to_dataframe(columns)
    assert [str(t) for t in frame.dtypes] == ["float64", "float64"]
    assert frame["metadata.clinical.mel_thick_mm"].to_dict() == {i: float(v) for i, v in thick.items()}
    # a column with no value at all is still a number column (pandas alone would make it objects)
    sizes_only = api.select_images(["metadata.clinical.mel_thick_mm", "is None"]).to_dataframe(columns)
    assert [str(t) for t in sizes_only.dtypes] == ["float64", "float64"]
    # the search language over records as the archive sends them (strings) and as the client holds them
    query = "mel_thick_mm:[1 TO 2}"
    expected = sorted(i for i, v in thick.items() if 1 <= v < 2)
    assert sorted(r["isic_id"] for r in isic_search.select(query, raw)) == expected
    assert sorted(r["isic_id"] for r in api.search_images(query)) == expected


def test_string_decimal_columns_search_as_numbers() -> None:
    """The columnar search (``column_mask``, used on Parquet indexes) casts a text column of a number field
    ("24.10") to numbers before comparing, as the archive's numeric column compares."""
    pa = pytest.importorskip("pyarrow")
    column = pa.array(["0.50", "1.00", "24.10", None, "3.25"])
    mask = isic_search.column_mask(isic_search.parse("mel_thick_mm:[1 TO 5]"),
                                   lambda field: column if field == "mel_thick_mm" else None, len(column))
    assert mask.to_pylist() == [False, True, False, False, True]
    assert isic_search.as_number("24.10") == 24.1 and isic_search.as_number("abc") is None
    assert isic_search.as_number(True) is None


def test_string_decimals_survive_an_export_and_search_on_disk(server: LocalArchive, tmp_path: Path) -> None:
    """An export's metadata CSV and the disk index (isicarchive.disk) read decimal text as numbers: the same
    range selects the same images online and on disk."""
    pytest.importorskip("pyarrow")
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    chosen = api.search_images("mel_thick_mm:* OR clin_size_long_diam_mm:*")
    assert len(chosen) > 5 and api.download_images(chosen, tmp_path / "export").ok
    offline = IsicApi(hostname=(tmp_path / "export").as_uri(), progress=False)
    found = []
    for query in ("mel_thick_mm:[0 TO 3]", "clin_size_long_diam_mm:{10 TO *]", "clin_size_long_diam_mm:[* TO 10]",
                  "mel_thick_mm:*"):
        online = sorted(i for i in api.search_images(query) if i in chosen)
        assert sorted(offline.search_images(query)) == online, query
        found.append(len(online))
    assert all(found[1:]), found
