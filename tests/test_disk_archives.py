"""Archives on disk (file:// hosts): layouts, zips, the Parquet index, offline search, exports, bad input."""

from __future__ import annotations

import csv
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

from isicarchive import IsicApi, NotFoundError, QueryError, UnsupportedError  # noqa: E402
from isicarchive.cli import main as cli  # noqa: E402
from isicarchive.disk import index as disk_index  # noqa: E402
from isicarchive.disk.layouts import LayoutError  # noqa: E402
from isicarchive.legacy import legacy_clinical  # noqa: E402
from isicarchive.testing import ArchiveConfig, LocalArchive  # noqa: E402

# queries the local archive answers server-side; the archive on disk must select the very same images
BATTERY = [
    "", "diagnosis_1:Malignant", "diagnosis_1:Benign AND age_approx:[40 TO 60]",
    "diagnosis_1:Malignant AND age_approx:[50 TO *] AND -sex:male", "-sex:male", "sex:*", "-sex:*",
    "age_approx:{30 TO 50}", "age_approx:[* TO 35]", "age_approx:55", "isic_id:ISIC_000001*",
    "isic_id:ISIC_0000003 OR isic_id:ISIC_0000010", "anatom_site_1:*", '-anatom_site_1:"Head and neck"',
    "diagnosis_2:Benign*", "diagnosis_3:*Nevus", "-diagnosis_3:*Nevus", "lesion_id:*", "-patient_id:*",
    "(sex:female OR sex:male) AND -diagnosis_1:Benign", 'image_type:dermoscopic', "public:true",
    "melanocytic:true", "-melanocytic:false", 'copyright_license:"CC-BY-NC"',
]


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=71, config=ArchiveConfig(image_size=(64, 48))) as server:
        yield server


@pytest.fixture(scope="module")
def online(archive: LocalArchive) -> IsicApi:
    return IsicApi(hostname=archive.url, api_version=2, progress=False)


