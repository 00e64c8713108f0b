"""Bulk downloads: resumable, never twice, through 429 storms, in bounded memory."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from forked import forked_answer

from isicarchive import IsicApi
from isicarchive.downloads import DownloadResult
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture
def big_files() -> LocalArchive:
    config = ArchiveConfig(images=12, image_size=(64, 48), image_bytes=(400_000, 900_000), studies=1)
    with LocalArchive(seed=17, config=config) as server:
        yield server


def public_names(server: LocalArchive) -> list[str]:
    return [im["name"] for im in server.data.visible_images(None)]


def test_interrupted_transfer_resumes_with_range(big_files: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=big_files.url, api_version=1, cache_folder=tmp_path, progress=False, backoff=0.001)
    name = public_names(big_files)[0]
    record = big_files.data.images_by_name[name]
    size = big_files.data.image_file_size(record["_id"])
    # the connection closes after half the body (a reset may also lose what was in flight)
    big_files.faults.add("truncate", r"/download$", times=1, fraction=0.5)
    big_files.clear_log()
    api.image(name).load_imagedata()
    downloads = big_files.requests(r"/download$")
    assert len(downloads) == 2 and downloads[0].fault == "truncate"
    assert downloads[1].range is not None and downloads[1].range.startswith("bytes=")
    resumed_from = int(downloads[1].range.split("=")[1].rstrip("-"))
    assert resumed_from > size // 3  # the first half was kept
    assert downloads[1].bytes_sent == size - resumed_from  # only the rest was sent again
    cached = next(tmp_path.glob(f"?/image_{record['_id']}_*.jpg"))
    assert cached.read_bytes() == big_files.data.image_jpeg(record["_id"])


def test_connection_reset_mid_body_still_completes(big_files: LocalArchive, tmp_path: Path) -> None:
    name = public_names(big_files)[2]
    record = big_files.data.images_by_name[name]
    big_files.faults.add("reset", r"/download$", times=2, fraction=0.5)
    api = IsicApi(hostname=big_files.url, api_version=1, cache_folder=tmp_path, progress=False, backoff=0.001)
    api.image(name).load_imagedata()
    cached = next(tmp_path.glob(f"?/image_{record['_id']}_*.jpg"))
    assert cached.read_bytes() == big_files.data.image_jpeg(record["_id"])


def test_partial_file_from_an_earlier_run_is_resumed(big_files: LocalArchive, tmp_path: Path) -> None:
    name = public_names(big_files)[1]
    record = big_files.data.images_by_name[name]
    full = big_files.data.image_jpeg(record["_id"])
    api = IsicApi(hostname=big_files.url, api_version=1, cache_folder=tmp_path, progress=False)
    part = api.context.store._image_job(record).part
    part.write_bytes(full[: len(full) // 2])  # as a killed process leaves it
    big_files.clear_log()
    result = api.download_images([name])
    assert result.downloaded == [record["_id"]]
    assert big_files.bytes_sent(r"/download$") == len(full) - len(full) // 2
    assert result.paths[record["_id"]].read_bytes() == full and not part.exists()


def test_a_whole_part_file_is_put_in_place_without_fetching_it_again(big_files: LocalArchive,
                                                                      tmp_path: Path) -> None:
    # a run killed between writing the last byte and the rename leaves the whole file as a part file
    name = public_names(big_files)[3]
    record = big_files.data.images_by_name[name]
    full = big_files.data.image_jpeg(record["_id"])
    api = IsicApi(hostname=big_files.url, api_version=1, cache_folder=tmp_path, progress=False)
    part = api.context.store._image_job(record).part
    part.write_bytes(full)
    big_files.clear_log()
    result = api.download_images([name])
    assert result.ok and result.paths[record["_id"]].read_bytes() == full and not part.exists()
    assert big_files.bytes_sent(r"/download$") == 0
    assert [(r.method, r.status) for r in big_files.requests(r"/download$")] == [("GET", 416), ("HEAD", 200)]


def test_a_whole_part_file_of_a_presigned_link_is_checked_by_its_announced_size(tmp_path: Path) -> None:
    with LocalArchive(seed=6) as server:
        api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False, retries=0)
        record = next(iter(api.cache_images().values()))
        full = server.data.image_jpeg(server.data.images_by_name[record["isic_id"]]["_id"])
        part = api.context.store._image_job(record).part
        part.write_bytes(full)
        server.faults.add("status", r"^/storage/", status=403, methods=("HEAD",))  # signed for GET only
        result = api.download_images([record])
        assert result.ok and result.paths[record["isic_id"]].suffix == ".jpg"
        assert result.paths[record["isic_id"]].read_bytes() == full
        assert server.bytes_sent(r"^/storage/") == 0
        part.write_bytes(full + b"extra")  # longer than the file: fetched afresh
        result.paths[record["isic_id"]].unlink()
        again = api.download_images([record])
        assert again.ok and again.paths[record["isic_id"]].read_bytes() == full and not part.exists()


def test_duplicates_are_fetched_once_and_complete_files_skipped(big_files: LocalArchive, tmp_path: Path) -> None:
    names = public_names(big_files)[:5]
    api = IsicApi(hostname=big_files.url, api_version=1, cache_folder=tmp_path, progress=False, workers=8)
    big_files.clear_log()
    result = api.download_images(names + names + names)
    paths = [r.path for r in big_files.requests(r"/download$")]
    assert len(paths) == len(set(paths)) == 5
    assert len(result.downloaded) == 5 and not result.failed
    again = api.download_images(names)
    assert len(again.skipped) == 5 and not again.downloaded
    assert len(big_files.requests(r"/download$")) == 5


def test_429_storm_completes_with_every_file_intact(big_files: LocalArchive, tmp_path: Path) -> None:
    names = public_names(big_files)
    big_files.faults.add("status", r"/download$", probability=0.6, status=429, retry_after=0)
    api = IsicApi(hostname=big_files.url, api_version=1, progress=False, retries=12, backoff=0.001, workers=6)
    result = api.download_images(names, folder=tmp_path)
    assert result.ok and len(result.downloaded) == len(names)
    assert big_files.faults.rules[0].fired > 3
    for name in names:
        record = big_files.data.images_by_name[name]
        assert (tmp_path / f"{name}.jpg").read_bytes() == big_files.data.image_jpeg(record["_id"])
    with open(tmp_path / "metadata.csv", newline="") as fh:
        assert sorted(r["isic_id"] for r in csv.DictReader(fh)) == sorted(names)


def test_failures_are_reported_together_and_strict_raises(big_files: LocalArchive, tmp_path: Path) -> None:
    names = public_names(big_files)[:4]
    big_files.faults.add("status", r"/download$", status=503)
    api = IsicApi(hostname=big_files.url, api_version=1, cache_folder=tmp_path, progress=False, retries=1,
                  backoff=0.001)
    result = api.download_images(names)
    assert isinstance(result, DownloadResult) and len(result.failed) == 4 and not result.ok
    assert all("503" in reason for reason in result.failed.values())
    from isicarchive import ArchiveUnavailableError

    with pytest.raises(ArchiveUnavailableError, match="4 of 4"):
        api.download_images(names, strict=True)
    assert not list(tmp_path.glob("?/image_*"))  # nothing half-written in place


def test_v2_downloads_share_the_engine(tmp_path: Path) -> None:
    with LocalArchive(seed=3) as server:
        api = IsicApi(hostname=server.url, api_version=2, progress=False)
        selection = api.search_images("sex:male", limit=6)
        result = api.download_images(selection, folder=tmp_path)
        assert len(result.downloaded) == len(selection) > 0
        for name in selection:
            record = server.data.images_by_name[name]
            assert (tmp_path / f"{name}.jpg").stat().st_size == server.data.image_file_size(record["_id"])


def _kib(field: str) -> int:
    """A figure of this process's /proc/self/status, in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith(field + ":")).split()[1])


