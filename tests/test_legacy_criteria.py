"""The original's criteria on today's records: one archive served as v1 and as v2 gives the same selections."""

from __future__ import annotations

from typing import Any

import pytest

from isicarchive import IsicApi, QueryError
from isicarchive.legacy import LEGACY_DIAGNOSES, V2_DIAGNOSIS_PATHS, legacy_clinical
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture(scope="module")
def sessions() -> Any:
    with LocalArchive(seed=21, config=ArchiveConfig(images=600)) as archive:
        yield (IsicApi(hostname=archive.url, api_version=1, progress=False),
               IsicApi(hostname=archive.url, api_version=2, progress=False))


CRITERIA = [
    ["meta.clinical.diagnosis", "==", "melanoma"],
    ["meta.clinical.diagnosis", "!=", "nevus"],
    ["meta.clinical.diagnosis", "in", ["basal cell carcinoma", "squamous cell carcinoma", "actinic keratosis"]],
    ["meta.clinical.diagnosis", "==", "vascular lesion"],
    ["meta.clinical.benign_malignant", "==", "malignant"],
    ["meta.clinical.anatom_site_general", "==", "head/neck"],
    ["meta.clinical.anatom_site_general", "in", ["posterior torso", "anterior torso", "palms/soles"]],
    ["meta.acquisition.pixelsX", ">=", 100],
    [["meta.clinical.diagnosis", "==", "melanoma"], ["meta.clinical.age_approx", ">=", 50]],
]


@pytest.mark.parametrize("criteria", CRITERIA, ids=[str(c)[:60] for c in CRITERIA])
def test_the_originals_criteria_select_the_same_images_on_v2(sessions: Any, criteria: list) -> None:
    v1, v2 = sessions
    on_v1 = {record["name"] for record in v1.select_images(criteria).values()}
    on_v2 = set(v2.select_images(criteria))
    assert on_v1 == on_v2 and on_v1  # the same images, and some


def test_v2_names_keep_working(sessions: Any) -> None:
    _, v2 = sessions
    chosen = v2.select_images(["metadata.clinical.diagnosis_3", "==", "Melanoma Invasive"])
    assert chosen and all(r["metadata"]["clinical"]["diagnosis_3"] == "Melanoma Invasive" for r in chosen.values())


def test_an_unknown_legacy_term_names_the_known_ones(sessions: Any) -> None:
    _, v2 = sessions
    with pytest.raises(QueryError, match=r"'melanomma'.*legacy terms: .*basal cell carcinoma"):
        v2.select_images(["meta.clinical.diagnosis", "==", "melanomma"])


def test_the_table_reads_the_most_specific_known_node() -> None:
    # written out by hand from isic-metadata's hierarchy
    melanocytic = {"diagnosis_1": "Malignant", "diagnosis_2": "Malignant melanocytic proliferations (Melanoma)"}
    assert legacy_clinical({**melanocytic, "diagnosis_3": "Melanoma metastasis"})["diagnosis"] == "melanoma metastasis"
    assert legacy_clinical({**melanocytic, "diagnosis_3": "Melanoma in situ"})["diagnosis"] == "melanoma"
    assert legacy_clinical({"diagnosis_1": "Benign", "diagnosis_2": "Benign soft tissue proliferations - Vascular",
                            "diagnosis_3": "Hemangioma"})["diagnosis"] == "angioma"
    assert legacy_clinical({"diagnosis_1": "Benign", "diagnosis_2": "Benign soft tissue proliferations - Vascular"}
                           ) == {"diagnosis": "vascular lesion", "benign_malignant": "benign"}
    assert legacy_clinical({"diagnosis_1": "Benign", "diagnosis_2": "Cysts"}) == {
        "diagnosis": "Cysts", "benign_malignant": "benign"}  # no legacy word: the most specific level
    assert legacy_clinical({"anatom_site_1": "Trunk", "anatom_site_2": "Lateral trunk"}) == {
        "anatom_site_general": "lateral torso"}
    assert legacy_clinical({"anatom_site_special": "acral palms or soles"}) == {"anatom_site_general": "palms/soles"}
    assert len(LEGACY_DIAGNOSES) == len(V2_DIAGNOSIS_PATHS)  # every node names one term


def test_the_seed_walkthrough_runs_on_a_v2_only_archive_with_only_the_constructor_changed(tmp_path: Any) -> None:
    import warnings

    from isicarchive import Dataset, Image

    with LocalArchive(seed=8, config=ArchiveConfig(images=80), legacy_v1=False) as today:
        # the seed README, every step v2 has data for; only the constructor differs (against the real archive
        # it is plain IsicApi(); here the local archive stands in for it). Studies are staff-only on v2.
        api = IsicApi(hostname=today.url, api_version=2, cache_folder=tmp_path / "cache", progress=False)
        dataset = api.dataset("HAM10000")  # datasets are collections on v2
        assert isinstance(dataset, Dataset) and dataset.name == "HAM10000"
        image = api.image("ISIC_0000000")
        assert isinstance(image, Image)
        image.load_imagedata()
        image.load_superpixels()
        image.map_superpixels()
        data = image.data
        shape = data.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # NumPy 2.5 deprecates setting .shape
            data.shape = (shape[0] * shape[1], -1)
        m = image.superpixels["map"]
        label = 472 % len(m)  # local SLIC of a small image may make fewer than 473 superpixels
        count = m[label, -1]
        data[m[label, 0:count], 0] = 255
        assert (data[image.superpixels["idx"].ravel() == label, 0] == 255).all()
        sel = api.select_images([
            ["meta.acquisition.pixelsX", ">=", 100],
            ["meta.acquisition.image_type", "==", "dermoscopic"],
            ["meta.clinical.diagnosis", "!=", "nevus"]])
        assert sel and all(r["metadata"]["clinical"].get("diagnosis_3") != "Nevus" for r in sel.values())
        result = api.download_images(sel, folder=tmp_path / "big-non-nevi")
        assert result.ok and len(list((tmp_path / "big-non-nevi").glob("ISIC_*.jpg"))) == len(sel)