@pytest.fixture(scope="module")
def exported(online: IsicApi, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every public image, exported by this library in the official CLI's layout."""
    folder = tmp_path_factory.mktemp("exports") / "official"
    result = online.download_images(online.search_images(""), folder)
    assert result.ok and len(result.downloaded) > 30
    return folder


def offline(location: Path, **kw: object) -> IsicApi:
    return IsicApi(hostname=location.as_uri(), progress=False, **kw)  # type: ignore[arg-type]


def ids(selection: object) -> list[str]:
    return sorted(selection.keys())  # type: ignore[attr-defined]


def test_export_has_the_official_layout(exported: Path) -> None:
    names = {p.name for p in exported.iterdir() if not p.name.startswith(".")}
    assert {"metadata.csv", "attribution.txt", "licenses"} <= names
    images = sorted(n for n in names if n.endswith(".jpg"))
    with open(exported / "metadata.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames[:3] == ["isic_id", "attribution", "copyright_license"]  # type: ignore[index]
    assert sorted(f"{r['isic_id']}.jpg" for r in rows) == images
    assert {p.stem for p in (exported / "licenses").iterdir()} == {r["copyright_license"] for r in rows}
    assert (exported / "attribution.txt").read_text().split("\n\n")[0] in {r["attribution"] for r in rows}


def test_search_battery_matches_the_archive(online: IsicApi, exported: Path, tmp_path: Path) -> None:
    disk = offline(exported)
    zipped = offline(Path(shutil.make_archive(str(tmp_path / "official"), "zip", exported)))
    for query in BATTERY:
        expected = ids(online.search_images(query))
        assert ids(disk.search_images(query)) == expected, query
        assert sorted(disk.context.backend.search_ids(query)) == expected, query
        assert ids(zipped.search_images(query)) == expected, query
    assert any(ids(online.search_images(q)) for q in BATTERY[1:])  # the battery selects something
    with pytest.raises(QueryError, match="no NOT"):
        disk.search_images("NOT sex:male")


def test_models_criteria_superpixels_and_splits_offline(online: IsicApi, exported: Path, tmp_path: Path) -> None:
    disk = offline(exported, cache_folder=tmp_path / "cache")
    for criteria in (["meta.clinical.diagnosis", "==", "melanoma"], ["meta.clinical.benign_malignant", "==",
                                                                      "benign"],
                     ["meta.clinical.age_approx", ">=", 50], ["meta.acquisition.pixelsX", ">", 0]):
        assert ids(disk.select_images(criteria)) == ids(online.select_images(criteria)), criteria
    image = disk.image("ISIC_0000001")
    image.load_imagedata()
    same = online.image("ISIC_0000001")
    same.load_imagedata()
    assert (image.data == same.data).all()
    image.load_superpixels(map_superpixels=True)
    assert image.superpixels["max"] > 10 and image.superpixels["map"] is not None
    assert list((tmp_path / "cache").rglob("spidx_ISIC_0000001*"))  # computed once, kept in the session cache
    frame = disk.select_images(["meta.clinical.age_approx", ">=", 0]).to_dataframe()
    assert len(frame) > 10
    parts = disk.select_images(["meta.clinical.age_approx", ">=", 0]).split({"train": 0.7, "test": 0.3},
                                                                            by="patient_id", seed=0)
    patients = [{r["metadata"]["clinical"].get("patient_id") for r in part.values()} - {None}
                for part in parts.values()]
    assert not patients[0] & patients[1]
    lesion_id = next(r["metadata"]["clinical"]["lesion_id"] for r in disk.cache_images().values()
                     if r["metadata"]["clinical"].get("lesion_id"))
    assert {im.id for im in disk.lesion(lesion_id).images} == {im.id for im in online.lesion(lesion_id).images}


def test_what_needs_the_archive_is_unsupported(exported: Path, tmp_path: Path) -> None:
    disk = offline(exported)
    for call in (lambda: disk.study_list(), lambda: disk.dataset_list(), lambda: disk.login("me", "pw"),
                 lambda: disk.download_images(["ISIC_0000001"]), lambda: disk.metadata_frame("")):
        with pytest.raises(UnsupportedError, match="archive on disk|v2"):
            list(call())  # type: ignore[call-overload]
    with pytest.raises(UnsupportedError, match="without signing in"):
        IsicApi("alice", "pw", hostname=exported.as_uri())
    with pytest.raises(NotFoundError):
        disk.image("ISIC_9999999")


def test_the_index_is_built_once_and_rebuilt_when_the_metadata_changes(
        exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    offline(folder)
    assert not (folder / disk_index.INDEX_NAME).exists()  # never inside the archive
    assert len(list(disk_index.user_index_folder().glob("*.parquet"))) == 1  # the user's cache instead
    offline(folder, cache_folder=tmp_path / "cache")
    assert (tmp_path / "cache" / "diskindex.parquet").exists()

    def no_build(*args: object) -> None:
        raise AssertionError("the index was built again")

    monkeypatch.setattr(disk_index, "_build", no_build)
    assert len(offline(folder).cache_images()) == len(list(folder.glob("*.jpg")))  # read from the index alone
    with open(folder / "metadata.csv", "a", encoding="utf-8") as fh:
        fh.write("ISIC_0999999,Someone,CC-0\n")
    with pytest.raises(AssertionError, match="built again"):
        offline(folder)
    monkeypatch.undo()
    changed = offline(folder)
    assert "ISIC_0999999" in changed.cache_images()
    assert any("not in the archive" in p for p in changed.problems)
    with pytest.raises(UnsupportedError, match="not in the folder"):
        changed.image("ISIC_0999999").load_imagedata()


# -------------------------------------------------------------- challenges
def _legacy(record: dict) -> dict:
    return legacy_clinical(record["metadata"]["clinical"])


def _challenge_2020(records: list[dict], exported: Path, root: Path) -> None:
    (root / "train").mkdir(parents=True)
    with open(root / "ISIC_2020_Training_GroundTruth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_name", "patient_id", "lesion_id", "sex", "age_approx",
                         "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"])
        for r in records:
            c, legacy = r["metadata"]["clinical"], _legacy(r)
            writer.writerow([r["isic_id"], c.get("patient_id", ""), c.get("lesion_id", ""), c.get("sex", ""),
                             c.get("age_approx", ""), legacy.get("anatom_site_general", ""),
                             legacy.get("diagnosis", "unknown"), legacy.get("benign_malignant", ""),
                             int(legacy.get("benign_malignant") == "malignant")])
            shutil.copy(exported / f"{r['isic_id']}.jpg", root / "train")


def _one_hot(records: list[dict], exported: Path, root: Path, year: int) -> None:
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"] if year == 2019 else \
        ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    terms = {"melanoma": "MEL", "nevus": "NV", "basal cell carcinoma": "BCC", "dermatofibroma": "DF",
             "pigmented benign keratosis": "BKL", "vascular lesion": "VASC", "squamous cell carcinoma": "SCC",
             "actinic keratosis": "AK" if year == 2019 else "AKIEC"}
    prefix = "ISIC_2019_Training" if year == 2019 else "ISIC2018_Task3_Training"
    (root / f"{prefix}_Input").mkdir(parents=True)
    truth_dir = root if year == 2019 else root / f"{prefix}_GroundTruth"
    truth_dir.mkdir(exist_ok=True)
    with open(truth_dir / f"{prefix}_GroundTruth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *classes])
        for r in records:
            label = terms.get(_legacy(r).get("diagnosis", ""), "UNK")
            writer.writerow([r["isic_id"], *("1.0" if c == label else "0.0" for c in classes)])
            shutil.copy(exported / f"{r['isic_id']}.jpg", root / f"{prefix}_Input")
    if year == 2019:
        with open(root / "ISIC_2019_Training_Metadata.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "age_approx", "anatom_site_general", "lesion_id", "sex"])
            for r in records:
                c = r["metadata"]["clinical"]
                writer.writerow([r["isic_id"], c.get("age_approx", ""), _legacy(r).get("anatom_site_general", ""),
                                 c.get("lesion_id", ""), c.get("sex", "")])


@pytest.mark.parametrize("layout", ["challenge-2020", "challenge-2019", "challenge-2018"])
def test_challenge_layouts_and_their_zips(layout: str, online: IsicApi, exported: Path, tmp_path: Path) -> None:
    records = sorted(online.search_images("").values(), key=lambda r: r["isic_id"])
    root = tmp_path / layout
    if layout == "challenge-2020":
        _challenge_2020(records, exported, root)
    else:
        _one_hot(records, exported, root, int(layout[-4:]))
    zipped = Path(shutil.make_archive(str(tmp_path / layout), "zip", root.parent, root.name))
    for location in (root, zipped):
        disk = offline(location)
        assert disk.layout == layout and not disk.problems
        assert ids(disk.search_images("")) == [r["isic_id"] for r in records]
        # the legacy diagnosis of every image survives the challenge's columns
        wanted = {r["isic_id"]: _legacy(r).get("diagnosis") for r in records}
        for query, original in (("diagnosis_1:Malignant", "malignant"), ("diagnosis_1:Benign", "benign")):
            found = set(ids(disk.search_images(query)))
            assert found, (layout, query)
            assert all(_legacy(online.image(i).as_json()).get("benign_malignant") == original for i in found)
        melanomas = ids(disk.select_images(["meta.clinical.diagnosis", "==", "melanoma"]))
        assert melanomas == sorted(i for i, d in wanted.items() if d == "melanoma")
        if layout != "challenge-2018":
            assert ids(disk.search_images("age_approx:[50 TO *]")) == ids(online.search_images("age_approx:[50 TO *]"))
            assert ids(disk.select_images(["meta.clinical.anatom_site_general", "==", "head/neck"])) == \
                ids(online.select_images(["meta.clinical.anatom_site_general", "==", "head/neck"]))
        image = disk.image(records[0]["isic_id"])
        image.load_imagedata()
        assert image.data.ndim == 3


# --------------------------------------------------------------- bad input
def test_bad_archives_give_clear_errors(exported: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match="Known layouts .*official.*challenge-2020"):
        offline(empty)
    with pytest.raises(LayoutError, match="does not exist"):
        offline(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.csv").write_bytes(b"isic_id\n\xff\xfe\xfa\n")
    with pytest.raises(LayoutError, match="not UTF-8"):
        offline(broken)
    (broken / "metadata.csv").write_text("name,age\nx,1\n")
    with pytest.raises(LayoutError, match="lacks the column"):
        offline(broken)
    twice = tmp_path / "twice"
    shutil.copytree(exported, twice)
    lines = (twice / "metadata.csv").read_text().splitlines()
    (twice / "metadata.csv").write_text("\n".join(lines + [lines[1], lines[2]]) + "\n")
    with pytest.raises(LayoutError, match="2 image.*more than once.*ISIC_"):
        offline(twice)
    (tmp_path / "notazip.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(LayoutError, match="readable zip"):
        offline(tmp_path / "notazip.zip")


def test_a_zip_with_path_traversal_members(exported: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        for path in exported.iterdir():
            if path.is_file() and not path.name.startswith("."):
                zf.write(path, path.name)
        zf.writestr("../../escaped.jpg", b"\xff\xd8\xffnope")
        zf.writestr("/abs/ISIC_0999998.jpg", b"\xff\xd8\xffnope")
    cache = tmp_path / "cache"
    disk = offline(evil, cache_folder=cache)
    assert sum("unsafe path" in p for p in disk.problems) == 2
    assert "ISIC_0999998" not in disk.cache_images()
    disk.image("ISIC_0000001").load_superpixels()
    assert not (tmp_path.parent / "escaped.jpg").exists() and not Path("/abs").exists()
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert all(p == evil or cache in p.parents for p in written)


def test_cli_export_round_trip(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = Path(shutil.make_archive(str(tmp_path / "archive"), "zip", exported))
    out = tmp_path / "out"
    assert cli(["--host", source.as_uri(), "--quiet", "images", "export", "--to", str(out)]) == 0
    assert (out / "metadata.csv").read_text() == (exported / "metadata.csv").read_text()
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(p.name for p in exported.glob("*.jpg"))
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in exported.glob("*.jpg"))
    assert cli(["--host", out.as_uri(), "--json", "images", "search", "-s", "diagnosis_1:Malignant"]) == 0
    assert "ISIC_" in capsys.readouterr().out
