"""The archive's snapshot zip, from a path and read in place over HTTP (isicarchive.disk.snapshot)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# looked up, not imported: every xdist worker collects this module, one runs it (aiohttp's import alone cost
# each of the others 0.3 s of CPU)
if not all(importlib.util.find_spec(name) for name in ("pyarrow", "fsspec", "aiohttp")):
    pytest.skip("the snapshot extra (pyarrow, fsspec, aiohttp) is not installed", allow_module_level=True)

from isicarchive import IsicApi  # noqa: E402
from isicarchive.errors import IsicError  # noqa: E402
from isicarchive.testing import LocalArchive  # noqa: E402
from isicarchive.testing import snapshot as served  # noqa: E402

QUERIES = ["", "diagnosis_1:Malignant", "age_approx:[40 TO 60]", "-sex:male", 'copyright_license:"CC-BY-NC"']


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=83) as server:
        yield server


@pytest.fixture(scope="module")
def online(archive: LocalArchive) -> IsicApi:
    return IsicApi(hostname=archive.url, api_version=2, progress=False)


def snapshot_url(archive: LocalArchive) -> str:
    return f"{archive.url}/{served.SNAPSHOT_PATH}"


def ids(selection: object) -> list[str]:
    return sorted(selection.keys())  # type: ignore[attr-defined]


def test_the_served_snapshot_has_the_servers_layout(archive: LocalArchive) -> None:
    with zipfile.ZipFile(io.BytesIO(served.snapshot_zip(archive))) as bundle:
        names = bundle.namelist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in bundle.infolist())
    assert all(n.startswith("images/ISIC_") and n.endswith(".jpg") for n in names[:-4])
    assert names[-4] == "metadata.csv" and names[-1] == "attribution.txt"
    assert all(n.startswith("licenses/") for n in names[-3:-1])


@pytest.mark.parametrize("where", ["path", "http"])
def test_records_and_pixels_are_the_apis(where: str, archive: LocalArchive, online: IsicApi,
                                         tmp_path: Path) -> None:
    if where == "path":
        location = tmp_path / "ISIC_images.zip"
        location.write_bytes(served.snapshot_zip(archive))
        host = location.as_uri()
    else:
        host = snapshot_url(archive)
    session = IsicApi(hostname=host, cache_folder=tmp_path / "cache", progress=False)
    for query in QUERIES:
        assert ids(session.search_images(query)) == ids(online.search_images(query)), query
    mine = session.search_images("")
    theirs = online.search_images("")
    for isic_id in list(theirs)[:8]:
        assert mine[isic_id]["metadata"]["clinical"] == theirs[isic_id]["metadata"]["clinical"]
        assert mine[isic_id]["copyright_license"] == theirs[isic_id]["copyright_license"]
    for isic_id in list(theirs)[:3]:
        image, same = session.image(isic_id), online.image(isic_id)
        image.load_imagedata()
        same.load_imagedata()
        assert (image.data == same.data).all()


def test_over_http_only_the_needed_members_travel_and_the_directory_is_kept(
        archive: LocalArchive, tmp_path: Path) -> None:
    archive.clear_log()
    cache = tmp_path / "cache"
    session = IsicApi(hostname=snapshot_url(archive), cache_folder=cache, progress=False)
    opened = archive.bytes_sent("snapshots")
    with zipfile.ZipFile(io.BytesIO(served.snapshot_zip(archive))) as bundle:
        infos = {i.filename: i for i in bundle.infolist()}
        directory = len(served.snapshot_zip(archive)) - bundle.start_dir
    # the directory, metadata.csv and at most one 256 KB block before the directory
    assert opened <= directory + infos["metadata.csv"].compress_size + (256 << 10) + 4096
    chosen = session.search_images("diagnosis_1:Malignant")
    assert 0 < len(chosen) < len(infos) - 4
    archive.clear_log()
    result = session.download_images(chosen, tmp_path / "export")
    assert result.ok and len(result.downloaded) == len(chosen)
    members = sum(infos[f"images/{i}.jpg"].compress_size for i in chosen)
    assert members <= archive.bytes_sent("snapshots") <= 1.05 * members + 4096
    # a second session: the server is asked for the file's size only
    archive.clear_log()
    again = IsicApi(hostname=snapshot_url(archive), cache_folder=cache, progress=False)
    assert ids(again.search_images("")) == ids(session.search_images(""))
    assert archive.bytes_sent("snapshots") == 0 and len(archive.requests("snapshots")) <= 2


def test_a_cut_transfer_resumes_with_the_members_it_lacks(archive: LocalArchive, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    session = IsicApi(hostname=snapshot_url(archive), cache_folder=cache, progress=False)
    chosen = session.search_images("")
    archive.clear_log()
    # most requests are cut mid-body (seeded): the export's bulk requests, then the reads of single members
    rule = archive.faults.add("reset", r"snapshots", fraction=0.3, probability=0.7, methods=("GET",))
    first = session.download_images(chosen, tmp_path / "first", workers=4)
    archive.faults.remove(rule)
    assert rule.fired > 0 and first.failed
    complete = len(first.downloaded)
    archive.clear_log()
    # the same export again: it resumes from what the folder holds
    second = session.download_images(chosen, tmp_path / "first", workers=4)
    assert second.ok and len(second.downloaded) == len(chosen) - complete
    assert len(second.downloaded) + len(second.skipped) == len(chosen)
    # only the members the first run lacked crossed the network again (neighbours in one request)
    assert len(archive.requests("snapshots", method="GET")) <= len(chosen) - complete
    lacked = len(chosen) - complete
    largest = max(len(path.read_bytes()) for path in (tmp_path / "first").glob("*.jpg"))
    assert archive.bytes_sent("snapshots") <= lacked * (largest + 1024)


def lying(data: bytes, how: str) -> bytes:
    """The zip with its second central directory entry's member offset pointing elsewhere."""
    bundle = zipfile.ZipFile(io.BytesIO(data))
    first = bundle.infolist()[0]
    at = bundle.start_dir
    assert data[at:at + 4] == b"PK\x01\x02"
    at += 46 + sum(struct.unpack("<HHH", data[at + 28:at + 34]))  # the second entry's central header
    assert data[at:at + 4] == b"PK\x01\x02"
    offset = first.header_offset if how == "other member" else len(data) + 10
    return data[:at + 42] + struct.pack("<I", offset) + data[at + 46:]


