"""The leakage audit finds planted leaks: a shared patient, a shared lesion, a copied image, an archive overlap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from isicarchive import IsicApi
from isicarchive.leakage import audit
from isicarchive.lockfile import materialise
from isicarchive.selection import Selection
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture(scope="module")
def server() -> LocalArchive:
    with LocalArchive(seed=41, config=ArchiveConfig(images=30, image_size=(40, 30), datasets=2,
                                                   private_datasets=0)) as archive:
        yield archive


def api_of(server: LocalArchive, **kw: object) -> IsicApi:
    return IsicApi(hostname=server.url, api_version=2, progress=False, backoff=0.001, **kw)  # type: ignore[arg-type]


def test_a_split_by_patient_has_no_findings_and_check_prints_the_report(
        server: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    selection = api_of(server, cache_folder=tmp_path).search_images("")
    parts = selection.split({"train": 0.7, "test": 0.3}, by="patient_id", check=True)
    printed = capsys.readouterr().out
    assert "leakage audit of 2 parts" in printed and "no findings" in printed
    assert parts.audit().ok


def test_planted_shared_patient_and_lesion_are_found(server: LocalArchive, tmp_path: Path) -> None:
    selection = api_of(server, cache_folder=tmp_path).search_images("")
    parts = selection.split({"train": 0.5, "test": 0.5}, by="patient_id")
    # move one image of a train patient with several images into test: its patient (and lesion) now leak
    by_patient = parts["train"].group_by("patient_id")
    patient, images = next((p, s) for p, s in by_patient.items() if len(s) >= 2)
    moved = next(iter(images))
    parts["test"][moved] = parts["train"].pop(moved)
    report = audit(parts)
    assert report.shared_patients == [patient]
    lesion = parts["test"][moved]["metadata"]["clinical"].get("lesion_id")
    lesions_in_train = {r["metadata"]["clinical"].get("lesion_id") for r in parts["train"].values()}
    assert (lesion in report.shared_lesions) == (lesion in lesions_in_train)
    found = report.of_kind("patient")[0]
    assert moved in found.where["test"] and "patient" in str(report)


def test_a_lesion_shared_without_its_patient_is_found() -> None:
    train = Selection({"ISIC_0000001": {"isic_id": "ISIC_0000001", "metadata": {"clinical": {"lesion_id": "IL_1"}}}})
    test = Selection({"ISIC_0000002": {"isic_id": "ISIC_0000002", "metadata": {"clinical": {"lesion_id": "IL_1"}}}})
    report = audit({"train": train, "test": test}, check_bytes=False)
    assert report.shared_lesions == ["IL_1"] and report.shared_patients == []


def test_a_copied_image_is_found_by_its_sha256(server: LocalArchive, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    lock = api_of(server).search_images("").lock()
    assert materialise(lock, tmp_path / "copy", api=api_of(server)).ok
    # the same photograph uploaded twice, under two ids
    shutil.copyfile(tmp_path / "copy" / f"{lock.ids[3]}.jpg", tmp_path / "copy" / f"{lock.ids[20]}.jpg")
    on_disk = IsicApi(hostname=(tmp_path / "copy").as_uri(), progress=False)
    everything = on_disk.search_images("")
    parts = {"train": Selection({k: everything[k] for k in lock.ids[:15]}, session=on_disk),
             "test": Selection({k: everything[k] for k in lock.ids[15:]}, session=on_disk)}
    report = audit(parts)
    identical = report.identical_images
    assert len(identical) == 1 and identical[0].where == {"train": [lock.ids[3]], "test": [lock.ids[20]]}


def test_audit_of_a_lock_needs_no_archive(server: LocalArchive) -> None:
    lock = api_of(server).search_images("").split({"train": 0.6, "test": 0.4}, by="lesion_id").lock()
    train = [n for n, part in enumerate(lock.part) if part == "train"]
    test = [n for n, part in enumerate(lock.part) if part == "test"]
    lock.sha256[test[0]] = lock.sha256[train[0]]  # a copy
    report = audit(lock)
    assert [f.where for f in report.identical_images] == [{"train": [lock.ids[train[0]]],
                                                           "test": [lock.ids[test[0]]]}]


def test_overlap_between_two_archives(server: LocalArchive, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    online = api_of(server)
    lock = online.search_images("").lock()
    assert materialise(lock, tmp_path / "mirror", api=online).ok
    mirror = IsicApi(hostname=(tmp_path / "mirror").as_uri(), progress=False)
    ours = online.search_images("").split({"a": 0.5, "b": 0.5}, by="patient_id")
    theirs = mirror.search_images("")
    report = audit({"ours": ours["a"], "mirror": Selection({k: theirs[k] for k in list(ours["a"])[:2]},
                                                           session=mirror)})
    overlap = report.of_kind("archive_overlap")
    assert sorted(f.value for f in overlap) == sorted(list(ours["a"])[:2])
    assert not report.identical_images  # the same bytes in two archives are the overlap, not a copy


def test_near_duplicates_need_imagehash_or_are_skipped_with_a_note(server: LocalArchive, tmp_path: Path) -> None:
    parts = api_of(server, cache_folder=tmp_path).search_images("").split({"a": 0.5, "b": 0.5})
    report = audit(parts, near_duplicates=True, check_bytes=False)
    try:
        import imagehash  # noqa: F401
    except ImportError:
        assert any("imagehash" in note for note in report.notes)


def test_a_recompressed_copy_is_a_near_duplicate(server: LocalArchive, tmp_path: Path) -> None:
    pytest.importorskip("imagehash")
    pytest.importorskip("pyarrow")
    from PIL import Image as PILImage

    lock = api_of(server).search_images("").lock()
    assert materialise(lock, tmp_path / "copy", api=api_of(server)).ok
    original, victim = tmp_path / "copy" / f"{lock.ids[2]}.jpg", tmp_path / "copy" / f"{lock.ids[25]}.jpg"
    with PILImage.open(original) as image:
        image.save(victim, quality=85)  # the same picture, saved again: other bytes, the same look
    on_disk = IsicApi(hostname=(tmp_path / "copy").as_uri(), progress=False)
    everything = on_disk.search_images("")
    parts = {"train": Selection({k: everything[k] for k in lock.ids[:15]}, session=on_disk),
             "test": Selection({k: everything[k] for k in lock.ids[15:]}, session=on_disk)}
    report = audit(parts, near_duplicates=True)
    assert not report.identical_images
    pairs = [f.where for f in report.of_kind("near_duplicate")]
    assert {"train": [lock.ids[2]], "test": [lock.ids[25]]} in pairs
