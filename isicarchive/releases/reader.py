"""Reading a release: its splits' images, records (v2 shape, with the official split) and masks.

A record has the shape of the archive-on-disk records
(:mod:`isicarchive.disk.layouts`): ``isic_id``, ``metadata.acquisition`` and
``metadata.clinical`` with today's field names — the challenge's label mapped
onto the v2 diagnosis hierarchy through the documented table
(:data:`isicarchive.legacy.V2_DIAGNOSIS_PATHS`, with the challenge classes of
:data:`isicarchive.disk.layouts.CHALLENGE_CLASSES`) — and a third section,
``metadata.challenge``: ``release``, ``split`` (``train`` / ``validation`` /
``test``) and the release's own ``label``.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..disk.layouts import CHALLENGE_CLASSES, canonical_id, site_fields
from ..errors import LayoutError, MissingFilesError
from ..legacy import V2_DIAGNOSIS_PATHS
from ..search import FIELDS, NUMBER
from .catalog import Part, Release
from .files import ReleaseFiles

__all__ = ["MissingFilesError", "PartContents", "ReleaseCountWarning", "missing_files", "read_mask", "read_part",
           "read_release"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_IMAGE = re.compile(r"^(ISIC_\d{7})(_downsampled)?$")
_ID = re.compile(r"^ISIC_\d{7}$")


class ReleaseCountWarning(UserWarning):
    """A split of a release does not hold the published number of images."""


@dataclass
class PartContents:
    """What one split of a release holds, as read."""

    split: str
    images: dict[str, str] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    #: isic_id → mask file (segmentation), or isic_id → {attribute: mask file} (2018 task 2)
    masks: dict[str, Any] = field(default_factory=dict)
    truth_file: str | None = None
    #: the records as index columns instead (2024: 401,059 rows of ~55 columns would not fit as dicts)
    table: Any = None

    @property
    def ids(self) -> list[str]:
        """The image ids the split's truth (or metadata) lists."""
        if self.table is not None:
            return [str(i) for i in self.table.column("isic_id").to_pylist()]
        return [record["isic_id"] for record in self.records]

    @property
    def labels(self) -> dict[str, Any]:
        """isic_id → the release's own label."""
        if self.table is not None:
            if "challenge.label" not in self.table.column_names:
                return {}
            return dict(zip(self.ids, self.table.column("challenge.label").to_pylist(), strict=True))
        return {r["isic_id"]: r["metadata"]["challenge"].get("label") for r in self.records}


# --------------------------------------------------------------- presence
def _present(files: ReleaseFiles, names: tuple[str, ...], folder: bool) -> str | None:
    for name in names:
        if folder:
            if files.under(name):
                return name
        elif name.endswith((".hdf5", ".h5")):
            if any(h.rsplit("/", 1)[-1] == name for h in files.hdf5_files):
                return name
        elif files.find(name):
            return name
    return None


def _part_files(part: Part, files: ReleaseFiles) -> tuple[list[str], list[str]]:
    """(present, missing) descriptions of the part's needed files."""
    present: list[str] = []
    missing: list[str] = []
    for what, names in part.needed():
        is_hdf5 = bool(part.hdf5) and what.startswith("images (HDF5")
        found = None
        if is_hdf5:
            found = _present(files, part.hdf5, folder=False) or _present(files, part.images, folder=True)
        else:
            found = _present(files, names, folder=what.endswith("folder or zip"))
        (present if found else missing).append(f"{part.split} {what}: {' or '.join(names)}")
    return present, missing


