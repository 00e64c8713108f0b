"""The v2 API: search language, local archive routes, the client backend, the official CLI."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from cli_runner import CliRunner, run_cli
from tool_venvs import tool_venv

from isicarchive import AuthenticationError, IsicApi, NotFoundError, QueryError, UnsupportedError
from isicarchive.search import Term, parse
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.testing.oauthroutes import sign_in_code

# ------------------------------------------------------------------ parser
# Cases from the archive's own grammar tests (isic/core/tests/test_dsl.py), as trees of this parser.
GRAMMAR_CASES: list[tuple[str, object]] = [
    ("isic_id:ISIC_123*", Term("isic_id", "prefix", "ISIC_123")),
    ("-isic_id:*", Term("isic_id", "exists", negated=True)),
    ("-lesion_id:*", Term("lesion_id", "exists", negated=True)),
    ("-mel_thick_mm:*", Term("mel_thick_mm", "exists", negated=True)),
    ("-melanocytic:*", Term("melanocytic", "exists", negated=True)),
    ("melanocytic:*", Term("melanocytic", "exists")),
    ("-age_approx:50", Term("age_approx", "eq", 50, negated=True)),
    ("-age_approx:[50 TO 70]", Term("age_approx", "range", (50, 70), True, True, True)),
    ("isic_id:*123", Term("isic_id", "suffix", "123")),
    ("lesion_id:IL_123*", Term("lesion_id", "prefix", "IL_123")),
    ("patient_id:*123", Term("patient_id", "suffix", "123")),
    ("rcm_case_id:123*", Term("rcm_case_id", "prefix", "123")),
    ('copyright_license:"CC-0"', Term("copyright_license", "eq", "CC-0")),
    ("copyright_license:CC-BY-NC", Term("copyright_license", "eq", "CC-BY-NC")),
    ("age_approx:50", Term("age_approx", "eq", 50)),
    ("age_approx:[50 TO 70]", Term("age_approx", "range", (50, 70), True, True)),
    ("age_approx:{50 TO 70}", Term("age_approx", "range", (50, 70), False, False)),
    ("age_approx:[50 TO 70}", Term("age_approx", "range", (50, 70), True, False)),
    ("mel_thick_mm:[0 TO 0.5]", Term("mel_thick_mm", "range", (0, 0.5), True, True)),
    ("age_approx:[50 TO *]", Term("age_approx", "range", (50, None), True, True)),
    ("age_approx:[* TO 70]", Term("age_approx", "range", (None, 70), True, True)),
    ("age_approx:{* TO 70}", Term("age_approx", "range", (None, 70), False, False)),
    ("-age_approx:[5 TO *]", Term("age_approx", "range", (5, None), True, True, True)),
    ("age_approx:[* TO *]", Term("age_approx", "exists")),
    ("-age_approx:[* TO *]", Term("age_approx", "exists", negated=True)),
    ("age_approx:*", Term("age_approx", "exists")),
    ("public:true", Term("public", "eq", True)),
    ("image_type:dermoscopic", Term("image_type", "eq", "dermoscopic")),
    ("image_type:clinical", Term("image_type", "eq", "clinical: close-up")),
    ("image_type:overview", Term("image_type", "eq", "clinical: overview")),
    ('diagnosis_3:"Melanoma Invasive"', Term("diagnosis_3", "eq", "Melanoma Invasive")),
    ("public:true image_type:dermoscopic",
     ("and", [Term("public", "eq", True), Term("image_type", "eq", "dermoscopic")])),
    ("sex:male OR age_approx:50 AND melanocytic:false",
     ("or", [Term("sex", "eq", "male"), ("and", [Term("age_approx", "eq", 50), Term("melanocytic", "eq", False)])])),
    ("sex:male AND (-age_approx:50 OR melanocytic:false)",
     ("and", [Term("sex", "eq", "male"), ("or", [Term("age_approx", "eq", 50, negated=True),
                                                 Term("melanocytic", "eq", False)])])),
    ("", ("all",)),
    ("   ", ("all",)),
]


@pytest.mark.parametrize("query,tree", GRAMMAR_CASES, ids=[q or "empty" for q, _ in GRAMMAR_CASES])
def test_parser_reads_the_archives_grammar(query: str, tree: object) -> None:
    assert parse(query) == tree


@pytest.mark.parametrize("bad,says", [
    ("NOT sex:male", "no NOT"), ("sex:male AND NOT sex:female", "no NOT"),
    ("nosuchfield:1", "not a searchable field"), ("anatom_site_general:head", "not a searchable field"),
    ("nevus_type:blue", "not a searchable field"), ("mel_class:x", "not a searchable field"),
    ("acquisition_day:1", "not a searchable field"), ("attribution:x", "not a searchable field"),
    ("age_approx:old", "takes a number"), ("melanocytic:yes", "takes true, false"),
    ("sex:[1 TO 2]", "sex takes a word"), ("age_approx:[1 2]", "takes a number"), ("sex:a.b", "sex takes a word"),
    ("isic_id:(ISIC_0000001 OR ISIC_0000002)", "cannot be a list"), ("sex:male and sex:female", "upper case"),
    ('sex:"unclosed', "not closed"), ("diagnosis_1:foo randstring", "position 16"),
    ("(sex:male OR age_approx:50) melanocytic:false", "position"),
    ("sex", "position"), ("sex:", "sex takes a word"), ("(sex:male", "position"), ("sex:male)", "position"),
    ("sex:male AND", "position"), ("OR sex:male", "position"),
])
def test_parser_refuses_what_the_archive_refuses(bad: str, says: str) -> None:
    with pytest.raises(QueryError, match=re.escape(says)):
        parse(bad)


# ------------------------------------------------------- server and client
@pytest.fixture(scope="module")
def v2archive() -> Any:
    with LocalArchive(seed=13) as server:
        yield server


@pytest.fixture(scope="module")
def all_records(v2archive: LocalArchive) -> list[dict]:
    """Every public v2 record, paged plainly with requests."""
    out: list[dict] = []
    url: str | None = f"{v2archive.v2_url}/images/?limit=7"
    while url:
        page = requests.get(url, timeout=10).json()
        out.extend(page["results"])
        url = page["next"]
    return out


def clin(r: dict, key: str) -> Any:
    return (r["metadata"].get("clinical") or {}).get(key, (r["metadata"].get("acquisition") or {}).get(key))


def missing_or(r: dict, key: str, test: Callable[[Any], bool]) -> bool:
    return clin(r, key) is None or test(clin(r, key))


QUERIES: list[tuple[str, Callable[[dict], bool]]] = [
    ("sex:male", lambda r: clin(r, "sex") == "male"),
    ('diagnosis_1:"Malignant"', lambda r: clin(r, "diagnosis_1") == "Malignant"),
    ("diagnosis_3:Melanoma*", lambda r: str(clin(r, "diagnosis_3") or "").startswith("Melanoma")),
    ("anatom_site_2:*trunk", lambda r: str(clin(r, "anatom_site_2") or "").endswith("trunk")),
    ('anatom_site_1:"Head and neck"', lambda r: clin(r, "anatom_site_1") == "Head and neck"),
    ("age_approx:50", lambda r: clin(r, "age_approx") == 50),
    ("age_approx:[50 TO 70]", lambda r: clin(r, "age_approx") is not None and 50 <= clin(r, "age_approx") <= 70),
    ("age_approx:{50 TO 70}", lambda r: clin(r, "age_approx") is not None and 50 < clin(r, "age_approx") < 70),
    ("age_approx:[50 TO *]", lambda r: clin(r, "age_approx") is not None and clin(r, "age_approx") >= 50),
    ("age_approx:{* TO 30}", lambda r: clin(r, "age_approx") is not None and clin(r, "age_approx") < 30),
    ("age_approx:*", lambda r: clin(r, "age_approx") is not None),
    ("-age_approx:*", lambda r: clin(r, "age_approx") is None),
    ("-age_approx:[20 TO 60]", lambda r: missing_or(r, "age_approx", lambda v: not 20 <= v <= 60)),
    ("melanocytic:true", lambda r: clin(r, "melanocytic") is True),
    ("melanocytic:false", lambda r: clin(r, "melanocytic") is False),
    ("-melanocytic:true", lambda r: clin(r, "melanocytic") is not True),
    ("image_type:dermoscopic AND sex:female", lambda r: clin(r, "image_type") == "dermoscopic"
     and clin(r, "sex") == "female"),
    ("image_type:clinical", lambda r: clin(r, "image_type") == "clinical: close-up"),
    ("sex:female OR age_approx:[80 TO 90]", lambda r: clin(r, "sex") == "female"
     or (clin(r, "age_approx") is not None and 80 <= clin(r, "age_approx") <= 90)),
    ("-sex:male", lambda r: clin(r, "sex") != "male"),
    ("(sex:male OR sex:female) AND -melanocytic:true", lambda r: clin(r, "sex") in ("male", "female")
     and clin(r, "melanocytic") is not True),
    ("lesion_id:* -patient_id:IP_0*", lambda r: clin(r, "lesion_id") is not None
     and not str(clin(r, "patient_id") or "").startswith("IP_0")),
    ("isic_id:ISIC_0000003", lambda r: r["isic_id"] == "ISIC_0000003"),
    ("isic_id:ISIC_0000003 OR isic_id:ISIC_0000005 OR isic_id:ISIC_9999999",
     lambda r: r["isic_id"] in ("ISIC_0000003", "ISIC_0000005")),
    ("copyright_license:CC-BY", lambda r: r["copyright_license"] == "CC-BY"),
    ("public:true", lambda r: r["public"] is True),
    ("", lambda r: True),
]


@pytest.mark.parametrize("query,expected", QUERIES, ids=[q or "empty" for q, _ in QUERIES])
def test_server_search_equals_brute_force(v2archive: LocalArchive, all_records: list[dict], query: str,
                                          expected: Callable[[dict], bool]) -> None:
    api = IsicApi(hostname=v2archive.url, api_version=2, progress=False)
    got = sorted(api.search_images(query))
    assert got == sorted(r["isic_id"] for r in all_records if expected(r))


def test_queries_discriminate(all_records: list[dict]) -> None:
    sizes = [sum(map(f, all_records)) for _, f in QUERIES]
    assert sum(0 < s < len(all_records) for s in sizes) >= 20


def test_cursor_pagination(v2archive: LocalArchive, all_records: list[dict]) -> None:
    first = requests.get(f"{v2archive.v2_url}/images/", params={"limit": 5}, timeout=10).json()
    assert first["count"] == len(all_records) and first["previous"] is None and len(first["results"]) == 5
    second = requests.get(first["next"], timeout=10).json()
    assert second["count"] is None and second["previous"]
    assert [r["isic_id"] for r in first["results"] + second["results"]] == [r["isic_id"] for r in all_records[:10]]
    capped = requests.get(f"{v2archive.v2_url}/images/", params={"limit": 1000}, timeout=10).json()
    assert len(capped["results"]) == min(100, len(all_records))
    by_creation = sorted(v2archive.data.visible_images(None), key=lambda im: im["created"])
    assert [r["isic_id"] for r in all_records] == [im["name"] for im in by_creation]
    # django-ninja's 422s, as the archive's paginator raises them (pydantic's ctx kept, its error as text:
    # NinjaAPI.validation_error_from_error_contexts)
    bad = requests.get(f"{v2archive.v2_url}/images/", params={"cursor": "bz1hYmM="}, timeout=10)  # "o=abc"
    assert (bad.status_code, bad.json()) == (422, {"detail": [
        {"type": "value_error", "loc": ["query", "cursor"], "msg": "Value error, Invalid cursor.",
         "ctx": {"error": "Invalid cursor."}}]})
    bad = requests.get(f"{v2archive.v2_url}/images/", params={"limit": "ten"}, timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]
    # the archive reads a cursor that is not base64 as none at all, and limit 0 as the default
    assert requests.get(f"{v2archive.v2_url}/images/", params={"cursor": "!!"}, timeout=10).json()["count"]
    assert len(requests.get(f"{v2archive.v2_url}/images/", params={"limit": 0}, timeout=10).json()["results"]) \
        == min(100, len(all_records))
    assert requests.get(f"{v2archive.v2_url}/images/", params={"limit": -3}, timeout=10).json()["results"] == []


def test_records_have_todays_shape(all_records: list[dict]) -> None:
    # ImageOut of isic/core/api/image.py: these keys and no others; metadata keys without a value left out
    assert {tuple(sorted(r)) for r in all_records} == {
        ("attribution", "copyright_license", "files", "isic_id", "metadata", "public")}
    assert all(set(r["metadata"]) == {"acquisition", "clinical"} for r in all_records)
    values = [v for r in all_records for section in r["metadata"].values() for v in section.values()]
    assert None not in values
    acquisition_keys = {"image_type", "dermoscopic_type", "image_manipulation", "blurry", "hairy", "marker_pen",
                        "color_tint", "pixels_x", "pixels_y"}
    assert all(set(r["metadata"]["acquisition"]) <= acquisition_keys for r in all_records)
    clinical = [r["metadata"]["clinical"] for r in all_records]
    stale = {"anatom_site_general", "benign_malignant", "diagnosis", "nevus_type", "mel_class"}
    assert not any(stale & set(c) for c in clinical)
    image_types = {r["metadata"]["acquisition"].get("image_type") for r in all_records}
    assert image_types <= {"dermoscopic", "clinical: close-up", "clinical: overview", None}


def test_lesions_and_patients_group_images_realistically(all_records: list[dict]) -> None:
    lesions: dict[str, set[str]] = {}
    images_per_lesion: dict[str, int] = {}
    for r in all_records:
        c = r["metadata"]["clinical"]
        if "lesion_id" in c:
            assert re.fullmatch(r"IL_\d{7}", c["lesion_id"]) and re.fullmatch(r"IP_\d{7}", c["patient_id"])
            lesions.setdefault(c["lesion_id"], set()).add(c["patient_id"])
            images_per_lesion[c["lesion_id"]] = images_per_lesion.get(c["lesion_id"], 0) + 1
    assert lesions and all(len(patients) == 1 for patients in lesions.values())  # one lesion, one patient
    assert max(images_per_lesion.values()) >= 2  # a lesion seen more than once
    lesions_per_patient: dict[str, int] = {}
    for (patient,) in lesions.values():
        lesions_per_patient[patient] = lesions_per_patient.get(patient, 0) + 1
    assert max(lesions_per_patient.values()) >= 2
    assert sum("lesion_id" not in r["metadata"]["clinical"] for r in all_records) > 0


def test_bad_query_is_a_400_with_explanation(v2archive: LocalArchive) -> None:
    for query in ("age_approx:[1 TO", "NOT sex:male", "anatom_site_general:head", "isic_id:(A OR B)"):
        r = requests.get(f"{v2archive.v2_url}/images/search/", params={"query": query}, timeout=10)
        assert (r.status_code, r.json()) == (400, {"message": "Could not parse search query."})
    api = IsicApi(hostname=v2archive.url, api_version=2, progress=False, backoff=0.001)
    with pytest.raises(QueryError, match="'nosuchfield' is not a searchable field"):
        api.search_images("nosuchfield:1")
    with pytest.raises(QueryError, match="negate a term with a leading '-'"):
        api.search_images("NOT sex:male")


def test_private_images_need_a_token(v2archive: LocalArchive) -> None:
    private = [im["name"] for im in v2archive.data.images if not v2archive.data.dataset_public(im["dataset"]["_id"])]
    assert requests.get(f"{v2archive.v2_url}/images/{private[0]}/", timeout=10).status_code == 404
    token = v2archive.token_for("alice")
    r = requests.get(f"{v2archive.v2_url}/images/{private[0]}/", headers={"Authorization": f"Bearer {token}"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["public"] is False
    assert requests.get(f"{v2archive.v2_url}/users/me/", timeout=10).status_code == 401


def test_storage_urls_public_permanent_private_signed_and_ranges(v2archive: LocalArchive,
                                                                  all_records: list[dict]) -> None:
    full = all_records[0]["files"]["full"]
    assert "?" not in full["url"]  # a public image: a permanent, unsigned URL
    data = requests.get(full["url"], timeout=10).content
    assert len(data) == full["size"]
    part = requests.get(full["url"], headers={"Range": "bytes=10-"}, timeout=10)
    assert part.status_code == 206 and part.content == data[10:]
    thumbnail = all_records[0]["files"]["thumbnail_256"]
    assert len(requests.get(thumbnail["url"], timeout=10).content) == thumbnail["size"] > 10_000
    # a private image: signed, expiring (about a week), refused without its signature
    token = v2archive.token_for("alice")
    private = next(r for r in requests.get(f"{v2archive.v2_url}/images/", params={"limit": 100},
                                           headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["results"]
                   if not r["public"])
    url = private["files"]["full"]["url"]
    expires = int(re.search(r"expires=(\d+)", url).group(1))  # type: ignore[union-attr]
    assert 6 * 86400 < expires - time.time() <= 7 * 86400
    assert requests.get(url, timeout=10).status_code == 200
    assert requests.get(url.split("?")[0], timeout=10).status_code == 403


def test_collections_licences_and_size(v2archive: LocalArchive, all_records: list[dict]) -> None:
    collections = requests.get(f"{v2archive.v2_url}/collections/", timeout=10).json()["results"]
    assert collections and {"id", "name", "public", "pinned", "locked", "doi"} <= set(collections[0])
    first = collections[0]
    members = requests.get(f"{v2archive.v2_url}/images/search/", params={"collections": str(first["id"])},
                           timeout=10).json()
    assert members["count"] == len(v2archive.data.collection_members[first["id"]] &
                                   {im["_id"] for im in v2archive.data.visible_images(None)})
    size = requests.get(f"{v2archive.v2_url}/images/search/size/", timeout=10).json()["size"]
    assert size == sum(r["files"]["full"]["size"] for r in all_records)
    text = requests.get(f"{v2archive.v2_url}/zip-download/license-file/CC-BY-NC/", timeout=10).text
    assert "NonCommercial" in text


def test_client_v2_session(v2archive: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=v2archive.url, api_uri="/api/v2", cache_folder=tmp_path, progress=False)
    assert api.api_version == 2 and api.base_url.endswith("/api/v2")
    image = api.image("ISIC_0000000")
    thumbnail = re.search(r"<img [^>]*src='([^']+)'", image._repr_html_())  # shown before any pixels load
    assert thumbnail and requests.get(html.unescape(thumbnail.group(1)), timeout=10).status_code == 200
    image.load_imagedata()
    assert image.data.shape == (120, 160, 3) and image.name == "ISIC_0000000"
    assert "data:image/png;base64," in image._repr_html_()
    assert image.meta["acquisition"]["pixelsX"] == 160
    records = api.cache_images()
    assert set(records) == {im["name"] for im in v2archive.data.visible_images(None)}
    warm = IsicApi(hostname=v2archive.url, api_version=2, cache_folder=tmp_path, progress=False)
    assert warm.cache_images() == records and warm.request_count == 1
    sel = warm.select_images(["metadata.clinical.sex", "==", "male"])
    assert set(sel) == set(warm.search_images("sex:male"))
    with pytest.raises(NotFoundError):
        api.image("ISIC_9999999")
    # v2 has no archive superpixels: computed locally (SLIC, the legacy parameters) and cached under the
    # original names, so the original README's paint snippet runs unchanged
    image.load_imagedata()
    image.load_superpixels()
    image.map_superpixels()
    idx, spmap = image.superpixels["idx"], image.superpixels["map"]
    assert idx.shape == image.data.shape[:2] and int(spmap[:, -1].sum()) == idx.size
    labels = np.unique(idx)
    assert labels[0] == 0 and labels[-1] == len(labels) - 1 and len(labels) > 20  # 0..n-1, every label used
    data = image.data.copy()
    pixels = data.reshape(-1, 3)
    count = spmap[5, -1]
    pixels[spmap[5, 0:count], 0] = 255
    assert (data.reshape(-1, 3)[idx.ravel() == 5, 0] == 255).all()
    from isicarchive.cache import shard_of

    assert list((tmp_path / shard_of(image.id)).glob(f"spidx_{image.id}.npz"))
    assert list((tmp_path / shard_of(image.id)).glob(f"spimg_{image.id}.png"))
    # studies are staff-only in v2: an anonymous session is asked to sign in, an admin sees them
    with pytest.raises(AuthenticationError):
        api.study()
    admin = IsicApi("admin", v2archive.credentials["admin"], hostname=v2archive.url, api_version=2, progress=False)
    studies = admin.study()
    assert len(studies) == len(v2archive.data.studies)
    with pytest.raises(UnsupportedError):
        admin.study(studies[0]["_id"]).load_annotations()
    # ISIC ids shard by SHA-1 and keep the file patterns
    from isicarchive.cache import shard_of

    assert list((tmp_path / shard_of("ISIC_0000000")).glob("image_ISIC_0000000_ISIC_0000000.jpg"))


def test_token_never_goes_to_storage(v2archive: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi("alice", v2archive.credentials["alice"], hostname=v2archive.url, api_version=2,
                  cache_folder=tmp_path, progress=False)
    v2archive.clear_log()
    api.image("ISIC_0000001").load_imagedata()
    api.download_images(["ISIC_0000002", "ISIC_0000004"], folder=tmp_path / "out")
    storage = v2archive.requests(r"^/storage/")
    api_calls = v2archive.requests(r"^/api/v2/")
    assert storage and not any(r.authorized for r in storage)
    assert api_calls and all(r.authorized for r in api_calls)
    with open(tmp_path / "out" / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["isic_id"] for r in rows] == ["ISIC_0000002", "ISIC_0000004"] and "pixels_x" in rows[0]


def test_v1_has_no_server_side_search(archive: LocalArchive) -> None:
    with pytest.raises(UnsupportedError, match="v2"):
        IsicApi(hostname=archive.url, api_version=1, progress=False).search_images("sex:male")


# ---------------------------------------------------------- official CLI
def _official_cli() -> Path | None:
    python = tool_venv("isic-cli-newest", ["isic-cli"], minimum=(3, 12))  # the newest release needs 3.12+
    return python.parent / "isic" if python is not None else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _interchangeable_with_ours(theirs: Path, ours: Path) -> None:
    """The official CLI's folder opens as an archive on disk, and our export of the same images is the same
    folder: file names, metadata.csv rows, attribution.txt, licenses/."""
    online = IsicApi(hostname="http://127.0.0.1:8000", api_version=2, progress=False)
    ids = sorted(p.stem for p in theirs.glob("ISIC_*.jpg"))
    disk = IsicApi(hostname=theirs.as_uri(), progress=False)
    assert disk.layout == "official" and not disk.problems
    assert sorted(disk.search_images("").keys()) == ids
    mine, original = disk.image(ids[0]), online.image(ids[0])
    mine.load_imagedata()
    original.load_imagedata()
    assert (mine.data == original.data).all()
    assert online.download_images(ids, ours).ok

    def rows(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
        with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), sorted(reader, key=lambda r: r["isic_id"])

    assert rows(ours) == rows(theirs)
    assert sorted(p.name for p in ours.glob("ISIC_*")) == sorted(p.name for p in theirs.glob("ISIC_*"))
    # ours ends with a newline, as a text file should; the names and their order are the same
    assert (ours / "attribution.txt").read_text().rstrip("\n") == (theirs / "attribution.txt").read_text().rstrip("\n")
    assert {p.name: p.read_text() for p in (ours / "licenses").iterdir()} == \
        {p.name: p.read_text() for p in (theirs / "licenses").iterdir()}


@pytest.mark.network
def test_official_isic_cli_against_local_archive(tmp_path: Path) -> None:
    if not _port_free(8000):
        pytest.skip("port 8000 is taken")
    isic = _official_cli()
    if isic is None:
        pytest.skip("isic-cli could not be installed (package index unreachable)")
    # its sign-in keeps the token under XDG_DATA_HOME (read when pyxdg is imported), its settings under HOME
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env.update({"HOME": str(tmp_path / "home"), "ISIC_DEV": "1", "XDG_DATA_HOME": str(tmp_path / "home" / "data")})
    # its commands run forked from one parent that has imported the CLI (0.9 s of CPU a start; tests/cli_runner.py),
    # the sign-ins too, which read the code from their stdin
    isic_cli = CliRunner(str(isic.parent / "python"), "from isic_cli.cli import main", "main()",
                         [str(isic), "--no-version-check"], env)
    # the archive `isicarchive serve --images 80` serves, at the address the official CLI's dev mode asks, in this
    # process (a `serve` of its own cost an interpreter's start; `serve` is tested in tests/test_cli.py)
    server = LocalArchive(config=ArchiveConfig(images=80, datasets=4, private_datasets=1), port=8000).start()
    try:
        accounts = server.credentials

        def isic_run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
            done = isic_cli.run(list(args), cwd=tmp_path, timeout=300)
            assert done.returncode == 0 or not ok, done.stdout + done.stderr
            return done

        isic_run("image", "download", "-l", "20", "OUT")
        out = tmp_path / "OUT"
        assert len(list(out.glob("ISIC_*.jpg"))) == 20
        assert (out / "attribution.txt").exists() and list((out / "licenses").glob("*.txt"))
        with open(out / "metadata.csv", newline="") as fh:
            assert len(list(csv.DictReader(fh))) == 20
        _interchangeable_with_ours(out, tmp_path / "OURS")
        isic_run("image", "download", "-s", "age_approx:[50 TO 70]", "-l", "5", "OUT2")
        with open(tmp_path / "OUT2" / "metadata.csv", newline="") as fh:
            ages = [float(r["age_approx"]) for r in csv.DictReader(fh)]
        assert ages and all(50 <= a <= 70 for a in ages)
        # today's grammar: a leading '-' negates (and keeps records without the field), open ranges
        isic_run("image", "download", "-s", "-sex:male", "OUT3")
        with open(tmp_path / "OUT3" / "metadata.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and all(r.get("sex") != "male" for r in rows) and any(not r.get("sex") for r in rows)
        assert len(list((tmp_path / "OUT3").glob("ISIC_*.jpg"))) == len(rows)
        isic_run("image", "download", "-s", "age_approx:[60 TO *] AND -sex:female", "OUT4")
        with open(tmp_path / "OUT4" / "metadata.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and all(float(r["age_approx"]) >= 60 and r.get("sex") != "female" for r in rows)
        # no column of the CSV is empty for every row: records leave out keys without a value
        assert all(any(r[column] for r in rows) for column in rows[0])
        listed = isic_run("collection", "list").stdout
        assert "ISBI 2016: Training" in listed.replace("\n", " ") or "Challenge" in listed
        metadata = isic_run("metadata", "download").stdout
        assert metadata.splitlines()[0].startswith("isic_id,attribution,copyright_license")
        assert len(metadata.splitlines()) == 1 + 60  # every public image of 80
        # `isic user login`: the official OAuth client (PKCE, out-of-band code) against the local sign-in page
        # (it prints the sign-in page's address and waits for the code on its stdin)
        with isic_cli.talk(["user", "login"], cwd=tmp_path, timeout=120) as login:
            code = sign_in_code(login.line_starting("http"), "alice", accounts["alice"])
            out, err = login.communicate(code + "\n", timeout=120)
        assert login.returncode == 0 and "Success" in out, out + err
        assert "Hello alice@example.org" in isic_run("user", "login").stdout
        # `isic collection add-images / remove-images` on a collection alice owns
        owner = IsicApi("alice", accounts["alice"], hostname="http://127.0.0.1:8000", api_version=2, progress=False)
        bearer = {"Authorization": f"Bearer {owner.oauth_token.access_token}"}  # type: ignore[union-attr]
        public = sorted(owner.search_images("public:true"))
        created = requests.post("http://127.0.0.1:8000/api/v2/collections/create-from-isic-ids/", headers=bearer,
                                json={"name": "alice's picks", "isic_ids": public[:2]}, timeout=10)
        cid = str(created.json()["collection_id"])
        (tmp_path / "ids.txt").write_text("\n".join(public[2:6]) + "\nISIC_9999999\n")
        isic_run("collection", "add-images", cid, "--from-isic-ids", "ids.txt")
        assert set(owner.search_images("", collections=[int(cid)])) == set(public[:6])
        (tmp_path / "gone.txt").write_text("\n".join(public[:3]) + "\n")
        isic_run("collection", "remove-images", cid, "--from-isic-ids", "gone.txt")
        assert set(owner.search_images("", collections=[int(cid)])) == set(public[3:6])
        # `isic accession upload`: alice owns no cohort (CohortPermissions: staff or the contributor's owners), so
        # the CLI's cohort look-up is refused; staff upload through django-s3-file-field, then POST accessions/
        (tmp_path / "lesion.jpg").write_bytes(b"\xff\xd8\xff\xe0 a local test upload")
        refused = isic_run("accession", "upload", "1", "lesion.jpg", ok=False)
        assert refused.returncode != 0 and "Cohort 1 does not exist or you don't have access to it" in refused.stderr
        isic_run("user", "logout")
        with isic_cli.talk(["user", "login"], cwd=tmp_path, timeout=120) as login:
            out, err = login.communicate(sign_in_code(login.line_starting("http"), "admin", accounts["admin"]) + "\n",
                                         timeout=120)
        assert login.returncode == 0, out + err
        uploaded = isic_run("accession", "upload", "1", "lesion.jpg", "--json")
        assert isinstance(json.loads(uploaded.stdout)["id"], int)
        isic_run("user", "logout")
    finally:
        isic_cli.close()
        server.stop()


def test_stored_token_is_used_for_v2_sessions(v2archive: LocalArchive) -> None:
    from isicarchive import credentials

    token = v2archive.token_for("alice")
    probe = IsicApi(hostname=v2archive.url, api_version=2, progress=False)
    credentials.store_token(probe.base_url, "alice", token)
    api = IsicApi("alice", hostname=v2archive.url, api_version=2, progress=False)
    assert api.authenticated and api.user["email"] == "alice@example.org"
    assert credentials.delete_password(probe.base_url, "alice")
    assert credentials.load_token(probe.base_url, "alice") is None


def test_cli_login_with_a_token(v2archive: LocalArchive, tmp_path: Path) -> None:
    keyring_dir = Path(__file__).parent
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring", "PYTHONPATH": str(keyring_dir),
           "ISICARCHIVE_TEST_KEYRING": str(tmp_path / "ring.json"), "ISICARCHIVE_TOKEN": v2archive.token_for("bob")}
    done = run_cli("--host", v2archive.url, "--api", "v2", "--user", "bob", "login", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stored" in done.stdout and env["ISICARCHIVE_TOKEN"] not in done.stdout
    env["ISICARCHIVE_TOKEN"] = "not-a-token"
    refused = run_cli("--host", v2archive.url, "--api", "v2", "--user", "bob", "login", env=env, timeout=60)
    assert refused.returncode == 3 and "not-a-token" not in refused.stderr


# ---------------------------------------------------- expiring file URLs
def private_record(server: LocalArchive, token: str) -> dict:
    page = requests.get(f"{server.v2_url}/images/?limit=100", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()["results"]
    return next(r for r in page if not r["public"])


def test_presigned_file_urls_expire(tmp_path: Path) -> None:
    with LocalArchive(seed=5) as server:
        token = server.token_for("alice")
        server.url_lifetime = 3600
        url = private_record(server, token)["files"]["full"]["url"]
        assert "expires=" in url and requests.get(url, timeout=10).status_code == 200
        tampered = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 9999}", url)
        assert requests.get(tampered, timeout=10).status_code == 403
        server.url_lifetime = -1  # handed out already expired
        stale = private_record(server, token)
        assert requests.get(stale["files"]["full"]["url"], timeout=10).status_code == 403
        server.url_lifetime = None
        server.expire_file_urls()  # everything signed before now
        assert requests.get(url, timeout=10).status_code == 403


def test_expired_urls_in_cached_records_are_renewed(tmp_path: Path) -> None:
    with LocalArchive(seed=5) as server:
        # private images: their links are signed and expire (public ones are permanent)
        api = IsicApi("alice", server.credentials["alice"], hostname=server.url, api_version=2,
                      cache_folder=tmp_path / "cache", progress=False)
        records = [r for r in api.cache_images().values() if not r["public"]][:6]
        server.expire_file_urls()  # e.g. the image cache was built yesterday
        server.clear_log()
        result = api.download_images(records[:3])
        assert result.ok and len(result.downloaded) == 3
        assert len(server.requests(r"/storage/images/")) == 6  # 403, then the fresh URL
        assert len(server.requests(r"/api/v2/images/ISIC_")) == 3  # one record look-up per file
        exported = api.download_images(records[3:5], folder=tmp_path / "out")
        assert exported.ok and len(list((tmp_path / "out").glob("ISIC_*.jpg"))) == 2
        no_cache = IsicApi("alice", server.credentials["alice"], hostname=server.url, api_version=2, progress=False)
        image = no_cache.image(records[5]["isic_id"])
        server.expire_file_urls()
        image.load_imagedata()
        assert image.data is not None and image.data.ndim == 3


# ------------------------------------------------------- which API by default
def test_todays_archive_is_the_default_and_a_retired_v1_says_so() -> None:
    from isicarchive import ArchiveUnavailableError

    assert IsicApi(progress=False).base_url == "https://api.isic-archive.com/api/v2"
    assert IsicApi(hostname="isic-archive.com", progress=False).api_version == 2  # the archive's own host
    # a mirror is v1 only when it says so (api_version=1, or its v2 address answers 404: test_first_day.py)
    assert IsicApi(hostname="https://mirror.example.org", api_version=1, progress=False).api_version == 1
    assert IsicApi(hostname="https://mirror.example.org", api_uri="/api/v2", progress=False).api_version == 2
    # a local archive that serves only v2 stands in for today's official host
    with LocalArchive(seed=3, legacy_v1=False) as today:
        legacy = IsicApi(hostname=today.url, api_version=1, progress=False, backoff=0.001)
        with pytest.raises(ArchiveUnavailableError, match=r"legacy v1 API does not answer.*api_version=2"):
            legacy.image("ISIC_0000000")
        name = today.data.visible_images(None)[0]["name"]
        assert IsicApi(hostname=today.url, api_version=2, progress=False).image(name).name == name
        assert requests.get(f"{today.v1_url}/image", timeout=10).status_code == 404


def test_v2_superpixels_are_computed_once_then_read_from_the_cache(v2archive: LocalArchive, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import isicarchive.slic

    name = v2archive.data.visible_images(None)[1]["name"]
    first = IsicApi(hostname=v2archive.url, api_version=2, cache_folder=tmp_path, progress=False).image(name)
    first.load_superpixels()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed again")

    monkeypatch.setattr(isicarchive.slic, "compute_superpixels", refuse)
    again = IsicApi(hostname=v2archive.url, api_version=2, cache_folder=tmp_path, progress=False).image(name)
    again.load_superpixels()
    assert np.array_equal(again.superpixels["idx"], first.superpixels["idx"])
