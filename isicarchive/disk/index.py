"""The columnar index of an archive on disk: one Parquet file (pyarrow), built once, read on every open.

A row per image: ``isic_id``, ``file`` (where the image is inside the folder
or zip; null when the metadata lists an image the archive does not hold),
``attribution``, ``copyright_license``, ``public``, and one column per
metadata field, named ``acquisition.<field>`` or ``clinical.<field>``.  The
schema's metadata keeps the layout, the fingerprint of the metadata files
(rebuilt when it changes) and the problems found while building.

Searches run on the columns (:func:`isicarchive.search.column_mask`);
records are made from rows only when asked for.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .. import _json
from ..search import BOOLEAN, FIELDS, NUMBER
from .layouts import (
    ACQUISITION,
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    ArchiveFiles,
    Layout,
    LayoutError,
    detect,
    header_summary,
    layout_spec,
    records,
)

__all__ = ["INDEX_NAME", "FORMAT", "ArchiveIndex", "open_index"]

log = logging.getLogger("isicarchive.disk")

#: the name earlier versions gave the index beside the archive; such a file is never read (it may be planted)
INDEX_NAME = ".isicarchive-index.parquet"
#: bumped when the index's columns change meaning: an older index is rebuilt
FORMAT = "2"
_FIXED = ("isic_id", "file", "attribution", "copyright_license", "public")


class ArchiveIndex:
    """The index's table, with look-ups by id and records made on demand."""

    def __init__(self, table: Any, layout: str, problems: list[str]) -> None:
        self.table = table
        self.layout = layout
        self.problems = problems
        self._rows: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._fields: dict[str, str] = {}
        for name in table.column_names:
            if "." in name:
                self._fields.setdefault(name.split(".", 1)[1], name)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def rows(self) -> dict[str, int]:
        with self._lock:
            if self._rows is None:
                self._rows = {isic_id: n for n, isic_id in enumerate(self.table.column("isic_id").to_pylist())}
            return self._rows

    def column(self, field: str) -> Any:
        """A search field's column (None when no image has it)."""
        if field in ("isic_id", "copyright_license", "public"):
            return self.table.column(field)
        name = self._fields.get(field)
        return None if name is None else self.table.column(name)

    def records(self, rows: Any = None) -> list[dict]:
        """v2 records of the given row numbers (all rows by default), in that order."""
        table = self.table if rows is None else self.table.take(rows)
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        out = []
        for n in range(table.num_rows):
            # acquisition and clinical, and the challenge section of a release (isicarchive.releases)
            sections: dict[str, dict[str, Any]] = {"acquisition": {}, "clinical": {}}
            for name, values in columns.items():
                value = values[n]
                if value is None or "." not in name:
                    continue
                section, key = name.split(".", 1)
                sections.setdefault(section, {})[key] = value
            record: dict[str, Any] = {"isic_id": columns["isic_id"][n], "public": True, "metadata": sections}
            for key in ("attribution", "copyright_license"):
                if columns[key][n] is not None:
                    record[key] = columns[key][n]
            record["files"] = {"full": {"path": columns["file"][n]}}
            if columns.get("mask") and columns["mask"][n] is not None:  # a release's lesion mask (releases)
                record["files"]["mask"] = {"path": columns["mask"][n]}
            out.append(record)
        return out


