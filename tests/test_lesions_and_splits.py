"""Lesions and patients of the current archive, and the leakage-free split of a selection."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from isicarchive import IsicApi, Lesion, NotFoundError, QueryError, UnsupportedError
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture(scope="module")
def v2() -> Any:
    with LocalArchive(seed=27, config=ArchiveConfig(images=900)) as archive:
        api = IsicApi(hostname=archive.url, api_version=2, progress=False)
        # 900 records in one cursor walk, not as a hundred prefix searches (0.06 s of CPU, not 0.5): the
        # partitioned sync is test_metadata_sync's
        api.context.backend.sync_single_walk_pages = 9  # type: ignore[attr-defined]
        api.cache_images()
        yield archive, api


def test_a_lesion_and_its_images(v2: Any) -> None:
    archive, api = v2
    by_lesion: dict[str, list[str]] = {}
    for record in api.image_cache.values():
        lesion_id = record["metadata"]["clinical"].get("lesion_id")
        if lesion_id:
            by_lesion.setdefault(lesion_id, []).append(record["isic_id"])
    lesion_id = max(by_lesion, key=lambda k: len(by_lesion[k]))
    lesion = api.lesion(lesion_id)
    assert isinstance(lesion, Lesion) and lesion.id == lesion_id
    assert sorted(im.name for im in lesion.images) == sorted(by_lesion[lesion_id])
    assert lesion.index_image is not None and lesion.index_image.name in by_lesion[lesion_id]
    assert {im.lesion_id for im in lesion.images} == {lesion_id} and lesion.patient_id
    assert lesion.outcome_diagnosis_1 in ("Benign", "Malignant", "Indeterminate")
    with pytest.raises(NotFoundError):
        api.lesion("IL_9999999")
    with pytest.raises(UnsupportedError, match="v2"):
        IsicApi(hostname=archive.url, api_version=1, progress=False).lesion(lesion_id)


def test_group_by_patient_and_lesion(v2: Any) -> None:
    _, api = v2
    everything = api.select_images(["metadata.clinical.age_approx", "not is None", None])
    patients = everything.group_by("patient_id")
    assert all(len({r["metadata"]["clinical"]["patient_id"] for r in sel.values()}) == 1 for sel in patients.values())
    assert max(len(sel) for sel in patients.values()) >= 2
    assert sum(len(s) for s in patients.values()) == sum(
        1 for r in everything.values() if "patient_id" in r["metadata"]["clinical"])


def test_split_keeps_patients_apart_balances_classes_and_repeats(v2: Any) -> None:
    _, api = v2
    everything = api.select_images(["metadata.clinical.age_approx", "not is None", None])
    fractions = {"train": 0.7, "validation": 0.15, "test": 0.15}
    parts = everything.split(fractions, by="patient_id", stratify="diagnosis_1", seed=0)
    assert set(parts) == set(fractions)
    ids = [key for part in parts.values() for key in part]
    assert sorted(ids) == sorted(everything) and len(ids) == len(set(ids))  # every image once
    patients = {name: {r["metadata"]["clinical"].get("patient_id") for r in part.values()} - {None}
                for name, part in parts.items()}
    assert not (patients["train"] & patients["validation"] or patients["train"] & patients["test"]
                or patients["validation"] & patients["test"])  # no patient in two parts
    total = Counter(r["metadata"]["clinical"].get("diagnosis_1") for r in everything.values())
    for name, share in fractions.items():
        assert abs(len(parts[name]) / len(everything) - share) < 0.03
        counts = Counter(r["metadata"]["clinical"].get("diagnosis_1") for r in parts[name].values())
        for label, n in total.items():
            if n >= 50:  # classes big enough to split: within a few points of the share
                assert abs(counts[label] / n - share) < 0.05, (name, label)
    again = everything.split(fractions, by="patient_id", stratify="diagnosis_1", seed=0)
    assert {k: sorted(v) for k, v in again.items()} == {k: sorted(v) for k, v in parts.items()}
    other = everything.split(fractions, by="patient_id", stratify="diagnosis_1", seed=1)
    assert {k: sorted(v) for k, v in other.items()} != {k: sorted(v) for k, v in parts.items()}


def test_split_refuses_bad_input(v2: Any) -> None:
    _, api = v2
    everything = api.select_images(["metadata.clinical.age_approx", "not is None", None])
    with pytest.raises(QueryError, match="add up to 1"):
        everything.split({"train": 0.7, "test": 0.2})
    with pytest.raises(QueryError, match="positive"):
        everything.split({"train": 1.2, "test": -0.2})
    with pytest.raises(QueryError, match="no record has a value of 'no_such_field'"):
        everything.split({"train": 0.5, "test": 0.5}, by="no_such_field")


def test_a_stratified_split_gives_each_part_its_share_of_every_class() -> None:
    # One image per patient: stratified, each class is dealt to the parts on its own, so every part holds its
    # share of every class to within one image. Dealt regardless of class (the 900-image split above cannot tell:
    # its classes stay within its tolerance either way), the small classes stray by several images.
    from isicarchive.grouping import split_ids

    labels = ["nevus"] * 180 + ["melanoma"] * 60 + ["basal cell carcinoma"] * 40 + ["squamous cell carcinoma"] * 20
    records = {f"ISIC_{i:07d}": {"metadata": {"clinical": {"patient_id": f"IP_{i:07d}", "diagnosis_1": label}}}
               for i, label in enumerate(labels)}
    fractions = {"train": 0.7, "validation": 0.15, "test": 0.15}
    total = Counter(labels)
    for seed in range(4):
        parts = split_ids(records, fractions, "patient_id", "diagnosis_1", seed)
        assert sorted(key for part in parts.values() for key in part) == sorted(records)
        for name, share in fractions.items():
            counts = Counter(records[key]["metadata"]["clinical"]["diagnosis_1"] for key in parts[name])
            for label, n in total.items():
                assert abs(counts[label] - share * n) <= 1, (seed, name, label, counts[label], share * n)
