"""Archives on disk someone else made: planted indexes, links out of the folder, zip bombs, files that
are not the images they say; every path confined to the archive, every size bounded."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from forked import forked_answer
from PIL import Image as PILImage
from reliability_report import record  # type: ignore[import-not-found]

pytest.importorskip("pyarrow")

import isicarchive.limits  # noqa: E402
from isicarchive import IsicApi, IsicError  # noqa: E402
from isicarchive.disk.layouts import LayoutError  # noqa: E402

SECRET = "root:hunter2-VICTIM-SECRET:0:0"


def jpeg(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def official_folder(root: Path, count: int = 3) -> Path:
    """A small folder in the official CLI's layout: metadata.csv and ``count`` JPEGs."""
    root.mkdir(parents=True)
    lines = ["isic_id,attribution,copyright_license,age_approx"]
    for n in range(1, count + 1):
        (root / f"ISIC_{n:07d}.jpg").write_bytes(jpeg((40 * n, 20, 20)))
        lines.append(f"ISIC_{n:07d},Somewhere,CC-0,{30 + n}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def offline(location: Path, **kw: object) -> IsicApi:
    return IsicApi(hostname=location.as_uri(), progress=False, **kw)  # type: ignore[arg-type]


def export(location: Path, out: Path, **kw: object):  # noqa: ANN201 - a DownloadResult
    disk = offline(location, **kw)
    return disk.download_images(disk.search_images(""), out)


def plant_index(folder: Path, file_column: str) -> None:
    """An index where earlier versions kept it (beside the archive), as an attacker would write it:
    current by the old check (the metadata's size and time), its first image's file elsewhere."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stat = (folder / "metadata.csv").stat()
    table = pa.table({"isic_id": ["ISIC_0000001"], "file": [file_column], "attribution": ["x"],
                      "copyright_license": ["CC-0"], "public": [True]})
    table = table.replace_schema_metadata({
        "isicarchive.format": "1", "isicarchive.layout": "official", "isicarchive.problems": "[]",
        "isicarchive.fingerprint": f"metadata.csv:{stat.st_size}:{stat.st_mtime_ns}"})
    pq.write_table(table, folder / ".isicarchive-index.parquet")


def test_a_planted_index_is_not_trusted(tmp_path: Path) -> None:
    victim = tmp_path / "victim_secret.txt"
    victim.write_text(SECRET)
    folder = official_folder(tmp_path / "archive")
    plant_index(folder, "../victim_secret.txt")
    result = export(folder, tmp_path / "out")
    exported = tmp_path / "out" / "ISIC_0000001.jpg"
    assert SECRET.encode() not in exported.read_bytes()
    assert exported.read_bytes() == (folder / "ISIC_0000001.jpg").read_bytes()
    assert sorted(result.downloaded) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert not any(folder.glob(".*parquet*")) or (folder / ".isicarchive-index.parquet").stat().st_size < 4096
    assert len(list((tmp_path / "disk-indexes").glob("*.parquet"))) == 1  # the index lives outside the archive
    record("archive on disk", "export of a folder holding a planted .isicarchive-index.parquet",
           "the index names ../victim_secret.txt as ISIC_0000001's file, its fingerprint the metadata's size+mtime",
           "the planted index is never read (indexes live in the user's cache, freshness by SHA-256 of the "
           "metadata): the real image is exported, the secret nowhere")


def test_the_index_is_rebuilt_when_the_metadata_changes_with_the_same_size_and_time(tmp_path: Path) -> None:
    folder = official_folder(tmp_path / "archive")
    assert offline(folder).image("ISIC_0000002").meta["clinical"]["age_approx"] == 32  # indexed
    stat = (folder / "metadata.csv").stat()
    text = (folder / "metadata.csv").read_text().replace("ISIC_0000002,Somewhere,CC-0,32",
                                                          "ISIC_0000002,Somewhere,CC-0,77")
    (folder / "metadata.csv").write_text(text)
    os.utime(folder / "metadata.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time
    assert offline(folder).image("ISIC_0000002").meta["clinical"]["age_approx"] == 77
    record("archive on disk", "reopen after metadata.csv changed", "same size and modification time",
           "the index is rebuilt (freshness by the metadata's SHA-256): the new value is read")


def test_index_paths_and_names_are_confined_to_the_archive(tmp_path: Path) -> None:
    (tmp_path / "victim_secret.txt").write_text(SECRET)
    folder = official_folder(tmp_path / "archive")
    disk = offline(folder)
    for path in ("../victim_secret.txt", str(tmp_path / "victim_secret.txt"),
                 "ISIC_0000001.jpg/../../victim_secret.txt"):
        forged = {"isic_id": "ISIC_0000001", "files": {"full": {"path": path}}}
        with pytest.raises(IsicError, match="not a path inside the archive"):
            disk._backend.read_image(forged)
        with pytest.raises(IsicError):
            disk._backend.local_path(forged)
    zipped = tmp_path / "archive.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, path.name)
        zf.writestr("../victim.jpg", jpeg())
    disk = offline(zipped)
    with pytest.raises(IsicError, match="not a path inside the archive"):
        disk._backend.read_image({"isic_id": "ISIC_0000001", "files": {"full": {"path": "../victim.jpg"}}})
    record("archive on disk", "a record or index naming ../file, /abs/path or a/../../file",
           "folder and zip", "LayoutError (an IsicError): nothing outside the archive is read")


def test_exported_bytes_must_be_the_image_they_claim(tmp_path: Path) -> None:
    folder = official_folder(tmp_path / "archive")
    (folder / "ISIC_0000002.jpg").write_text(SECRET)  # text under an image's name
    png = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(png, "PNG")
    (folder / "ISIC_0000003.jpg").write_bytes(png.getvalue())  # a PNG under a JPEG's name
    result = export(folder, tmp_path / "out")
    assert result.downloaded == ["ISIC_0000001"]
    assert set(result.failed) == {"ISIC_0000002", "ISIC_0000003"}
    assert all("not the image/jpeg its name says" in why for why in result.failed.values())
    assert sorted(p.name for p in (tmp_path / "out").glob("ISIC_*")) == ["ISIC_0000001.jpg"]
    record("archive on disk", "export of ISIC_x.jpg files holding text or a PNG", "folder",
           "those images are reported failed and not written; the others are exported")


def bomb_zip(path: Path, inflated: int) -> Path:
    """A zip in the official layout whose second image inflates to ``inflated`` bytes of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.csv", "isic_id,attribution,copyright_license\n"
                    + "".join(f"ISIC_{n:07d},Somewhere,CC-0\n" for n in (1, 2, 3)))
        zf.writestr("ISIC_0000001.jpg", jpeg())
        zf.writestr("ISIC_0000003.jpg", jpeg())
        with zf.open("ISIC_0000002.jpg", "w", force_zip64=True) as member:
            block = b"\xff\xd8\xff" + bytes((1 << 20) - 3)
            for _ in range(inflated >> 20):
                member.write(block)
                block = bytes(1 << 20)
    return path