@pytest.mark.parametrize("how", ["other member", "beyond the end"])
def test_a_directory_that_lies_is_a_clear_error(how: str, archive: LocalArchive, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    honest = served.snapshot_zip(archive)
    monkeypatch.setitem(served._BUILT, id(archive), (archive, lying(honest, how)))
    if how == "beyond the end":
        with pytest.raises(IsicError, match="central directory lies"):
            IsicApi(hostname=snapshot_url(archive), cache_folder=tmp_path / "cache", progress=False)
        return
    session = IsicApi(hostname=snapshot_url(archive), cache_folder=tmp_path / "cache", progress=False)
    second = sorted(session.search_images(""))[1]
    image = session.image(second)
    with pytest.raises(IsicError, match="central directory lies"):
        image.load_imagedata()


def test_an_export_checks_each_member_and_writes_it_once(archive: LocalArchive, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    honest = served.snapshot_zip(archive)
    bundle = zipfile.ZipFile(io.BytesIO(honest))
    third = bundle.infolist()[2]
    at = third.header_offset + 30 + len(third.filename) + third.compress_size // 2  # stored: the data's middle
    damaged = honest[:at] + bytes([honest[at] ^ 0xFF]) + honest[at + 1:]
    monkeypatch.setitem(served._BUILT, id(archive), (archive, damaged))
    session = IsicApi(hostname=snapshot_url(archive), cache_folder=tmp_path / "cache", progress=False)
    everything = session.search_images("")
    result = session.download_images(everything, tmp_path / "all")
    broken = third.filename[len("images/"):-len(".jpg")]
    assert list(result.failed) == [broken] and "CRC-32" in result.failed[broken]
    assert len(result.downloaded) == len(everything) - 1 and not (tmp_path / "all" / third.filename).exists()
    for name in result.downloaded[:5]:
        assert (tmp_path / "all" / f"{name}.jpg").read_bytes() == bundle.read(f"images/{name}.jpg")
    # handed from the transfer to the export: no copy of the images in the cache (metadata.csv is there)
    kept = {path.name for path in (tmp_path / "cache").rglob("members/*") if path.is_file()}
    assert kept == {hashlib.sha256(b"metadata.csv").hexdigest()}


def test_neighbouring_members_travel_in_one_request(archive: LocalArchive, tmp_path: Path) -> None:
    session = IsicApi(hostname=snapshot_url(archive), cache_folder=tmp_path / "cache", progress=False)
    everything = session.search_images("")
    archive.clear_log()
    result = session.download_images(everything, tmp_path / "all")
    assert result.ok and len(result.downloaded) == len(everything) > 30
    # the images lie one after another in the zip: a request per 256 kB span at most (the smallest span, a few
    # MB here cut for 8 workers), not one per image
    total = sum(len((tmp_path / "all" / f"{isic_id}.jpg").read_bytes()) for isic_id in everything)
    requests = len(archive.requests("snapshots", method="GET"))
    assert requests <= total // (256 << 10) + 2 and requests < len(everything) / 4