def _build(files: ArchiveFiles, layout: Layout) -> tuple[Any, list[str]]:
    import pyarrow as pa

    images = layout_spec(layout.name).images(files)
    problems = list(files.problems)
    seen: set[str] = set()
    duplicates: list[str] = []
    columns: dict[str, list[Any]] = {name: [] for name in _FIXED}
    count = 0
    for record in records(files, layout):
        isic_id = record["isic_id"]
        if not isic_id:
            raise LayoutError(f"{layout.metadata[0]} in {files.root}: a row without an image id (row {count + 2})")
        if isic_id in seen:
            duplicates.append(isic_id)
            continue
        seen.add(isic_id)
        columns["isic_id"].append(isic_id)
        columns["file"].append(images.get(isic_id))
        columns["attribution"].append(record.get("attribution"))
        columns["copyright_license"].append(record.get("copyright_license"))
        columns["public"].append(True)
        for section in ("acquisition", "clinical"):
            for key, value in record["metadata"][section].items():
                column = columns.setdefault(f"{section}.{key}", [None] * count)
                column.append(value)
        count += 1
        for column in columns.values():
            if len(column) < count:
                column.append(None)
    if duplicates:
        raise _listed_twice(layout.metadata[0], files.root, len(duplicates), duplicates)
    problems += _coverage(columns["isic_id"], sum(f is None for f in columns["file"]), images)
    arrays = {name: _array(values, pa) for name, values in columns.items()}
    return pa.table(arrays), problems


def build_official_index(files: ArchiveFiles, layout: Layout) -> tuple[Any, list[str]]:
    """The index of an official-CLI folder straight from its CSV with pyarrow's reader: the row-by-row
    build takes minutes at archive scale, this seconds.  Values are typed as the row-by-row reading
    types them (``_typed`` in :mod:`isicarchive.disk.layouts`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    name = layout.metadata[0]
    try:
        raw = files.read(name)
    except OSError as exc:
        raise LayoutError(f"cannot read {name} in {files.root}: {exc.strerror or exc}") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    header = next(csv.reader([raw.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")]), [])
    if "isic_id" not in header:
        raise LayoutError(f"{name} in {files.root} lacks the column(s) ['isic_id'] ({header_summary(header)})")
    try:
        table = pacsv.read_csv(pa.py_buffer(raw), convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            raise LayoutError(f"{name} in {files.root} is not UTF-8 text") from None
        return _build(files, layout)  # ragged rows (a hand-edited file): the tolerant row-by-row reading
    ids = pc.utf8_trim_whitespace(table.column("isic_id"))
    if ids.null_count:
        raise LayoutError(f"{name} in {files.root}: a row without an image id")
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1)).to_pylist()
    if repeated:
        extra = pc.sum(pc.subtract(pc.filter(counts.field("counts"), pc.greater(counts.field("counts"), 1)), 1))
        raise _listed_twice(name, files.root, int(extra.as_py()), repeated)
    images = layout_spec(layout.name).images(files)
    id_list = ids.to_pylist()
    arrays: dict[str, Any] = {"isic_id": ids, "file": pa.array([images.get(i) for i in id_list], pa.string())}
    for fixed in ("attribution", "copyright_license"):
        arrays[fixed] = _untabbed(table.column(fixed), pc) if fixed in header else pa.nulls(len(id_list), pa.string())
    arrays["public"] = pa.repeat(True, len(id_list))
    for column in header:
        if column in _FIXED or not column:
            continue
        section = "acquisition" if column in ACQUISITION else "clinical"
        values = _typed_column(column, _untabbed(table.column(column), pc), pa, pc)
        if values.null_count < len(values):
            arrays[f"{section}.{column}"] = values
    problems = list(files.problems) + _coverage(id_list, arrays["file"].null_count, images)
    return pa.table(arrays), problems


def _listed_twice(name: str, root: Path, extra: int, ids: list[str]) -> LayoutError:
    return LayoutError(f"{name} in {root} lists {extra} image(s) more than once ({', '.join(sorted(set(ids))[:10])}); "
                       "an archive names each image once")


def _untabbed(values: Any, pc: Any) -> Any:
    return pc.replace_substring_regex(values, "^\t", "")  # the archive's guard against spreadsheet formulas


def _typed_column(field: str, values: Any, pa: Any, pc: Any) -> Any:
    kind = FIELDS.get(field)
    if kind == NUMBER or field in INTEGER_FIELDS:
        try:
            numbers = pc.cast(pc.utf8_trim_whitespace(values), pa.float64())
        except pa.ArrowInvalid:
            return values  # text in a number column (a hand-edited CSV): kept as text
        integral = field not in FLOAT_FIELDS and pc.all(pc.equal(pc.floor(numbers), numbers)).as_py() is not False
        return pc.cast(numbers, pa.int64()) if integral else numbers
    if kind == BOOLEAN:
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
        if pc.all(pc.or_(pc.is_null(lowered), pc.is_in(lowered, pa.array(["true", "false", "1", "0"])))).as_py():
            return pc.if_else(pc.is_null(lowered), pa.scalar(None, pa.bool_()),
                              pc.is_in(lowered, pa.array(["true", "1"])))
    return values


def _coverage(ids: list[str], missing: int, images: dict[str, str]) -> list[str]:
    problems = []
    if missing:
        absent = [i for i in ids if i not in images][:5]
        problems.append(f"{missing} image(s) listed in the metadata are not in the archive "
                        f"(e.g. {', '.join(absent)}): their records are there, their pixels are not")
    unlisted = len(set(images) - set(ids))
    if unlisted:
        problems.append(f"{unlisted} image file(s) in the archive are not in its metadata: left out")
    return problems


def _array(values: list[Any], pa: Any) -> Any:
    """A column of one type: mixed numbers and text (hand-edited CSVs) become text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _read(path: Path, fingerprint: str) -> ArchiveIndex | None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        log.info("the index %s is unreadable (%s): building it again", path, type(exc).__name__)
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"isicarchive.format") != FORMAT.encode() or meta.get(b"isicarchive.fingerprint") != \
            fingerprint.encode():
        return None
    problems = _json.loads(meta.get(b"isicarchive.problems", b"[]"))
    return ArchiveIndex(table, meta.get(b"isicarchive.layout", b"").decode(), problems)