def test_zip_bombs_are_refused_and_the_export_goes_on(tmp_path: Path) -> None:
    bomb = bomb_zip(tmp_path / "bomb.zip", 48 << 20)
    assert bomb.stat().st_size < 200_000
    result = export(bomb, tmp_path / "out")
    assert sorted(result.downloaded) == ["ISIC_0000001", "ISIC_0000003"]
    assert "zip bomb" in result.failed["ISIC_0000002"]
    assert not (tmp_path / "out" / "ISIC_0000002.jpg").exists()
    previous = isicarchive.limits.configure(zip_ratio=100_000, archive_file_bytes=16 << 20)
    try:
        result = export(bomb, tmp_path / "out2")
        assert "larger than the 16777216 bytes" in result.failed["ISIC_0000002"]
        isicarchive.limits.configure(zip_total_bytes=8 << 20)
        with pytest.raises(LayoutError, match="zip bomb"):
            offline(bomb)
    finally:
        isicarchive.limits.configure(**vars(previous))
    record("archive on disk", "export of a zip with a 150 KB member that inflates to 48 MiB (ratio ~330)",
           "zip bomb", "that member is a LayoutError (ratio, or size over archive_file_bytes); the other images "
           "are exported; a zip whose members add up past zip_total_bytes is refused when opened")


