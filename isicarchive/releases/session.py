"""A release as an archive on disk: its files and columnar index, for the disk backend.

:func:`isicarchive.releases.open` names the release; the disk backend asks
:func:`open_release` for the files and index of the folder it opens.  When
nothing was named (``IsicApi(hostname='file:///…')`` on a folder of a
release), :func:`detect` finds the release by its ground-truth files.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..disk.layouts import LayoutError
from .catalog import RELEASES, Release
from .files import ReleaseFiles
from .reader import PartContents, iter_records, parse_part, read_release

__all__ = ["OpenedRelease", "ReleaseChoice", "detect", "named", "open_release", "release_of", "reopened",
           "requested"]

log = logging.getLogger("isicarchive.releases")


@dataclass(frozen=True)
class ReleaseChoice:
    """What :func:`isicarchive.releases.open` asked for."""

    release: Release
    splits: tuple[str, ...] | None = None
    check_counts: bool = True


_REQUESTED: contextvars.ContextVar[ReleaseChoice | None] = contextvars.ContextVar("isicarchive_release",
                                                                                   default=None)


#: folder → the release last opened there by name in this process: a session opened again on the same
#: folder (a forked data-loader worker, SessionSpec.session) reads the same release and splits
_OPENED: dict[Path, ReleaseChoice] = {}
_OPENED_LOCK = threading.Lock()


@contextlib.contextmanager
def requested(choice: ReleaseChoice, location: Path) -> Iterator[None]:
    """The release the next disk session opened in this context reads (see :func:`open_release`)."""
    token = _REQUESTED.set(choice)
    try:
        yield
        with _OPENED_LOCK:
            _OPENED[location] = dataclasses.replace(choice, check_counts=False)  # warned once is enough
    finally:
        _REQUESTED.reset(token)


def release_of(api: Any) -> tuple[str, tuple[str, ...]] | None:
    """(release name, splits read) of a session on a release, for a worker to open the same; else None."""
    opened = getattr(getattr(getattr(api, "context", None), "backend", None), "release", None)
    if not isinstance(opened, OpenedRelease):
        return None
    return opened.release.name, tuple(opened.parts)


@contextlib.contextmanager
def reopened(release: tuple[str, tuple[str, ...]] | None) -> Iterator[None]:
    """A session opened in this context reads the release :func:`release_of` described (counts not
    warned about again); nothing changes for None."""
    if release is None:
        yield
        return
    name, splits = release
    token = _REQUESTED.set(ReleaseChoice(RELEASES[name], splits or None, check_counts=False))
    try:
        yield
    finally:
        _REQUESTED.reset(token)


def detect(files: ReleaseFiles) -> list[Release]:
    """The releases whose files (any split's ground truth, masks or HDF5 store) are in the view."""
    from .reader import missing_files

    found = []
    for release in RELEASES.values():
        there, _ = missing_files(release, files)
        if there and any(_identifying(release, split, files) for split in there):
            found.append(release)
    return found


def _identifying(release: Release, split: str, files: ReleaseFiles) -> bool:
    """A file only this release has: its truth, its masks folder, its HDF5 store (not shared image folders)."""
    part = release.part(split)
    if part.truth and files.find_any(part.truth):
        return True
    if part.masks and any(files.under(m) for m in part.masks):
        return True
    return bool(part.hdf5) and any(h.rsplit("/", 1)[-1] in part.hdf5 for h in files.hdf5_files)


@dataclass
class OpenedRelease:
    """The files, index and per-split contents of a release opened as an archive on disk."""

    release: Release
    files: ReleaseFiles
    index: Any
    parts: dict[str, PartContents]


def named(location: Path) -> bool:
    """Whether :func:`isicarchive.releases.open` named the release a disk session on ``location`` reads."""
    return _REQUESTED.get() is not None or location in _OPENED


def open_release(location: Path, cache_root: Path | None = None) -> OpenedRelease | None:
    """The release at ``location`` — the one :func:`requested` named, else the only one detected; None
    when no release was named and none is there.

    Raises
    ------
    LayoutError
        Several releases there and none named; a named release's files missing
        (:class:`~isicarchive.releases.reader.MissingFilesError`).
    """
    choice = _REQUESTED.get() or _OPENED.get(location)
    files = ReleaseFiles(location)
    try:
        if choice is None:
            found = detect(files)
            if not found:
                files.close()
                return None
            if len(found) > 1:
                names = ", ".join(r.name for r in found)
                raise LayoutError(f"{location} holds several challenge releases ({names}): open one with "
                                  f"isicarchive.releases.open(name, {str(location)!r})")
            choice = ReleaseChoice(found[0])
        release = choice.release
        kept: list[Any] = []

        def parse(listed: dict[str, PartContents]) -> None:
            # the index kept from an earlier open when the release's listing and CSVs are unchanged
            fingerprint = _fingerprint(release, files, listed)
            where = _index_location(release, files.root, cache_root)
            index = _read_index(where, fingerprint)
            if index is not None:
                for split, contents in listed.items():
                    contents.table = _rows_of(index.table, split)
            else:
                for split, contents in listed.items():
                    parse_part(release, release.part(split), files, contents)
                index = _index(release, files, listed)
                _keep_index(where, index, fingerprint, files.root)
            kept.append(index)

        parts = read_release(release, files, list(choice.splits) if choice.splits else None,
                             check_counts=choice.check_counts, parse=parse)
        index = kept[0]
    except BaseException:
        files.close()
        raise
    for problem in files.problems + index.problems:
        log.warning("%s: %s", location, problem)
    return OpenedRelease(choice.release, files, index, parts)


def _index(release: Release, files: ReleaseFiles, parts: dict[str, PartContents]) -> Any:
    """The columnar index of the release's records (the disk backend's :class:`ArchiveIndex`)."""
    import pyarrow as pa

    from ..disk.index import ArchiveIndex

    fixed = ("isic_id", "file", "mask", "attribution", "copyright_license", "public")
    lesion_masks = {i: m for contents in parts.values() for i, m in contents.masks.items() if isinstance(m, str)}
    columns: dict[str, list[Any]] = {name: [] for name in fixed}
    seen: dict[str, str] = {}
    problems: list[str] = []
    count = 0
    for record in iter_records(parts):
        isic_id = record["isic_id"]
        split = record["metadata"]["challenge"]["split"]
        if isic_id in seen:
            raise LayoutError(f"{release.name} at {files.root}: {isic_id} is listed twice ({seen[isic_id]} and "
                              f"{split}); a release names each image once")
        seen[isic_id] = split
        columns["isic_id"].append(isic_id)
        columns["file"].append(record["files"]["full"]["path"])
        columns["mask"].append(lesion_masks.get(isic_id))  # what training's Samples(target="mask") reads
        columns["attribution"].append(record.get("attribution"))
        columns["copyright_license"].append(record.get("copyright_license"))
        columns["public"].append(True)
        for section, values in record["metadata"].items():
            for key, value in values.items():
                if isinstance(value, dict):
                    continue
                name = f"{section}.{key}"
                if name not in columns:  # (setdefault would build the list of Nones for every value)
                    columns[name] = [None] * count
                columns[name].append(value)
        count += 1
        for column in columns.values():
            if len(column) < count:
                column.append(None)
    for split, contents in parts.items():
        listed = contents.ids
        absent = [i for i in listed if i not in contents.images]
        if absent:
            problems.append(f"{split}: {len(absent)} image(s) listed in the truth are not in the images folder "
                            f"(e.g. {', '.join(absent[:5])})")
        unlisted = len(set(contents.images) - set(listed))
        if unlisted:
            problems.append(f"{split}: {unlisted} image file(s) are not in the truth: left out")
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    tables = [pa.table(arrays)] if count else []
    tables += [contents.table for contents in parts.values() if contents.table is not None]
    for contents in parts.values():
        if contents.table is not None:
            for name in contents.table.column("isic_id").to_pylist():
                if name in seen:
                    raise LayoutError(f"{release.name} at {files.root}: {name} is listed twice; a release names "
                                      "each image once")
                seen[name] = contents.split
    if not tables:
        tables = [pa.table(arrays)]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if "public" in table.column_names:
        table = table.drop_columns(["public"])
    table = table.append_column("public", pa.repeat(True, table.num_rows))
    return ArchiveIndex(table, release.name, problems)


#: bumped when the columns of a release's index change meaning: an older kept index is built again
INDEX_FORMAT = "releases-1"


def _fingerprint(release: Release, files: ReleaseFiles, listed: dict[str, PartContents]) -> str:
    """What the index is made from: the release and its splits, every image and mask file by name, and the
    bytes of its truth, metadata and extra CSVs (a SHA-256 of all of it)."""
    digest = hashlib.sha256(f"{INDEX_FORMAT}\0{release.name}\0{sorted(listed)}".encode())
    for split, contents in sorted(listed.items()):
        part = release.part(split)
        digest.update(f"\0{split}\0".encode())
        for isic_id, name in sorted(contents.images.items()):
            digest.update(f"{isic_id}={name}\n".encode("utf-8", "surrogatepass"))
        for isic_id, found in sorted(contents.masks.items()):
            digest.update(f"{isic_id}~{sorted(found.items()) if isinstance(found, dict) else found}\n".encode(
                "utf-8", "surrogatepass"))
        for name in part.truth + part.metadata + part.extras:
            found_name = files.find(name)
            if found_name is not None:
                digest.update(f"\0{found_name}\0".encode("utf-8", "surrogatepass"))
                digest.update(files.read(found_name))
    return "sha256:" + digest.hexdigest()


def _index_location(release: Release, root: Path, cache_root: Path | None) -> Path:
    from ..disk.index import index_location

    where = index_location(root, cache_root)
    return where.with_name(f"{where.stem}.{release.name}.parquet")  # one per release: a folder may hold several


def _read_index(where: Path, fingerprint: str) -> Any:
    from ..disk.index import _read

    if not where.exists():
        return None
    index = _read(where, fingerprint)
    if index is None or "challenge.split" not in index.table.column_names:
        return None
    return index


def _keep_index(where: Path, index: Any, fingerprint: str, root: Path) -> None:
    from ..disk.index import _write

    try:
        _write(where, index.table, index.layout, fingerprint, index.problems)
    except OSError as exc:
        log.warning("the index of %s could not be kept at %s (%s): built again next time", root, where,
                    exc.strerror or exc)


def _rows_of(table: Any, split: str) -> Any:
    import pyarrow.compute as pc

    return table.filter(pc.equal(table.column("challenge.split"), split))