def _write(path: Path, table: Any, layout: str, fingerprint: str, problems: list[str]) -> None:
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata({
        "isicarchive.format": FORMAT, "isicarchive.layout": layout, "isicarchive.fingerprint": fingerprint,
        "isicarchive.problems": json.dumps(problems)})
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".index-", suffix=".part")
    os.close(handle)
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)  # readers see the old index or the new one, whole
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def user_index_folder() -> Path:
    """Where indexes live without a cache folder: the user's own cache folder
    (``ISICARCHIVE_INDEX_FOLDER`` overrides it).  Never inside the archive: whoever made the archive
    could plant an index there, and the index says which file is which image."""
    override = os.environ.get("ISICARCHIVE_INDEX_FOLDER")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "isicarchive" / "disk-indexes"


def index_location(root: Path, cache_root: Path | None) -> Path:
    """Where the index lives: the session's cache folder, else the user's (one file per archive path)."""
    if cache_root is not None:
        return cache_root / "diskindex.parquet"
    key = hashlib.sha256(str(root).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return user_index_folder() / f"{key}.parquet"


def open_index(files: ArchiveFiles, cache_root: Path | None) -> ArchiveIndex:
    """The archive's index: read when it is current, else built (and kept where it can be)."""
    layout = detect(files)
    try:
        fingerprint = files.fingerprint(layout.metadata)
    except OSError as exc:
        raise LayoutError(f"cannot read the metadata of {files.root}: {exc.strerror or exc}") from None
    location = index_location(files.root, cache_root)
    if location.exists():
        index = _read(location, fingerprint)
        if index is not None:
            return index
    table, problems = (layout_spec(layout.name).build or _build)(files, layout)
    for problem in problems:
        log.warning("%s: %s", files.root, problem)
    try:
        _write(location, table, layout.name, fingerprint, problems)
    except OSError as exc:
        log.warning("the index of %s could not be kept at %s (%s): built again next time", files.root,
                    location, exc.strerror or exc)
    return ArchiveIndex(table, layout.name, problems)