def test_a_member_that_lies_about_its_size_is_never_inflated_past_it(tmp_path: Path) -> None:
    import json
    import tracemalloc

    path = bomb_zip(tmp_path / "liar.zip", 16 << 20)  # four times the bound below
    raw = bytearray(path.read_bytes())
    start = raw.rfind(b"ISIC_0000002.jpg") - 46  # its entry in the central directory (the last mention)
    assert raw[start:start + 4] == b"PK\x01\x02"
    raw[start + 24:start + 28] = (100).to_bytes(4, "little")  # it says 100 bytes, it inflates to 16 MiB
    path.write_bytes(bytes(raw))
    disk = IsicApi(hostname=path.as_uri(), progress=False)
    # traced in a process of its own, forked with this thread alone: stopping tracemalloc while other threads
    # allocate can crash Python 3.11 (an xdist worker died so, with this worker's archive servers' threads about)
    def trace() -> str:
        tracemalloc.start()
        try:
            disk._backend.read_image({"isic_id": "ISIC_0000002", "files": {"full": {"path": "ISIC_0000002.jpg"}}})
            return json.dumps([None, tracemalloc.get_traced_memory()[1]])
        except IsicError as exc:
            return json.dumps([str(exc), tracemalloc.get_traced_memory()[1]])

    answer = forked_answer(trace, timeout=120)
    assert answer, "the child hung"
    assert not answer.startswith("the child failed"), answer
    error, peak = json.loads(answer)
    assert error is not None and "damaged" in error, error
    assert 0 <= peak < 4 << 20
    record("archive on disk", "a zip member announcing 100 bytes that inflates to 16 MiB", "lying size",
           f"LayoutError 'damaged'; inflated no further than announced (peak {peak >> 20} MiB traced)")


def test_links_out_of_a_folder_archive_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "photo.jpg").write_bytes(jpeg((1, 2, 3)))  # a real image: the link is what is refused
    (outside / "passwd").write_text(f"{SECRET}\nsecond line\n")
    folder = official_folder(tmp_path / "archive")
    (folder / "ISIC_0000002.jpg").unlink()
    (folder / "ISIC_0000002.jpg").symlink_to(outside / "photo.jpg")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    result = export(folder, tmp_path / "out")
    assert "ISIC_0000002" not in result.downloaded
    assert not (tmp_path / "out" / "ISIC_0000002.jpg").exists()
    assert sorted(result.downloaded) == ["ISIC_0000001", "ISIC_0000003"]
    problems = offline(folder)._backend.problems
    assert any("ISIC_0000002.jpg is a link out of the archive" in p for p in problems)

    linked = tmp_path / "linked-metadata"
    linked.mkdir()
    (linked / "metadata.csv").symlink_to(outside / "passwd")
    with pytest.raises(LayoutError) as caught:
        offline(linked)
    assert "hunter2" not in str(caught.value) and "VICTIM" not in str(caught.value)
    assert "link out of the archive" in str(caught.value)
    quoted = tmp_path / "not-metadata"
    quoted.mkdir()
    (quoted / "metadata.csv").write_text(f"{SECRET}\n")
    with pytest.raises(LayoutError, match="lacks the column") as caught:
        offline(quoted)
    assert "hunter2" not in str(caught.value)
    record("archive on disk", "a folder whose ISIC_x.jpg and metadata.csv are links out of it",
           "symlinks to a real JPEG and to a password file", "the image is left out (a problem is listed), "
           "the metadata a LayoutError; no error message quotes a file's contents")
