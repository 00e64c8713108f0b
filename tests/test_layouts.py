"""Layouts of archives on disk are registry entries: a new layout is one entry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import imageio.v3 as iio  # noqa: E402

from isicarchive import IsicApi, LayoutError  # noqa: E402
from isicarchive.disk import layouts  # noqa: E402
from isicarchive.disk.layouts import ArchiveFiles, Layout, LayoutSpec, make_record, register  # noqa: E402

LABELS = {"ISIC_0000001": "Malignant", "ISIC_0000002": "Benign", "ISIC_0000003": "Benign"}


def _detect(files: ArchiveFiles) -> list[str] | None:
    found = files.find("labels.tsv")
    return [found] if found else None


def _records(files: ArchiveFiles, layout: Layout) -> Iterator[dict]:
    lines = files.text(layout.metadata[0]).splitlines()
    if lines[:1] != ["isic_id\tdiagnosis_1\tage"]:
        raise LayoutError(f"{layout.metadata[0]} in {files.root} is not a labels file")
    for line in lines[1:]:
        isic_id, diagnosis, age = line.split("\t")
        yield make_record(isic_id, {"diagnosis_1": diagnosis, "age_approx": int(age)}, licence="CC-0")


@pytest.fixture
def tsv_layout() -> Iterator[LayoutSpec]:
    spec = register(LayoutSpec("test-tsv", "labels.tsv (isic_id, diagnosis_1, age) and PNGs", _detect, _records))
    try:
        yield spec
    finally:
        layouts.unregister("test-tsv")


def _folder(root: Path, *, with_official_csv: bool = False) -> Path:
    root.mkdir()
    rows = ["isic_id\tdiagnosis_1\tage"]
    for n, (isic_id, diagnosis) in enumerate(LABELS.items()):
        iio.imwrite(root / f"{isic_id}.png", np.full((8, 6, 3), 40 * n, np.uint8))
        rows.append(f"{isic_id}\t{diagnosis}\t{30 + 10 * n}")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    if with_official_csv:  # a generic metadata.csv too: the more specific layout is detected first
        (root / "metadata.csv").write_text("isic_id,attribution,copyright_license\nISIC_0000009,x,CC-0\n")
    return root


def test_a_new_layout_is_one_registry_entry(tsv_layout: LayoutSpec, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "tsv", with_official_csv=True)
    api = IsicApi(hostname=folder.as_uri(), cache_folder=tmp_path / "cache", progress=False)
    assert api.layout == "test-tsv" and api.problems == []
    assert sorted(api.cache_images()) == sorted(LABELS)
    assert sorted(api.select_images(["metadata.clinical.diagnosis_1", "==", "Benign"])) == \
        ["ISIC_0000002", "ISIC_0000003"]
    assert sorted(api.search_images("age_approx:[35 TO *]")) == ["ISIC_0000002", "ISIC_0000003"]
    image = api.image("ISIC_0000003")
    image.load_imagedata()
    assert image.data is not None and image.data.shape == (8, 6, 3) and int(image.data.max()) == 80
    assert "test-tsv" in layouts.LAYOUTS and layouts.LAYOUTS["test-tsv"].startswith("labels.tsv")


def test_an_unregistered_layout_is_not_recognised_and_the_error_lists_the_registry(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "tsv")
    with pytest.raises(LayoutError, match="Known layouts .*official.*challenge-2020") as caught:
        IsicApi(hostname=folder.as_uri(), cache_folder=tmp_path / "cache", progress=False)
    assert "test-tsv" not in str(caught.value)


def test_the_registry_keeps_detection_order_and_refuses_a_second_entry_of_a_name(tsv_layout: LayoutSpec) -> None:
    names = [spec.name for spec in layouts.detection_order()]
    assert names.index("challenge-2020") < names.index("test-tsv") < names.index("official")
    assert list(layouts.REGISTRY)[-1] == "test-tsv"  # listed after the built-in ones
    with pytest.raises(ValueError, match="registered already"):
        register(LayoutSpec("test-tsv", "again", _detect, _records))
    assert layouts.REGISTRY["test-tsv"] is tsv_layout