def missing_files(release: Release, files: ReleaseFiles,
                  splits: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(the splits that are there, what is missing).

    A split counts as there when any of its files is; each split asked for
    (or, by default, each split that is there) must be whole.  When no split is
    there at all, everything the release needs is missing.
    """
    there, missing = [], []
    for part in release.parts:
        present, absent = _part_files(part, files)
        wanted = splits is not None and part.split in splits
        if present or wanted:
            if present:
                there.append(part.split)
            if absent and (wanted or splits is None):
                missing += absent
    if not there and splits is None:
        missing = [m for part in release.parts for m in _part_files(part, files)[1]]
    return [s for s in there if splits is None or s in splits], missing


# ----------------------------------------------------------------- values
def _diagnosis(term: str | None) -> dict[str, str]:
    path = V2_DIAGNOSIS_PATHS.get(term or "")
    return {f"diagnosis_{n}": node for n, node in enumerate(path or (), 1)}


def _class_diagnosis(label: str | None) -> dict[str, str]:
    """A challenge class (MEL, NV, …; HAM10000's mel, nv, …) on the v2 hierarchy."""
    return _diagnosis(CHALLENGE_CLASSES.get((label or "").upper()))


def _number(text: str | None) -> int | float | None:
    text = (text or "").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value:  # NaN
        return None
    return int(value) if value.is_integer() else value


def _text(text: str | None) -> str | None:
    text = (text or "").strip()
    return None if text.lower() in ("", "unknown", "nan") else text


def _value(name: str, text: str | None) -> Any:
    if FIELDS.get(name) == NUMBER:
        return _number(text)
    value = _text(text)
    if value is None:
        return None
    number = _number(value)
    return value if number is None or name.endswith("_id") else number


def _record(isic_id: str, release: Release, split: str, label: Any, clinical: dict[str, Any],
            acquisition: dict[str, Any] | None = None, **top: Any) -> dict:
    record: dict[str, Any] = {
        "isic_id": isic_id, "public": True,
        "metadata": {"acquisition": {k: v for k, v in (acquisition or {}).items() if v is not None},
                     "clinical": {k: v for k, v in clinical.items() if v is not None},
                     "challenge": {"release": release.name, "split": split, "label": label}}}
    record.update({k: v for k, v in top.items() if v is not None})
    return record


# ------------------------------------------------------------------- CSVs
def _plain_rows(files: ReleaseFiles, name: str) -> list[list[str]]:
    """The rows of a CSV without a header (2016's ground truth)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(files.text(name), newline="")) if row]
    except csv.Error as exc:
        raise LayoutError(f"{name} in {files.root} is not a readable CSV: {exc}") from None
    if rows and not _ID.match(canonical_id(rows[0][0])):
        rows = rows[1:]  # a copy someone gave a header: the release's own has none
    return rows


def _dict_rows(files: ReleaseFiles, name: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV with a header, checked to have the columns required."""
    reader = csv.DictReader(io.StringIO(files.text(name), newline=""))
    try:
        columns = reader.fieldnames or []
        absent = [c for c in required if c not in columns]
        if absent:
            raise LayoutError(f"{name} in {files.root} lacks the column(s) {absent} (it has {columns[:12]})")
        return list(reader)
    except csv.Error as exc:
        raise LayoutError(f"{name} in {files.root} is not a readable CSV: {exc}") from None


def _by_id(rows: list[dict[str, str]], column: str) -> dict[str, dict[str, str]]:
    return {canonical_id(row.get(column) or ""): row for row in rows}


# ----------------------------------------------------------------- images
def _images(files: ReleaseFiles, folders: tuple[str, ...]) -> dict[str, str]:
    """isic_id → image file in the first of the folders present (``_downsampled`` names included)."""
    found: dict[str, str] = {}
    for folder in folders:
        for name in files.under(folder):
            stem, dot, suffix = name.rpartition("/")[2].rpartition(".")
            if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
                continue
            match = _IMAGE.match(stem)  # superpixel and mask PNGs beside the images do not match
            if match and (match.group(1) not in found or not match.group(2)):
                found[match.group(1)] = name
    return found


def _part_images(part: Part, files: ReleaseFiles) -> dict[str, str]:
    if part.hdf5:
        store = next((h for h in files.hdf5_files if h.rsplit("/", 1)[-1] in part.hdf5), None)
        if store is not None:
            return {key: f"{store}/{key}" for key in files.hdf5_keys(store) if _ID.match(key)}
    folders = [f for f in part.images if files.under(f)][:1] + list(part.also_images)
    return _images(files, tuple(folders))


def _masks(files: ReleaseFiles, release: Release, part: Part) -> dict[str, Any]:
    folder = next((f for f in part.masks if files.under(f)), None)
    if folder is None:
        return {}
    out: dict[str, Any] = {}
    for name in files.under(folder):
        stem = name.rpartition("/")[2]
        if not stem.lower().endswith(".png"):
            continue
        if release.attributes:
            match = re.match(r"^(ISIC_\d{7})_attribute_([a-z_]+)\.png$", stem)
            if match and match.group(2) in release.attributes:
                out.setdefault(match.group(1), {})[match.group(2)] = name
        elif stem.endswith(release.mask_suffix) and _ID.match(stem[: -len(release.mask_suffix)]):
            out[stem[: -len(release.mask_suffix)]] = name
    return out


def read_mask(files: ReleaseFiles, name: str) -> np.ndarray:
    """A mask as the release has it (``uint8``, 0/255 or 0/1), checked to be binary and single-channel.

    Raises
    ------
    LayoutError
        A mask that is not a single-channel PNG of two values (a resized mask,
        say, with values between 0 and 255).
    ImageTooLargeError
        A mask announcing more pixels than ``isicarchive.limits`` allows.
    """
    from PIL import Image

    from ..pixels import check_pixels

    data = files.read(name)
    check_pixels(data, f"{name} in {files.root}")  # the pixel limit of every decode (isicarchive.limits)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("1", "L", "P"):
                raise LayoutError(f"{name} in {files.root} is not a single-channel mask (mode {image.mode})")
            # a bit or palette image as the grey values it shows (a palette's indices are not its values)
            array = np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise LayoutError(f"{name} in {files.root} is not a readable PNG mask ({exc})") from None
    values = set(np.unique(array).tolist())
    if not (values <= {0, 255} or values <= {0, 1}):
        shown = sorted(values)[:8]
        raise LayoutError(f"{name} in {files.root} is not a binary mask: values {shown}"
                          f"{' …' if len(values) > 8 else ''} (a mask resized with interpolation?)")
    return array


# ---------------------------------------------------------------- readers
def _read_segmentation(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    meta_name = files.find_any(part.metadata) if part.metadata else None
    extra = _by_id(_dict_rows(files, meta_name, ("image_id",)), "image_id") if meta_name else {}
    for isic_id in sorted(contents.images):
        more = extra.get(isic_id, {})
        clinical = {"age_approx": _number(more.get("age_approximate")), "sex": _text(more.get("sex"))}
        contents.records.append(_record(isic_id, release, part.split, None, clinical))


def _read_2016(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    assert contents.truth_file
    for row in _plain_rows(files, contents.truth_file):
        if len(row) < 2:
            raise LayoutError(f"{contents.truth_file} in {files.root}: a row of {len(row)} value(s), two expected")
        label = str(row[1]).strip().lower()
        if label in ("malignant", "1", "1.0"):
            malignant = True
        elif label in ("benign", "0", "0.0"):
            malignant = False
        else:
            raise LayoutError(f"{contents.truth_file} in {files.root}: {row[1]!r} is neither benign/malignant "
                              "nor 0/1")
        clinical = {"diagnosis_1": "Malignant" if malignant else "Benign"}
        contents.records.append(_record(canonical_id(row[0]), release, part.split, int(malignant), clinical))


def _read_2017(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    assert contents.truth_file
    truth = _dict_rows(files, contents.truth_file, ("image_id", "melanoma", "seborrheic_keratosis"))
    meta_name = files.find_any(part.metadata)
    extra = _by_id(_dict_rows(files, meta_name, ("image_id",)), "image_id") if meta_name else {}
    for row in truth:
        isic_id = canonical_id(row["image_id"])
        melanoma, keratosis = (_number(row.get(c)) for c in ("melanoma", "seborrheic_keratosis"))
        term = "melanoma" if melanoma else "seborrheic keratosis" if keratosis else "nevus"
        more = extra.get(isic_id, {})
        clinical = {**_diagnosis(term), "age_approx": _number(more.get("age_approximate")),
                    "sex": _text(more.get("sex"))}
        label = "melanoma" if melanoma else "seborrheic_keratosis" if keratosis else "nevus"
        contents.records.append(_record(isic_id, release, part.split, label, clinical))


_ZERO = frozenset({"0", "0.0", "", "0.00"})


def _one_hot(row: dict[str, str], classes: tuple[str, ...]) -> str | None:
    chosen = [c for c in classes if (row.get(c) or "0").strip() not in _ZERO and (_number(row.get(c)) or 0) > 0.5]
    return chosen[0] if len(chosen) == 1 else None


def _read_one_hot(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    assert contents.truth_file
    classes = release.classes
    truth = _dict_rows(files, contents.truth_file, ("image",))
    present = [c for c in classes if truth and c in truth[0]]
    if truth and len(present) < len(classes) - 1:  # 2019's UNK is absent in some copies of the training truth
        raise LayoutError(f"{contents.truth_file} in {files.root} lacks the class columns "
                          f"{[c for c in classes if c not in present]}")
    extra: dict[str, dict[str, str]] = {}
    for name in part.metadata + part.extras:
        found = files.find(name)
        if found:
            for key, row in _by_id(_dict_rows(files, found, ("image",)), "image").items():
                extra.setdefault(key, {}).update(row)
    for row in truth:
        isic_id = canonical_id(row["image"])
        label = _one_hot(row, tuple(present))
        more = extra.get(isic_id, {})
        clinical = {**_class_diagnosis(label), "age_approx": _number(more.get("age_approx")),
                    "sex": _text(more.get("sex")), "lesion_id": _text(more.get("lesion_id")),
                    "diagnosis_confirm_type": _text(more.get("diagnosis_confirm_type")),
                    **site_fields(more.get("anatom_site_general"))}
        contents.records.append(_record(isic_id, release, part.split, label, clinical))


def _read_2020(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    duplicates: dict[str, str] = {}
    for name in part.extras:
        found = files.find(name)
        if found:
            for row in _dict_rows(files, found, ("image_name_1", "image_name_2")):
                duplicates[canonical_id(row["image_name_2"])] = canonical_id(row["image_name_1"])
    if contents.truth_file:
        rows = _dict_rows(files, contents.truth_file, ("image_name",))
        id_column = "image_name"
    else:
        meta_name = files.find_any(part.metadata)
        rows = _dict_rows(files, meta_name, ()) if meta_name else []
        id_column = "image" if rows and "image" in rows[0] else "image_name"
        rows = [{k: v for k, v in row.items() if k not in ("target", "diagnosis", "benign_malignant")} for row in rows]
        rows = [r for r in rows if r.get(id_column)] if rows and id_column in rows[0] else []
        if not rows:
            rows = [{"image": i} for i in sorted(contents.images)]
            id_column = "image"
    for row in rows:
        isic_id = canonical_id(row[id_column])
        diagnosis = _text(row.get("diagnosis"))
        clinical: dict[str, Any] = {"patient_id": _text(row.get("patient_id") or row.get("patient")),
                                    "lesion_id": _text(row.get("lesion_id")), "sex": _text(row.get("sex")),
                                    "age_approx": _number(row.get("age_approx")),
                                    **site_fields(row.get("anatom_site_general_challenge")
                                                  or row.get("anatom_site_general")),
                                    **_diagnosis(diagnosis)}
        if "diagnosis_1" not in clinical and _text(row.get("benign_malignant")):
            clinical["diagnosis_1"] = str(row["benign_malignant"]).strip().capitalize()
        target = _number(row.get("target"))
        record = _record(isic_id, release, part.split, target, clinical)
        if isic_id in duplicates:
            record["metadata"]["challenge"]["duplicate_of"] = duplicates[isic_id]
        contents.records.append(record)


_2024_SPECIAL = {"isic_id", "target", "attribution", "copyright_license", "iddx_full", "iddx_1", "iddx_2", "iddx_3",
                 "iddx_4", "iddx_5", "anatom_site_general"}
_ACQUISITION_2024 = {"image_type", "tbp_tile_type"}


def _read_2024(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    """The 2024 metadata as index columns, read by pyarrow's CSV reader: 401,059 rows of ~55 columns."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    name = contents.truth_file or files.find_any(part.metadata)
    if name is None:
        ids = sorted(contents.images)
        table = pa.table({"isic_id": pa.array(ids, pa.string())})
    else:
        raw = files.read(name)
        try:
            table = pacsv.read_csv(pa.py_buffer(raw), convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True, column_types={"isic_id": pa.string(), "patient_id": pa.string(),
                                                        "lesion_id": pa.string()}))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise LayoutError(f"{name} in {files.root} is not a readable CSV: {exc}") from None
        if "isic_id" not in table.column_names:
            raise LayoutError(f"{name} in {files.root} lacks the column(s) ['isic_id'] "
                              f"(it has {table.column_names[:12]})")
        ids = [canonical_id(i or "") for i in table.column("isic_id").to_pylist()]
    rows = len(ids)
    columns: dict[str, Any] = {"isic_id": pa.array(ids, pa.string())}
    names = table.column_names
    for column in names:
        if column in _2024_SPECIAL:
            continue
        section = "acquisition" if column in _ACQUISITION_2024 else "clinical"
        values = table.column(column)
        if FIELDS.get(column) == NUMBER and pa.types.is_floating(values.type) and \
                pc.all(pc.equal(pc.floor(values), values)).as_py() is not False:
            values = pc.cast(values, pa.int64())  # ages as the archive gives them: 60, not 60.0
        columns[f"{section}.{column}"] = values
    # iddx_1..5 are the archive's own diagnosis_1..5 (iddx_full joins them with ::)
    for level in range(1, 6):
        if f"iddx_{level}" in names:
            columns[f"clinical.diagnosis_{level}"] = pc.cast(table.column(f"iddx_{level}"), pa.string())
    if "anatom_site_general" in names:
        sites = [site_fields(s) for s in table.column("anatom_site_general").to_pylist()]
        for key in sorted({k for site in sites for k in site}):
            columns[f"clinical.{key}"] = pa.array([site.get(key) for site in sites], pa.string())
    for key in ("attribution", "copyright_license"):
        columns[key] = pc.cast(table.column(key), pa.string()) if key in names else pa.nulls(rows, pa.string())
    columns["challenge.release"] = pa.array([release.name] * rows, pa.string())
    columns["challenge.split"] = pa.array([part.split] * rows, pa.string())
    if "target" in names:
        columns["challenge.label"] = pc.cast(table.column("target"), pa.int64())
    columns["file"] = pa.array([contents.images.get(i) for i in ids], pa.string())
    contents.table = pa.table(columns)


def _read_ham10000(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    assert contents.truth_file
    for row in _dict_rows(files, contents.truth_file, ("image_id", "dx")):
        label = (row.get("dx") or "").strip().upper() or None
        clinical = {**_class_diagnosis(label), "lesion_id": _text(row.get("lesion_id")),
                    "age_approx": _number(row.get("age")), "sex": _text(row.get("sex"))}
        record = _record(canonical_id(row["image_id"]), release, part.split, label, clinical)
        record["metadata"]["challenge"].update(dx_type=_text(row.get("dx_type")),
                                               localization=_text(row.get("localization")))
        contents.records.append(record)


_READERS = {"segmentation": _read_segmentation, "isic2016-task3": _read_2016, "isic2017-task3": _read_2017,
            "one-hot": _read_one_hot, "isic2020": _read_2020, "isic2024": _read_2024, "ham10000": _read_ham10000}


def list_part(release: Release, part: Part, files: ReleaseFiles) -> PartContents:
    """The images, masks and truth file of one split, from the listing alone (no CSV parsed)."""
    contents = PartContents(part.split)
    contents.images = _part_images(part, files)
    contents.truth_file = files.find_any(part.truth) if part.truth else None
    if part.masks:
        contents.masks = _masks(files, release, part)
    return contents


def parse_part(release: Release, part: Part, files: ReleaseFiles, contents: PartContents) -> None:
    """The split's records (or, for 2024, its index columns), from its truth and metadata."""
    _READERS[release.reader](release, part, files, contents)


def read_part(release: Release, part: Part, files: ReleaseFiles) -> PartContents:
    """The images, records and masks of one split."""
    contents = list_part(release, part, files)
    parse_part(release, part, files, contents)
    return contents


def read_release(release: Release, files: ReleaseFiles, splits: list[str] | None = None, *,
                 check_counts: bool = True,
                 parse: Callable[[dict[str, PartContents]], None] | None = None) -> dict[str, PartContents]:
    """Every split of the release that is there (or those asked for), checked whole.

    ``parse`` replaces the reading of the truth and metadata CSVs (given the
    listed splits, it fills their records or tables: the index kept from an
    earlier open does).

    Raises
    ------
    MissingFilesError
        Listing each missing file with the names accepted for it.
    """
    there, missing = missing_files(release, files, splits)
    if missing:
        listed = "\n  ".join(missing)
        raise MissingFilesError(f"{release.name} at {files.root}: files missing —\n  {listed}\n"
                                f"(folders may be unzipped or still zips of the same name, at any depth)")
    out = {split: list_part(release, release.part(split), files) for split in there}
    if parse is not None:
        parse(out)
    else:
        for split, contents in out.items():
            parse_part(release, release.part(split), files, contents)
    for split, contents in out.items():
        part = release.part(split)
        if check_counts and part.count is not None:
            _check_count(release, part, len(contents.ids) or len(contents.images))
    return out


def _check_count(release: Release, part: Part, count: int) -> None:
    if part.count is None or count == part.count:
        return
    difference = count - part.count
    warnings.warn(ReleaseCountWarning(
        f"{release.name} {part.split}: {count:,} images, the published release has {part.count:,} "
        f"({abs(difference):,} {'more' if difference > 0 else 'fewer'})"), stacklevel=3)


def iter_records(parts: dict[str, PartContents]) -> Iterator[dict]:
    """The records of every split read, with the image file of each (``files.full.path``)."""
    for contents in parts.values():
        for record in contents.records:
            record.setdefault("files", {"full": {"path": contents.images.get(record["isic_id"])}})
            yield record
