"""Archives on disk: which layout a folder or zip has, and its metadata as v2 records.

Each layout is one entry of a registry (:class:`LayoutSpec`, :func:`register`):
how to recognise it, how to read its metadata as records and find its image
files, and (optionally) a faster way to build its columnar index.  A new
layout is one new entry::

    from isicarchive.disk.layouts import Layout, LayoutSpec, register

    def detect_mine(files):            # the metadata files if the folder has this layout, else None
        found = files.find("labels.tsv")
        return [found] if found else None

    def records_mine(files, layout):   # v2 records: isic_id, metadata.acquisition / clinical
        for line in files.text(layout.metadata[0]).splitlines()[1:]:
            isic_id, diagnosis = line.split("\t")
            yield make_record(isic_id, {"diagnosis_1": diagnosis})

    register(LayoutSpec("mine", "labels.tsv (isic_id, diagnosis_1) and JPEGs", detect_mine, records_mine))

Known layouts (a zip of any of them is read in place, never extracted):

``official``
    A folder of the official ``isic`` CLI (``isic image download``) or of
    :meth:`IsicApi.download_images(folder=…) <isicarchive.IsicApi.download_images>`:
    ``ISIC_….jpg`` files, ``metadata.csv`` (``isic_id, attribution,
    copyright_license`` and the v2 metadata columns), ``attribution.txt``,
    ``licenses/``.  The archive's own zip downloads have the same files.
``challenge-2020``
    ``ISIC_2020_Training_GroundTruth.csv`` (or ``…_v2.csv``): ``image_name,
    patient_id, lesion_id, sex, age_approx, anatom_site_general_challenge,
    diagnosis, benign_malignant, target`` and a folder of JPEGs.
``challenge-2019``
    ``ISIC_2019_Training_GroundTruth.csv`` (``image`` and one-hot ``MEL, NV,
    BCC, AK, BKL, DF, VASC, SCC, UNK``), ``ISIC_2019_Training_Metadata.csv``
    (``image, age_approx, anatom_site_general, lesion_id, sex``) and
    ``ISIC_2019_Training_Input/``.
``challenge-2018``
    Task 3: ``ISIC2018_Task3_Training_GroundTruth.csv`` (``image`` and one-hot
    ``MEL, NV, BCC, AKIEC, BKL, DF, VASC``), optionally
    ``ISIC2018_Task3_Training_LesionGroupings.csv`` (``image, lesion_id,
    diagnosis_confirm_type``), and ``ISIC2018_Task3_Training_Input/``.

Challenge columns become today's v2 metadata names (the table
:data:`CHALLENGE_CLASSES` and docs/archives-on-disk.md): ``image_name`` /
``image`` → ``isic_id``; ``anatom_site_general(_challenge)`` → the
``anatom_site_1..`` path (or ``anatom_site_special``) of
:data:`isicarchive.legacy.V2_SITE_PATHS`; a diagnosis term or a one-hot class
→ the ``diagnosis_1..`` path of :data:`isicarchive.legacy.V2_DIAGNOSIS_PATHS`;
``benign_malignant`` → ``diagnosis_1`` where nothing more specific is known.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .. import limits
from ..errors import LayoutError
from ..legacy import V2_DIAGNOSIS_PATHS, V2_SITE_PATHS, V2_SPECIAL_SITES
from ..search import BOOLEAN, FIELDS, NUMBER

__all__ = ["CHALLENGE_CLASSES", "LAYOUTS", "REGISTRY", "ArchiveFiles", "Layout", "LayoutError", "LayoutSpec",
           "canonical_id", "detect", "detection_order", "header_summary", "image_files", "layout_spec",
           "make_record", "open_files", "records", "register", "unregister", "ACQUISITION", "FLOAT_FIELDS",
           "INTEGER_FIELDS"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_ISIC_ID = re.compile(r"^(ISIC_\d{7})(?:_downsampled)?$")

#: a one-hot ground-truth class of the 2018 and 2019 challenges → the legacy diagnosis term it names
CHALLENGE_CLASSES: dict[str, str | None] = {
    "MEL": "melanoma", "NV": "nevus", "BCC": "basal cell carcinoma", "AK": "actinic keratosis",
    "AKIEC": "actinic keratosis", "BKL": "pigmented benign keratosis", "DF": "dermatofibroma",
    "VASC": "vascular lesion", "SCC": "squamous cell carcinoma", "UNK": None,
}


class ArchiveFiles:
    """The files of a folder or a zip, by their path inside it (``/``-separated)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = root.is_file()
        self.problems: list[str] = []
        self._zip: zipfile.ZipFile | None = None
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._names: list[str] | None = None  # a folder is listed when first needed: a reopen reads only the index
        if self.is_zip:
            try:
                self._zip = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError) as exc:
                raise LayoutError(f"{root} is neither a folder nor a readable zip ({exc})") from None
            names: list[str] = []
            declared = sum(info.file_size for info in self._zip.infolist())
            if declared > limits.current().zip_total_bytes:
                raise LayoutError(f"{root} would inflate to {declared} bytes, more than the "
                                  f"{limits.current().zip_total_bytes} a zip may (isicarchive.limits.configure("
                                  "zip_total_bytes=…) raises the limit): refused as a zip bomb")
            for info in self._zip.infolist():
                if info.is_dir():
                    continue
                if not _safe_member(info.filename):
                    # read in place, nothing is ever extracted; such a member is still no archive file
                    self.problems.append(f"zip member {info.filename!r} has an unsafe path: ignored")
                    continue
                names.append(info.filename)
            self._names = names
        elif not root.is_dir():
            raise LayoutError(f"{root} does not exist")

    @property
    def names(self) -> list[str]:
        """Every file inside (``/``-separated paths; hidden files left out)."""
        if self._names is None:
            self._names = self._walk()
        return self._names

    def _walk(self) -> list[str]:
        """The folder's files; a link is listed only when it stays inside the folder, and folders
        reached through links are not entered (they may lead out, or in circles)."""
        found: list[str] = []
        pending = [self.root]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                inside = str(PurePosixPath(*Path(entry.path).relative_to(self.root).parts))
                if entry.is_symlink():
                    if not self._inside(Path(entry.path)):
                        self.problems.append(f"{inside} is a link out of the archive: ignored")
                    elif entry.is_file():
                        found.append(inside)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found.append(inside)
        return found

    def _inside(self, path: Path) -> bool:
        """Whether a path, links resolved, is in the archive's folder."""
        return Path(os.path.realpath(path)).is_relative_to(self.root)

    def _confined(self, name: str) -> Path:
        """The file a name inside a folder archive stands for; :class:`LayoutError` for a name or a
        link that leads out of it (the name may come from an index or a record)."""
        if not isinstance(name, str) or not name or "\0" in name or not _safe_member(name):
            raise LayoutError(f"{str(name)[:80]!r} is not a path inside the archive {self.root}")
        path = self.root / name
        if not self._inside(path):
            raise LayoutError(f"{name[:80]} in {self.root} is a link out of the archive: not read")
        return path

    def find(self, basename: str) -> str | None:
        """The shallowest file of that name (a folder is searched at its top and one level down first)."""
        if self._zip is None:
            candidates = [self.root / basename] + sorted(p / basename for p in self.root.iterdir() if p.is_dir())
            for candidate in candidates:
                if candidate.is_file():
                    return str(PurePosixPath(*candidate.relative_to(self.root).parts))
        return next((n for n in sorted(self.names, key=len) if PurePosixPath(n).name == basename), None)

    def read(self, name: str) -> bytes:
        """A file's bytes: confined to the archive, at most ``limits.archive_file_bytes`` of them."""
        if self._zip is not None:
            if not isinstance(name, str) or not _safe_member(name):
                raise LayoutError(f"{str(name)[:80]!r} is not a path inside the archive {self.root}")
            return self._read_member(name)
        largest = limits.current().archive_file_bytes
        with open(self._confined(name), "rb") as fh:
            data = fh.read(largest + 1)
        if len(data) > largest:
            raise _too_large(name, self.root, largest)
        return data

    def _read_member(self, name: str) -> bytes:
        """A zip member's bytes: one positioned read of its data (and one inflate, checked against the
        member's CRC, when compressed) — zipfile's stream reader costs several times a plain file read."""
        assert self._zip is not None
        info = self._zip.getinfo(name)
        bounds = limits.current()
        if info.file_size > bounds.archive_file_bytes:
            raise _too_large(name, self.root, bounds.archive_file_bytes)
        if info.file_size > 1 << 20 and info.file_size > bounds.zip_ratio * max(info.compress_size, 1):
            raise LayoutError(f"{name} in {self.root} would inflate {info.compress_size} bytes to {info.file_size}, "
                              f"more than {bounds.zip_ratio} times (isicarchive.limits.configure(zip_ratio=…) "
                              "raises the limit): refused as a zip bomb")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1 or \
                not hasattr(os, "pread"):
            with self._zip.open(name) as member:  # other methods, encrypted members: zipfile's way
                data = member.read(info.file_size + 1)  # never more than the member says it holds
            if len(data) != info.file_size:
                raise LayoutError(f"{name} in {self.root}: the member is damaged (its size differs)")
            return data
        if self._fd is None:
            with self._fd_lock:
                if self._fd is None:
                    self._fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        header = os.pread(self._fd, 30, info.header_offset)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise LayoutError(f"{name} in {self.root}: damaged zip entry")
        start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + \
            int.from_bytes(header[28:30], "little")
        raw = os.pread(self._fd, info.compress_size, start)
        if info.compress_type == zipfile.ZIP_STORED:
            # checked by its size, as a file in a folder is (an image is decoded anyway): a CRC pass
            # would make reading from the zip three times slower than reading the extracted file
            if len(raw) != info.file_size:
                raise LayoutError(f"{name} in {self.root}: the member is cut short")
            return raw
        inflater = zlib.decompressobj(-15)
        try:
            # inflated no further than the size the member announces: a lying header cannot make it more
            data = inflater.decompress(raw, info.file_size + 1)
        except zlib.error:
            raise LayoutError(f"{name} in {self.root}: the member is damaged (it does not inflate)") from None
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise LayoutError(f"{name} in {self.root}: the member is damaged (size or CRC differ)")
        return data

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LayoutError(f"{name} in {self.root} is not UTF-8 text") from None
        except OSError as exc:
            raise LayoutError(f"cannot read {name} in {self.root}: {exc.strerror or exc}") from None

    def path_of(self, name: str) -> Path | None:
        """The file itself for a folder (None inside a zip)."""
        return None if self._zip is not None else self._confined(name)

    def fingerprint(self, metadata: list[str]) -> str:
        """What changes when the archive's metadata does, from their contents (sizes and times can be
        set to anything): a SHA-256 of the metadata files, or of a zip's directory (every member's
        name, size and CRC)."""
        digest = hashlib.sha256()
        if self._zip is not None:
            digest.update(str(self.root.stat().st_size).encode())
            for info in self._zip.infolist():
                digest.update(f"\0{info.filename}\0{info.CRC}:{info.file_size}:{info.compress_size}:"
                              f"{info.header_offset}".encode("utf-8", "surrogatepass"))
            return "zip-sha256:" + digest.hexdigest()
        for name in metadata:
            digest.update(f"\0{name}\0".encode("utf-8", "surrogatepass"))
            with open(self._confined(name), "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _too_large(name: str, root: Path, largest: int) -> LayoutError:
    return LayoutError(f"{name} in {root} is larger than the {largest} bytes a file of an archive may be "
                       "(isicarchive.limits.configure(archive_file_bytes=…) raises the limit): not read")


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not re.match(r"^[A-Za-z]:", name)


def open_files(location: str | os.PathLike[str]) -> ArchiveFiles:
    return ArchiveFiles(Path(location).expanduser().resolve())


@dataclass
class Layout:
    """A detected layout: its name and its metadata files."""

    name: str
    metadata: list[str]


def image_files(files: ArchiveFiles) -> dict[str, str]:
    """isic_id → the image file inside the archive (``ISIC_0000000.jpg``, or ``…_downsampled.jpg``)."""
    found: dict[str, str] = {}
    for name in files.names:
        path = PurePosixPath(name)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        match = _ISIC_ID.match(path.stem)
        if match and (match.group(1) not in found or path.stem == match.group(1)):
            found[match.group(1)] = name
    return found


# ---------------------------------------------------------------- records
def _rows(files: ArchiveFiles, name: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(files.text(name), newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in required if c not in columns]
    if missing:
        raise LayoutError(f"{name} in {files.root} lacks the column(s) {missing} ({header_summary(columns)})")
    try:
        return list(reader)
    except csv.Error as exc:
        raise LayoutError(f"{name} in {files.root} is not a readable CSV: {exc}") from None


def header_summary(columns: Sequence[str]) -> str:
    """What a header row holds, without quoting it: a file that is not the metadata (a link to a
    password file, a secret) must not have its first line shown in an error message."""
    known = [c for c in columns if c in FIELDS or c in ("image", "image_name", "attribution", "copyright_license")]
    return f"its first line has {len(columns)} column(s)" + (f", among them {list(known[:12])}" if known else
                                                            ", none of them a metadata field")


#: number fields that are not search fields, and the number fields that keep their fractions
INTEGER_FIELDS = frozenset({"pixels_x", "pixels_y", "acquisition_day"})
FLOAT_FIELDS = frozenset({"clin_size_long_diam_mm", "mel_thick_mm"})


def _typed(field_name: str, text: str) -> Any:
    """A CSV cell as the v2 record holds it: numbers for number fields, booleans for boolean ones."""
    text = text.strip()
    if text.startswith("\t"):  # the archive's guard against spreadsheet formulas
        text = text[1:]
    if text == "":
        return None
    kind = FIELDS.get(field_name)
    if kind == NUMBER or field_name in INTEGER_FIELDS:
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and field_name not in FLOAT_FIELDS else number
    if kind == BOOLEAN:
        return {"true": True, "false": False, "1": True, "0": False}.get(text.lower(), text)
    return text


#: v2 metadata fields that belong to the acquisition section
ACQUISITION = frozenset({"image_type", "dermoscopic_type", "tbp_tile_type", "pixels_x", "pixels_y",
                         "image_manipulation", "rcm_case_id"})


def _record(isic_id: str, attribution: str | None, licence: str | None, values: dict[str, Any]) -> dict:
    acquisition = {k: v for k, v in values.items() if k in ACQUISITION and v is not None}
    clinical = {k: v for k, v in values.items() if k not in ACQUISITION and v is not None}
    record: dict[str, Any] = {"isic_id": isic_id, "public": True, "metadata": {"acquisition": acquisition,
                                                                               "clinical": clinical}}
    if attribution:
        record["attribution"] = attribution
    if licence:
        record["copyright_license"] = licence
    return record


def canonical_id(name: str) -> str:
    """``ISIC_0000000`` for the names challenge files use (``ISIC_0000000_downsampled``)."""
    match = _ISIC_ID.match(name.strip())
    return match.group(1) if match else name.strip()


def _diagnosis(term: str | None) -> dict[str, str]:
    path = V2_DIAGNOSIS_PATHS.get(term or "")
    return {f"diagnosis_{n}": node for n, node in enumerate(path or (), 1)}


def site_fields(site: str | None) -> dict[str, str]:
    """A challenge's anatomic site on today's v2 fields (anatom_site_1.., anatom_site_special)."""
    site = (site or "").strip()
    out = {f"anatom_site_{n}": node for n, node in enumerate(V2_SITE_PATHS.get(site) or (), 1)}
    if site in V2_SPECIAL_SITES:
        out["anatom_site_special"] = V2_SPECIAL_SITES[site]
    return out


def _one_hot_class(row: dict[str, str], classes: list[str]) -> str | None:
    chosen = [c for c in classes if (row.get(c) or "").strip() not in ("", "0", "0.0")]
    return chosen[0] if len(chosen) == 1 else None


def _official_records(files: ArchiveFiles, layout: Layout) -> Iterator[dict]:
    for row in _rows(files, layout.metadata[0], ("isic_id",)):
        values: dict[str, Any] = {k: _typed(k, v or "") for k, v in row.items()
                                  if k not in ("isic_id", "attribution", "copyright_license") and k}
        yield _record(row["isic_id"].strip(), row.get("attribution"), row.get("copyright_license"), values)


def _challenge_2020_records(files: ArchiveFiles, layout: Layout) -> Iterator[dict]:
    for row in _rows(files, layout.metadata[0], ("image_name",)):
        values: dict[str, Any] = {k: _typed(k, row.get(k) or "") for k in ("patient_id", "lesion_id", "sex",
                                                                            "age_approx")}
        values.update(site_fields(row.get("anatom_site_general_challenge")))
        diagnosis = (row.get("diagnosis") or "").strip()
        values.update(_diagnosis(diagnosis))
        if "diagnosis_1" not in values and (row.get("benign_malignant") or "").strip():
            values["diagnosis_1"] = row["benign_malignant"].strip().capitalize()
        yield _record(canonical_id(row["image_name"]), None, None, values)


def _one_hot_records(files: ArchiveFiles, layout: Layout) -> Iterator[dict]:
    """A one-hot ground truth (``image`` and class columns) and optional per-image metadata (2018, 2019)."""
    truth = _rows(files, layout.metadata[0], ("image",))
    classes = [c for c in CHALLENGE_CLASSES if truth and c in truth[0]]
    extra: dict[str, dict[str, str]] = {}
    if len(layout.metadata) > 1:
        extra = {row["image"].strip(): row for row in _rows(files, layout.metadata[1], ("image",))}
    for row in truth:
        image = row["image"].strip()
        more = extra.get(image, {})
        values: dict[str, Any] = {k: _typed(k, more.get(k) or "") for k in ("age_approx", "sex", "lesion_id",
                                                                            "diagnosis_confirm_type") if k in more}
        values.update(site_fields(more.get("anatom_site_general")))
        values.update(_diagnosis(CHALLENGE_CLASSES.get(_one_hot_class(row, classes) or "")))
        yield _record(canonical_id(image), None, None, values)


def make_record(isic_id: str, values: dict[str, Any], attribution: str | None = None,
                licence: str | None = None) -> dict:
    """A v2 record for an image: ``values`` (v2 field names) are sorted into acquisition and clinical."""
    return _record(isic_id, attribution, licence, values)


# --------------------------------------------------------------- registry
#: (files, layout) → (pyarrow table, problems): a layout's own way to build its columnar index
IndexBuilder = Callable[[ArchiveFiles, Layout], tuple[Any, list[str]]]


@dataclass(frozen=True)
class LayoutSpec:
    """One layout of an archive on disk: everything the library needs to know about it.

    Parameters
    ----------
    name : str
        The layout's name (``api.layout`` of a session on it; kept in its index).
    description : str
        How a person recognises it: listed in the :class:`LayoutError` for a folder of no known layout.
    detect : callable
        ``detect(files) -> list of str or None``: the layout's metadata files inside the archive (the
        first is the main one; :class:`ArchiveFiles.find` finds a file by name), or None when the
        folder or zip does not have this layout.
    records : callable
        ``records(files, layout) -> iterator of dict``: the metadata as v2 records (``isic_id``,
        ``metadata.acquisition`` / ``clinical`` with today's field names; :func:`make_record`).
        :class:`LayoutError` for metadata that cannot be read.
    images : callable
        ``images(files) -> {isic_id: path inside the archive}``; default :func:`image_files`
        (``ISIC_…`` image files anywhere in it).
    build : callable, optional
        ``build(files, layout) -> (pyarrow.Table, problems)``: a faster way to the columnar index
        (see :mod:`isicarchive.disk.index`); default: built from :attr:`records` row by row.
    priority : int
        Detection order, lowest first: a layout recognised by a more specific file comes before one
        recognised by a generic one (``official``, by ``metadata.csv``, is 100).
    """

    name: str
    description: str
    detect: Callable[[ArchiveFiles], list[str] | None]
    records: Callable[[ArchiveFiles, Layout], Iterator[dict]]
    images: Callable[[ArchiveFiles], dict[str, str]] = image_files
    build: IndexBuilder | None = None
    priority: int = 50


#: layout name → its entry, in the order registered (detection goes by :attr:`LayoutSpec.priority`)
REGISTRY: dict[str, LayoutSpec] = {}


def register(spec: LayoutSpec, *, replace: bool = False) -> LayoutSpec:
    """Add a layout to the registry (``replace=True`` to swap an entry of the same name)."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"a layout named {spec.name!r} is registered already (replace=True swaps it)")
    REGISTRY[spec.name] = spec
    return spec


def detection_order() -> list[LayoutSpec]:
    """The entries as :func:`detect` tries them: by priority, ties in the order registered."""
    return sorted(REGISTRY.values(), key=lambda spec: spec.priority)


def unregister(name: str) -> None:
    """Remove a layout from the registry (tests; a plug-in replaced)."""
    REGISTRY.pop(name, None)


def layout_spec(name: str) -> LayoutSpec:
    """The registry entry of a layout; :class:`LayoutError` for a name none has."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise LayoutError(f"no layout named {name!r} is registered (known: {', '.join(REGISTRY)})") from None


class _Descriptions(dict):
    """``LAYOUTS``: layout name → how to recognise it, read from the registry (kept for older code)."""

    def _current(self) -> dict[str, str]:
        return {name: spec.description for name, spec in REGISTRY.items()}

    def __getitem__(self, key: str) -> str:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(REGISTRY)

    def __contains__(self, key: object) -> bool:
        return key in REGISTRY

    def items(self) -> Any:
        return self._current().items()

    def keys(self) -> Any:
        return self._current().keys()

    def values(self) -> Any:
        return self._current().values()

    def get(self, key: str, default: Any = None) -> Any:
        return self._current().get(key, default)

    def __repr__(self) -> str:
        return repr(self._current())


#: layout name → how to recognise it (a view of :data:`REGISTRY`)
LAYOUTS: dict[str, str] = _Descriptions()


def detect(files: ArchiveFiles) -> Layout:
    """The layout of an archive on disk (the first registry entry that recognises it);
    :class:`LayoutError` listing the known ones otherwise."""
    for spec in detection_order():
        metadata = spec.detect(files)
        if metadata:
            return Layout(spec.name, list(metadata))
    known = "; ".join(f"{name}: {spec.description}" for name, spec in REGISTRY.items())
    raise LayoutError(f"{files.root} holds no archive layout this library knows (no metadata file found). "
                      f"Known layouts — {known}")


def records(files: ArchiveFiles, layout: Layout) -> Iterator[dict]:
    """The layout's metadata as v2 records (``isic_id``, ``metadata.acquisition``/``clinical``, …)."""
    return layout_spec(layout.name).records(files, layout)


def _first(*names: str) -> Callable[[ArchiveFiles], list[str] | None]:
    """Detected by the first of ``names`` found."""
    def detect_by(files: ArchiveFiles) -> list[str] | None:
        found = next((f for f in map(files.find, names) if f), None)
        return [found] if found else None
    return detect_by


def _with_optional(main: str, optional: str) -> Callable[[ArchiveFiles], list[str] | None]:
    """Detected by ``main``; ``optional`` read too when it is there."""
    def detect_by(files: ArchiveFiles) -> list[str] | None:
        found = files.find(main)
        if not found:
            return None
        extra = files.find(optional)
        return [found] + ([extra] if extra else [])
    return detect_by


def _build_official(files: ArchiveFiles, layout: Layout) -> tuple[Any, list[str]]:
    from .index import build_official_index  # the columnar CSV reader: seconds, not minutes, at archive scale

    return build_official_index(files, layout)


register(LayoutSpec(
    "official", "metadata.csv with isic_id, attribution, copyright_license (official CLI, archive zips, exports)",
    _first("metadata.csv"), _official_records, build=_build_official, priority=100))
register(LayoutSpec(
    "challenge-2020", "ISIC_2020_Training_GroundTruth.csv (or _v2.csv) and JPEGs",
    _first("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv"),
    _challenge_2020_records, priority=10))
register(LayoutSpec(
    "challenge-2019", "ISIC_2019_Training_GroundTruth.csv, ISIC_2019_Training_Metadata.csv, ISIC_2019_Training_Input/",
    _with_optional("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"),
    _one_hot_records, priority=20))
register(LayoutSpec(
    "challenge-2018", "ISIC2018_Task3_Training_GroundTruth.csv and ISIC2018_Task3_Training_Input/",
    _with_optional("ISIC2018_Task3_Training_GroundTruth.csv", "ISIC2018_Task3_Training_LesionGroupings.csv"),
    _one_hot_records, priority=30))
