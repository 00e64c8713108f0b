"""Exports for other loaders: imagefolder (torchvision's ImageFolder, Hugging Face's imagefolder), WebDataset
tar shards, a Hugging Face Dataset with its card; a split exported as splits."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from isicarchive.errors import MissingTargetError, QueryError
from isicarchive.exports import card_tables
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.training import target_value
from tests.conftest import make_api


@pytest.fixture(scope="module")
def server() -> Any:
    with LocalArchive(seed=20, config=ArchiveConfig(images=30)) as archive:
        yield archive


@pytest.fixture(scope="module")
def session(server: LocalArchive, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_api(server, api_version=2, cache_folder=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def selection(session: Any) -> Any:
    return session.select_images([["isic_id", "not is None"]])


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)))


def source_bytes(session: Any, record: dict) -> bytes:
    path = session.context.store.image_path(record)
    return path.read_bytes()


# ---------------------------------------------------------------- imagefolder
def test_imagefolder_is_a_folder_per_class_with_linked_files_and_metadata(session: Any, selection: Any,
                                                                         tmp_path: Path) -> None:
    result = selection.export(tmp_path / "out", layout="imagefolder", target="diagnosis_1")
    expected = Counter(target_value(r, "diagnosis_1") for r in selection.values())
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert folders == sorted(expected) == result.classes  # the order torchvision's ImageFolder gives them
    for name in folders:
        files = sorted((tmp_path / "out" / name).iterdir())
        assert len(files) == expected[name]
        for file in files:
            cached = session.context.store.image_path(selection[file.stem])
            assert os.path.samefile(file, cached)  # a hard link to the cached file
    assert result.linked == len(selection) and result.counts == {"": len(selection)}
    import csv

    with open(tmp_path / "out" / "metadata.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["file_name"] for row in rows] == sorted(row["file_name"] for row in rows) or rows
    assert {row["file_name"] for row in rows} == {f"{p.parent.name}/{p.name}" for p in result.files}
    assert all(row["diagnosis_1"] == row["file_name"].split("/")[0] for row in rows)
    assert all(int(row["label"]) == result.classes.index(row["diagnosis_1"]) for row in rows)
    assert (tmp_path / "out" / "classes.txt").read_text().split("\n")[:-1] == result.classes


def test_imagefolder_loads_in_hugging_face_unchanged(selection: Any, session: Any, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    selection.export(tmp_path / "out", layout="imagefolder", target="diagnosis_1")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded) == len(selection)
    assert {"image", "label", "isic_id", "attribution", "copyright_license", "diagnosis_1"} <= set(loaded.features)
    for row in loaded.select(range(5)):
        record = selection[row["isic_id"]]
        assert row["diagnosis_1"] == target_value(record, "diagnosis_1")
        assert np.array_equal(np.asarray(row["image"]), pixels(source_bytes(session, record)))


def test_imagefolder_needs_every_class_unless_dropped(selection: Any, tmp_path: Path) -> None:
    lacking = sum(1 for r in selection.values() if target_value(r, "sex") is None)
    assert lacking
    with pytest.raises(MissingTargetError, match=f"{lacking} of {len(selection)} images have no sex"):
        selection.export(tmp_path / "out", layout="imagefolder", target="sex")
    result = selection.export(tmp_path / "out", layout="imagefolder", target="sex", missing="drop")
    assert result.counts == {"": len(selection) - lacking}
    with pytest.raises(QueryError, match="layout must be one of"):
        selection.export(tmp_path / "x", layout="zip")


# ---------------------------------------------------------------- webdataset
def _members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def test_webdataset_shards_are_bounded_deterministic_and_equal_to_the_sources(session: Any, selection: Any,
                                                                             tmp_path: Path) -> None:
    sizes = [len(source_bytes(session, r)) for r in selection.values()]
    bound = 3 * max(sizes) + 8192  # two or three samples a shard
    result = selection.export(tmp_path / "a", layout="webdataset", target="diagnosis_1", shard_bytes=bound)
    shards = sorted((tmp_path / "a").glob("shard-*.tar"))
    assert shards == result.files and len(shards) > 3
    assert all(shard.stat().st_size <= bound for shard in shards)
    seen = []
    for shard in shards:
        members = _members(shard)
        keys = [name.split(".")[0] for name, _ in members]
        assert len(set(keys)) * 3 == len(members)  # .jpg, .json, .cls per sample
        for name, data in members:
            key, extension = name.split(".", 1)
            record = selection[key]
            if extension == "jpg":
                assert data == source_bytes(session, record)
                seen.append(key)
            elif extension == "json":
                assert json.loads(data) == record
            else:
                assert int(data) == result.classes.index(target_value(record, "diagnosis_1"))
    assert sorted(seen) == sorted(selection)
    again = selection.export(tmp_path / "b", layout="webdataset", target="diagnosis_1", shard_bytes=bound)

    def digest(paths: list[Path]) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]

    assert digest(again.files) == digest(result.files)  # the same selection and seed: the same bytes
    other = selection.export(tmp_path / "c", layout="webdataset", target="diagnosis_1", shard_bytes=bound, seed=1)
    assert digest(other.files) != digest(result.files)


def test_webdataset_loads_unchanged(session: Any, selection: Any, tmp_path: Path) -> None:
    webdataset = pytest.importorskip("webdataset")
    result = selection.export(tmp_path / "w", layout="webdataset", target="diagnosis_1", shard_samples=7)
    assert all(len(_members(p)) <= 21 for p in result.files)
    urls = [str(p) for p in result.files]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "json",
                                                                                         "cls"))
    assert sorted(key for key, *_ in samples) == sorted(selection)
    for key, image, record, label in samples[:6]:
        assert np.array_equal(image, pixels(source_bytes(session, selection[key])))
        assert record == selection[key] and label == result.classes.index(target_value(record, "diagnosis_1"))


# ---------------------------------------------------------- Hugging Face
def test_hf_dataset_has_images_metadata_licences_and_a_card_that_counts_them(session: Any, selection: Any,
                                                                            tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dataset = selection.to_hf_dataset(target="diagnosis_1", path=tmp_path / "hf")
    assert len(dataset) == len(selection)
    assert isinstance(dataset.features["image"], datasets.Image)
    assert dataset.features["label"].names == sorted({target_value(r, "diagnosis_1") for r in selection.values()})
    assert {"isic_id", "attribution", "copyright_license", "diagnosis_1", "age_approx", "sex"} <= set(dataset.features)
    reloaded = datasets.load_from_disk(str(tmp_path / "hf"))
    for row in reloaded:
        record = selection[row["isic_id"]]
        assert np.array_equal(np.asarray(row["image"]), pixels(source_bytes(session, record)))
        assert row["copyright_license"] == record["copyright_license"]
        assert row["attribution"] == record["attribution"]
        assert dataset.features["label"].names[row["label"]] == target_value(record, "diagnosis_1")
    tables = card_tables((tmp_path / "hf" / "README.md").read_text(encoding="utf-8"))
    assert tables["licences"] == dict(Counter(r["copyright_license"] for r in selection.values()))
    assert tables["attribution"] == dict(Counter(r["attribution"] for r in selection.values()))


def test_a_card_survives_names_with_pipes(tmp_path: Path) -> None:
    from isicarchive.exports import dataset_card

    records = [{"isic_id": "ISIC_1", "attribution": "A | B\nC", "copyright_license": "CC-BY"},
               {"isic_id": "ISIC_2", "attribution": "A | B\nC", "copyright_license": "CC-0"}]
    tables = card_tables(dataset_card(records, "hf", [], None))
    assert tables["attribution"] == {"A | B C": 2} and tables["licences"] == {"CC-BY": 1, "CC-0": 1}


# ---------------------------------------------------------------- splits
def test_a_split_exports_its_parts_as_splits(session: Any, selection: Any, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    parts = selection.split({"train": 0.6, "validation": 0.2, "test": 0.2}, by="patient_id", seed=1)
    assert isinstance(parts, dict) and type(parts).__name__ == "Splits"
    assert all(part.session is session for part in parts.values())
    result = parts.export(tmp_path / "s", layout="imagefolder", target="diagnosis_1")
    # Parquet states the columns' types, the same in every split (a CSV's are guessed per file)
    assert all((tmp_path / "s" / name / "metadata.parquet").is_file() for name in parts)
    assert result.counts == {name: len(part) for name, part in parts.items()}
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "s"), cache_dir=str(tmp_path / "hf"))
    assert {name: len(loaded[name]) for name in loaded} == result.counts
    for name, part in parts.items():
        assert set(loaded[name]["isic_id"]) == set(part)
    shards = parts.export(tmp_path / "w", layout="webdataset", target="diagnosis_1")
    assert sorted(p.parent.name for p in shards.files) == sorted(parts)
    official = parts.export(tmp_path / "o", layout="official")
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.is_dir()) == sorted(parts)
    assert official.counts == result.counts
    assert sorted(f.stem for f in (tmp_path / "o" / "test").glob("ISIC_*.jpg")) == sorted(parts["test"])


@pytest.mark.parametrize("name, size", [("ISIC_0000000.jpg", 0), ("ISIC_0000000.json", 1), ("k.cls", 512),
                                        ("x" * 100, 123_456_789), ("d" * 99 + "/long", 5), ("big.jpg", 8**11)])
def test_shard_headers_are_tarfiles_own(name: str, size: int) -> None:
    from isicarchive.exports import ustar_header

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 0, "", ""
    try:
        expected = info.tobuf(format=tarfile.USTAR_FORMAT)
    except ValueError:  # a size ustar cannot state
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            ustar_header(name, size)
    else:
        assert ustar_header(name, size) == expected