def test_memory_stays_bounded_for_a_200_mb_file(tmp_path: Path) -> None:
    config = ArchiveConfig(images=1, datasets=1, private_datasets=0, studies=0, image_size=(32, 24),
                           image_bytes=(200_000_000, 200_000_000))
    with LocalArchive(seed=2, config=config) as server:
        name = server.data.images[0]["name"]
        # the download runs in a child forked with this thread alone (the archive serves from this process), its
        # peak resident memory reset to what it has at the start (a fresh interpreter cost 0.45 s of CPU to
        # import the package)
        def download() -> str:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _kib("VmRSS")
            api = IsicApi(hostname=server.url, api_version=1, progress=False)
            result = api.download_images([name], folder=tmp_path)
            return f"{result.bytes} {(_kib('VmHWM') - before) // 1024}"

        answer = forked_answer(download, timeout=300)
    transferred, grown_mb = map(int, answer.split())
    assert transferred == 200_000_000
    assert (tmp_path / f"{name}.jpg").stat().st_size == 200_000_000
    assert grown_mb < 64  # streamed in 64 KiB chunks, never held whole


def test_folder_done_check_is_exact_not_a_prefix(big_files: LocalArchive, tmp_path: Path) -> None:
    # ISIC_0000001.5.jpg is another file; it must not count as ISIC_0000001's download
    name = public_names(big_files)[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{name}.5.jpg").write_bytes(b"someone else's file")
    api = IsicApi(hostname=big_files.url, api_version=1, progress=False, backoff=0.001)
    result = api.download_images([name], folder=out)
    assert result.downloaded == [big_files.data.images_by_name[name]["_id"]] and not result.skipped
    assert (out / f"{name}.jpg").read_bytes() == big_files.data.image_jpeg(big_files.data.images_by_name[name]["_id"])
    assert (out / f"{name}.5.jpg").read_bytes() == b"someone else's file"
    # and a complete file is skipped on a rerun
    assert api.download_images([name], folder=out).skipped == [big_files.data.images_by_name[name]["_id"]]
