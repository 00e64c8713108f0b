"""Lock files: written from selections and splits, materialised with every hash checked, drift reported."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from isicarchive import IsicApi
from isicarchive.cli import main
from isicarchive.errors import QueryError
from isicarchive.lockfile import materialise, read_lock, verify_lock
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.transport import RetryPolicy

CONFIG = ArchiveConfig(images=30, image_size=(48, 32), datasets=3, private_datasets=0)


@pytest.fixture
def server() -> LocalArchive:
    with LocalArchive(seed=29, config=CONFIG) as archive:
        yield archive


def v2(server: LocalArchive, **kw: object) -> IsicApi:
    return IsicApi(hostname=server.url, api_version=2, progress=False, backoff=0.001, **kw)  # type: ignore[arg-type]


def sha(server: LocalArchive, isic_id: str) -> str:
    return hashlib.sha256(server.data.image_jpeg(server.data.images_by_name[isic_id]["_id"])).hexdigest()


def test_a_lock_holds_the_archive_query_date_and_each_image(server: LocalArchive, tmp_path: Path) -> None:
    api = v2(server, cache_folder=tmp_path / "cache")
    selection = api.search_images("age_approx:[30 TO 70]")
    lock = selection.lock(tmp_path / "a.lock.json.gz")
    payload = json.loads(gzip.decompress((tmp_path / "a.lock.json.gz").read_bytes()))
    assert payload["archive"] == {"host": server.url, "api": "/api/v2", "api_version": 2}
    assert payload["selection"]["query"] == "age_approx:[30 TO 70]"
    assert payload["created"][:4] == "2026" or payload["created"][:2] == "20"
    assert sorted(lock.ids) == sorted(selection.keys()) and len(payload["images"]) == len(selection)
    row = lock.row(lock.ids[0])
    image = server.data.images_by_name[lock.ids[0]]
    record = server.data.search_record(image)
    assert row["sha256"] == sha(server, lock.ids[0])
    assert row["bytes"] == len(server.data.image_jpeg(image["_id"]))
    assert row["license"] == record["copyright_license"] and row["attribution"] == record["attribution"]
    expected = server.data.lesion_and_patient(image)
    assert (row["patient_id"], row["lesion_id"]) == (expected.get("patient_id"), expected.get("lesion_id"))
    assert read_lock(tmp_path / "a.lock.json.gz").ids == lock.ids


def test_splits_lock_every_part_in_one_file(server: LocalArchive, tmp_path: Path) -> None:
    api = v2(server, cache_folder=tmp_path / "cache")
    parts = api.search_images("").split({"train": 0.6, "validation": 0.2, "test": 0.2}, seed=3)
    lock = parts.lock(tmp_path / "split.lock.json")
    assert {name: sorted(ids) for name, ids in lock.parts().items()} == \
           {name: sorted(part.keys()) for name, part in parts.items()}
    assert lock.split == {"by": "patient_id", "stratify": None, "seed": 3,
                          "fractions": {"train": 0.6, "validation": 0.2, "test": 0.2}}


def test_materialise_fetches_again_an_image_whose_transfer_failed_through_every_retry(
        server: LocalArchive, tmp_path: Path) -> None:
    lock = v2(server).search_images("").lock(tmp_path / "all.lock.json")
    victim = lock.ids[3]
    api = v2(server)
    attempts = RetryPolicy().body_retries + 1  # the session keeps the default policy
    cuts = server.faults.add("truncate", rf"/storage/images/{victim}\.jpg", times=attempts, fraction=0.4)
    try:
        result = materialise(tmp_path / "all.lock.json", tmp_path / "out", api=api)
    finally:
        server.faults.clear()
    assert cuts.fired == attempts  # the first round's transfer of the victim failed on every attempt
    assert result.ok and not result.failed and sorted(result.verified) == sorted(lock.ids)
    assert hashlib.sha256((tmp_path / "out" / f"{victim}.jpg").read_bytes()).hexdigest() == sha(server, victim)


def test_materialise_checks_every_hash_also_through_faults(server: LocalArchive, tmp_path: Path) -> None:
    lock = v2(server).search_images("").lock(tmp_path / "all.lock.json")
    server.faults.add("truncate", r"/storage/images/", probability=0.3, fraction=0.4)
    server.faults.add("status", r"/storage/images/", probability=0.2, status=503)
    try:
        result = materialise(tmp_path / "all.lock.json", tmp_path / "out", api=v2(server))
    finally:
        server.faults.clear()
    assert any(r.fault for r in server.requests(r"/storage/images/"))
    assert result.ok and sorted(result.verified) == sorted(lock.ids), result.failed
    for isic_id in lock.ids:
        assert hashlib.sha256((tmp_path / "out" / f"{isic_id}.jpg").read_bytes()).hexdigest() == sha(server, isic_id)
    sums = (tmp_path / "out" / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(lock) and sums[0] == f"{lock.sha256[0]}  {lock.ids[0]}.jpg"


def test_a_file_that_differs_from_the_lock_is_named_and_not_kept(server: LocalArchive, tmp_path: Path) -> None:
    lock = v2(server).search_images("").lock()
    victim = lock.ids[4]
    lock.sha256[4] = "0" * 64  # the archive now serves other bytes than were locked
    result = materialise(lock, tmp_path / "out", api=v2(server))
    assert not result.ok and list(result.mismatched) == [victim]
    assert not (tmp_path / "out" / f"{victim}.jpg").exists()
    with pytest.raises(Exception, match=victim):
        result.raise_for_problems()


def test_one_byte_tampered_verify_names_the_file(server: LocalArchive, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    v2(server).search_images("").lock(tmp_path / "l.json.gz")
    assert materialise(tmp_path / "l.json.gz", tmp_path / "out").ok
    victim = sorted((tmp_path / "out").glob("ISIC_*.jpg"))[7]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x20
    victim.write_bytes(bytes(data))
    report = verify_lock(tmp_path / "l.json.gz", folder=tmp_path / "out")
    assert report.files_changed == [victim.stem] and not report.ok
    assert main(["--json", "lock", "verify", str(tmp_path / "l.json.gz"), "--folder", str(tmp_path / "out")]) == 1
    assert json.loads(capsys.readouterr().out)["files_changed"] == [victim.stem]


def test_drift_names_a_withdrawn_id_an_added_one_and_changed_metadata(server: LocalArchive, tmp_path: Path) -> None:
    lock = v2(server).search_images("").lock(tmp_path / "l.json")
    assert verify_lock(tmp_path / "l.json").ok
    data = server.data
    changed = data.images_by_name[lock.ids[5]]
    changed["meta"]["clinical"]["sex"] = "female" if changed["meta"]["clinical"].get("sex") != "female" else "male"
    added = data.add_images(1)[0]
    withdrawn = data.images_by_name[lock.ids[-1]]  # the last: the generated lesion ids of others stay
    data.images.remove(withdrawn)
    data._index()  # the archive's look-ups and views, rebuilt as after any change
    report = verify_lock(tmp_path / "l.json")
    assert report.gone == [withdrawn["name"]]
    assert report.added == [added["name"]]
    assert report.metadata_changed == [changed["name"]]
    assert not report.bytes_changed and not report.license_changed
    assert withdrawn["name"] in str(report)


def test_the_lock_round_trips_between_v2_v1_and_an_archive_on_disk(server: LocalArchive, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    lock = v2(server).search_images("sex:female").lock()
    v1 = IsicApi(hostname=server.url, api_version=1, progress=False, backoff=0.001)
    assert materialise(lock, tmp_path / "from-v1", api=v1).ok  # the same bytes through the legacy API
    on_disk = IsicApi(hostname=(tmp_path / "from-v1").as_uri(), progress=False)
    again = on_disk.search_images("").lock()
    assert (again.ids, again.sha256, again.size) == (lock.ids, lock.sha256, lock.size)
    assert materialise(again, tmp_path / "from-disk", api=on_disk).ok
    assert materialise(again, tmp_path / "from-v2", api=v2(server)).ok
    assert verify_lock(again, api=v2(server)).bytes_changed == []
    from_v1 = v1.select_images(["name", "in", lock.ids]).lock()
    assert (from_v1.ids, from_v1.sha256) == (lock.ids, lock.sha256)
    assert from_v1.selection["criteria"] == [["name", "in", lock.ids]]
    assert verify_lock(from_v1, api=v1).ok  # the criteria run again on the legacy API


def test_deep_verification_compares_every_sha256(server: LocalArchive, tmp_path: Path) -> None:
    lock = v2(server).search_images("").lock()
    lock.sha256[3] = "0" * 64  # bytes that changed at the same size: only their digest tells
    assert verify_lock(lock, api=v2(server)).bytes_changed == []
    assert verify_lock(lock, api=v2(server, cache_folder=tmp_path), deep=True).bytes_changed == [lock.ids[3]]


def test_a_lock_with_a_malformed_digest_is_refused(server: LocalArchive, tmp_path: Path) -> None:
    payload = v2(server).search_images("").lock().as_json()
    payload["images"][0][2] = "../../etc/passwd"
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    with pytest.raises(QueryError, match="64 hex digits"):
        read_lock(tmp_path / "bad.json")


def test_lock_cli_create_materialise_verify(server: LocalArchive, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.lock.json.gz"
    assert main(["--host", server.url, "--api", "v2", "--json", "lock", "create", str(out), "-s",
                 "age_approx:[20 TO 90]", "--split", "train=0.8,test=0.2"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["images"] == len(read_lock(out)) > 0
    assert main(["--json", "lock", "materialise", str(out), "--to", str(tmp_path / "imgs")]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] == created["images"]
    assert main(["--json", "lock", "verify", str(out), "--folder", str(tmp_path / "imgs")]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["--json", "lock", "audit", str(out)]) == 0  # split by patient: nothing shared
    assert json.loads(capsys.readouterr().out)["parts"].keys() == {"train", "test"}


def test_criteria_with_sets_and_patterns_are_written_as_json(server: LocalArchive, tmp_path: Path) -> None:
    import re

    api = IsicApi(hostname=server.url, api_version=1, progress=False, backoff=0.001)
    selection = api.select_images([["meta.clinical.sex", "in", {"female", "male"}],
                                   ["name", "match", re.compile(r"ISIC_000000[0-4]")]])
    lock = selection.lock(tmp_path / "c.json")
    assert read_lock(tmp_path / "c.json").selection["criteria"] == [
        ["meta.clinical.sex", "in", ["female", "male"]], ["name", "match", r"ISIC_000000[0-4]"]]
    assert verify_lock(lock, api=api).ok


def test_not_a_lock_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"images": []}')
    with pytest.raises(QueryError, match="not an isicarchive lock"):
        read_lock(tmp_path / "x.json")
