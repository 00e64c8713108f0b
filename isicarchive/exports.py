"""A selection (or the parts of a split) written for other loaders: folders per class, tar shards, Hugging Face.

``selection.export(folder, layout=..., target="diagnosis_1")`` and
``selection.split(...).export(folder, layout=...)`` write one of:

``official``
    The official CLI's folder (``ISIC_….jpg``, ``metadata.csv``,
    ``attribution.txt``, ``licenses/``), as ``download_images(folder=...)``.
``imagefolder``
    A folder per class of ``target`` holding the class's images (hard links to
    the cache or to the archive on disk where the file system allows, copies
    otherwise) and a ``metadata.csv`` whose ``file_name`` column names each
    image relative to it, followed by every metadata column.  torchvision's
    ``ImageFolder(folder)`` and ``datasets.load_dataset("imagefolder",
    data_dir=folder)`` read it as it is.
``webdataset``
    Tar shards ``shard-000000.tar`` … of at most ``shard_bytes`` bytes and
    ``shard_samples`` samples, each sample ``<id>.jpg`` (or ``.png``),
    ``<id>.json`` (its record) and ``<id>.cls`` (its class index, where it has
    one), in an order fixed by ``seed`` (shuffled: shards are read in
    sequence); ``webdataset.WebDataset`` reads them as they are.  The
    members are written with fixed owners and times: the same selection and
    seed give the same bytes.

A split's parts go to ``train/``, ``validation/``, ``test/`` … under the
folder, where Hugging Face's loaders find them as splits.  Every export
also writes ``README.md``, a dataset card with the images' licences and
their attribution counted from the data; ``classes.txt`` lists the classes in
index order.

:func:`to_hf_dataset` builds a ``datasets.Dataset`` (an ``image`` column of
the encoded files, every metadata column, licence and attribution, and the
class as a ``ClassLabel``); with ``path`` it is saved there with its card.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _json
from .csvguard import write_csv
from .downloads import sniffed_type
from .errors import QueryError
from .export import metadata_rows
from .locking import own_partial
from .training import MASK, UNLABELLED, Samples

if TYPE_CHECKING:
    from .api import IsicApi

log = logging.getLogger("isicarchive")

__all__ = ["LAYOUTS", "ExportResult", "export", "to_hf_dataset"]

#: layout name → what it writes
LAYOUTS = {
    "official": "the official CLI's folder: images, metadata.csv, attribution.txt, licenses/",
    "imagefolder": "a folder per class and metadata.csv with file_name (torchvision ImageFolder, HF imagefolder)",
    "webdataset": "tar shards of <id>.jpg + <id>.json (+ <id>.cls) samples (webdataset.WebDataset)",
}
#: bytes of one tar shard at most (WebDataset reads shards of 100 MB to a few GB best)
SHARD_BYTES = 512 * 1024 * 1024
#: samples in one tar shard at most
SHARD_SAMPLES = 10_000
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/tiff": ".tif"}
#: Hugging Face's names of the archive's licences (others: "other")
_HF_LICENCES = {"CC-0": "cc0-1.0", "CC-BY": "cc-by-4.0", "CC-BY-NC": "cc-by-nc-4.0"}


@dataclass
class ExportResult:
    """What an export wrote."""

    folder: Path
    layout: str
    #: images written per split ("" for a selection that is not a split)
    counts: dict[str, int] = field(default_factory=dict)
    classes: list[Any] = field(default_factory=list)
    #: files written (tar shards, or the images of a folder layout)
    files: list[Path] = field(default_factory=list)
    #: images linked to the cache or the archive on disk rather than copied
    linked: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = ", ".join(f"{name or 'images'}={n}" for name, n in self.counts.items())
        return f"ExportResult({self.layout} at {self.folder}: {parts}, {len(self.classes)} classes)"


def export(parts: Mapping[str, Any], folder: str | os.PathLike[str], *, layout: str = "official",
           target: str | None = "diagnosis_1", classes: list[Any] | None = None, missing: str | None = None,
           api: IsicApi | None = None, seed: int = 0, shuffle: bool = True, shard_bytes: int = SHARD_BYTES,
           shard_samples: int = SHARD_SAMPLES, link: bool = True, metadata: str | None = None) -> ExportResult:
    """Write selections (name → selection; ``""`` for no split folder) in ``layout`` under ``folder``.

    Parameters
    ----------
    target : str or None
        The field the classes come from (``None``: no classes; not for
        ``imagefolder``).
    classes : list, optional
        Class order; by default the sorted values of every part together, so
        the parts of a split share one class index.
    missing : {"error", "drop", "keep"}, optional
        Images without a value of ``target``: an error (the default of
        ``imagefolder``, which has no folder for them), left out, or (the
        default of the other layouts) kept without a class.
    seed, shuffle
        The order of the samples in the tar shards.
    shard_bytes, shard_samples
        Bounds of one tar shard.
    link : bool
        Hard-link the images of ``imagefolder`` where possible (else copy).
    metadata : {"csv", "parquet"}, optional
        The format of ``imagefolder``'s metadata file: ``metadata.csv`` for a
        selection, ``metadata.parquet`` for the parts of a split by default.
        Hugging Face requires the same column types in every split's file, and
        a CSV file's types are guessed from that file alone (a column that is
        empty in a small split reads as numbers there); Parquet states them.
    """
    if metadata not in (None, "csv", "parquet"):
        raise QueryError(f"metadata must be 'csv' or 'parquet', not {metadata!r}")
    if layout not in LAYOUTS:
        raise QueryError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if not parts or not any(len(part) for part in parts.values()):
        raise QueryError("there are no images to export (the selection is empty)")
    if layout == "imagefolder" and (target is None or target == MASK):
        raise QueryError("the imagefolder layout needs a target field whose values name its class folders")
    if shard_bytes < 1 or shard_samples < 1:
        raise QueryError("shard_bytes and shard_samples must be positive")
    root = Path(folder).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    result = ExportResult(root, layout)
    if layout == "official":
        for name, part in parts.items():
            session = api or _session_of(part)
            downloaded = session.download_images(part, root / name if name else root)
            result.counts[name] = len(downloaded.paths)
            result.failed.update(downloaded.failed)
            result.files.extend(downloaded.paths.values())
        _write_card(root, [r for part in parts.values() for r in part.values()], layout, [], target)
        return result
    samples = _labelled(parts, target, classes, missing or ("error" if layout == "imagefolder" else "keep"), api,
                        by_folder=layout == "imagefolder")
    result.classes = next(iter(samples.values())).classes if samples else []
    tables: dict[Path, list[dict[str, Any]]] = {}
    for name, part_samples in samples.items():
        where = root / name if name else root
        where.mkdir(parents=True, exist_ok=True)
        if layout == "imagefolder":
            tables[where] = _imagefolder(part_samples, where, link, result)
        else:
            _webdataset(part_samples, where, seed, shuffle, shard_bytes, shard_samples, result)
        result.counts[name] = len(part_samples)
    if tables:
        _write_metadata(tables, metadata or _default_metadata(len(parts)))
    if result.classes:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in result.classes), encoding="utf-8")
    records = [r for part_samples in samples.values() for r in part_samples.records]
    _write_card(root, records, layout, result.classes, target)
    return result


def _session_of(part: Any) -> IsicApi:
    session = getattr(part, "session", None)
    if session is None:
        raise QueryError("this selection knows no session: pass api=IsicApi(...)")
    return session


def _labelled(parts: Mapping[str, Any], target: str | None, classes: list[Any] | None, missing: str,
              api: IsicApi | None, by_folder: bool = False) -> dict[str, Samples]:
    """Samples per part, with one class order for all of them: the classes given, else the values
    sorted (by their folder names for ``imagefolder``, the order torchvision's ``ImageFolder`` gives)."""
    encode = target if target not in (None, MASK) else MASK
    out = {name: Samples(part, target=encode, api=api, missing=missing)  # type: ignore[arg-type]
           for name, part in parts.items() if len(part)}
    if encode != MASK:
        values = {c for s in out.values() for c in s.classes}
        shared = classes if classes is not None else sorted(
            values, key=(lambda v: class_folder(v)) if by_folder else (lambda v: (str(type(v)), v)))
        out = {name: Samples(s.records, target=encode, api=s.api, missing=missing, classes=shared)
               for name, s in out.items()}
    return out


# -------------------------------------------------------------- imagefolder
def class_folder(value: Any) -> str:
    """A class value as a folder name: path separators and control characters replaced, no leading dot,
    and no leading character a spreadsheet takes for a formula (``metadata.csv`` names the folder)."""
    text = "".join("_" if ch in "/\\" or ord(ch) < 32 else ch for ch in str(value)).strip().lstrip(".")
    if text[:1] in ("=", "+", "-", "@"):
        text = "_" + text[1:]
    return text[:120] or "_"


def _imagefolder(samples: Samples, where: Path, link: bool, result: ExportResult) -> list[dict[str, Any]]:
    """The images in a folder per class; returns their metadata rows (``file_name`` relative to ``where``)."""
    folders: dict[Any, str] = {}
    taken: set[str] = set()
    for value in samples.classes:
        name = class_folder(value)
        if name.casefold() in taken:  # two values that clean up alike (or differ only in case)
            name = f"{name[:100]}-{hashlib.sha1(str(value).encode()).hexdigest()[:8]}"
        taken.add(name.casefold())
        folders[value] = name
    rows = []
    columns, flat = metadata_rows(samples.records)
    for index, row in zip(range(len(samples)), flat, strict=True):
        if samples.targets[index] == UNLABELLED:
            continue
        folder = folders[samples.classes[samples.targets[index]]]
        (where / folder).mkdir(exist_ok=True)
        source = samples.source(index)
        suffix = _suffix(source)
        destination = where / folder / f"{_key(samples.ids[index])}{suffix}"
        if _place(source, destination, link):
            result.linked += 1
        result.files.append(destination)
        rows.append({"file_name": f"{folder}/{destination.name}", "label": samples.targets[index], **row})
    return rows


def _default_metadata(parts: int) -> str:
    """CSV for one folder; Parquet for several (splits), where pyarrow is installed."""
    if parts == 1:
        return "csv"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        log.warning("metadata.csv in each split (pyarrow is not installed): Hugging Face's imagefolder refuses "
                    "splits whose CSV columns read as different types; pip install 'isicarchive[hf]'")
        return "csv"
    return "parquet"


_FIRST_COLUMNS = ("file_name", "label", "isic_id", "attribution", "copyright_license")


def _write_metadata(tables: dict[Path, list[dict[str, Any]]], kind: str) -> None:
    """One metadata file per folder, every one with the same columns (and, in Parquet, the same types)."""
    every = [row for rows in tables.values() for row in rows]
    present = {key for row in every for key in row}
    columns = [c for c in _FIRST_COLUMNS if c in present] + sorted(present - set(_FIRST_COLUMNS))
    for where in tables:  # Hugging Face refuses a folder with metadata files of two kinds
        (where / f"metadata.{'parquet' if kind == 'csv' else 'csv'}").unlink(missing_ok=True)
    if kind == "csv":
        for where, rows in tables.items():
            with open(where / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
                write_csv(fh, columns, ([row.get(key) for key in columns] for row in rows))
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("metadata='parquet' needs pyarrow: pip install 'isicarchive[disk]'") from None
    kinds = {c: _arrow_kind([row.get(c) for row in every]) for c in columns}
    types = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    schema = pa.schema([(c, types[kinds[c]]) for c in columns])
    for where, rows in tables.items():
        data = {c: [_typed_cell(row.get(c), kinds[c]) for row in rows] for c in columns}
        pq.write_table(pa.table(data, schema=schema), where / "metadata.parquet")


def _typed_cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    return str(value) if kind == "string" else float(value) if kind == "float64" else value


def _suffix(source: Path | bytes) -> str:
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            start = fh.read(16)
    else:
        start = source[:16]
    return _EXTENSIONS.get(sniffed_type(start) or "", ".jpg")


def _place(source: Path | bytes, destination: Path, link: bool) -> bool:
    """Put an image at ``destination``: a hard link to ``source`` where allowed, else a copy (atomically).

    Returns whether it is a link."""
    part = own_partial(destination.with_name(f".{destination.name}.part"))  # no second writer shares it
    part.unlink(missing_ok=True)
    linked = False
    if isinstance(source, Path):
        if link and not source.is_symlink():
            try:
                os.link(source, part)
                linked = True
            except OSError:  # another file system, or one without hard links
                pass
        if not linked:
            shutil.copyfile(source, part)
    else:
        part.write_bytes(source)
    os.replace(part, destination)
    return linked


def _key(image_id: str) -> str:
    """A sample key WebDataset and file systems take as it is: WebDataset cuts a key at its first dot."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in image_id) or "_"


# ---------------------------------------------------------------- webdataset
def _webdataset(samples: Samples, where: Path, seed: int, shuffle: bool, shard_bytes: int, shard_samples: int,
                result: ExportResult) -> None:
    order = list(range(len(samples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for old in where.glob("shard-*.tar"):  # a new export replaces the shards of an earlier one
        old.unlink()
    writer = _ShardWriter(where, shard_bytes, shard_samples)
    try:
        for index, image in _sources(samples, order, _opened):
            key = _key(samples.ids[index])
            members: list[tuple[str, bytes | _File]] = [
                (key + _extension(image.head if isinstance(image, _File) else image), image),
                (f"{key}.json", _json.dumps(samples.records[index]))]
            if samples.target != MASK and samples.targets[index] != UNLABELLED:
                members.append((f"{key}.cls", str(samples.targets[index]).encode()))
            writer.add(members)
    finally:
        result.files.extend(writer.close())


def _sources(samples: Samples, order: list[int], read: Any) -> Iterator[tuple[int, Any]]:
    """``(index, read(source))`` in order: files missing from the cache are fetched first, all at once
    with the download engine's parallel transfers; files at hand are then read in turn (a thread pool
    for files already on disk cost more than it saved); without a cache folder, the downloads run ahead
    on a pool."""
    store = samples.api.context.store
    if not store.backend.local and store.cache is not None:
        # the files the samples found in the cache when they were made; listed again only if some came
        missing = [samples.records[i] for i in order if samples.cached_file(i) is None]
        if missing:
            samples.api.download_images(missing, strict=True)
            samples.find_files()
    if store.backend.local or store.cache is not None:
        return ((index, read(samples.source(index))) for index in order)
    return samples.stream(order, read=lambda i: read(samples.source(i)))


@dataclass
class _File:
    """An image file opened for copying into a shard: the kernel copies it (no pass through Python)."""

    fd: int
    size: int
    head: bytes


def _opened(source: Path | bytes) -> _File | bytes:
    if not isinstance(source, Path):
        return source
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        # the size of what was opened: a cache file replaced meanwhile is a new file, this one stays whole
        return _File(fd, os.fstat(fd).st_size, os.pread(fd, 16, 0))
    except BaseException:
        os.close(fd)
        raise


def _extension(data: bytes) -> str:
    return _EXTENSIONS.get(sniffed_type(data[:16]) or "", ".jpg")


def _bytes(source: Path | bytes) -> bytes:
    return source.read_bytes() if isinstance(source, Path) else source


def ustar_header(name: str, size: int) -> bytes:
    """The ustar header of a regular file as ``tarfile.TarInfo(name).tobuf(format=USTAR_FORMAT)`` writes it
    with mode 0644, owner and group 0 and no names, time 0 (a shard's every member has those) — built
    directly, at a tenth of the cost, for names of up to 100 ASCII characters."""
    encoded = name.encode("ascii")
    if len(encoded) > 100 or size >= 8**11:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 0, "", ""
        return info.tobuf(format=tarfile.USTAR_FORMAT)
    header = bytearray(tarfile.BLOCKSIZE)
    header[0:len(encoded)] = encoded
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"00000000000\0"
    header[148:156] = b"        "
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _blocks(size: int) -> int:
    return tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


class _ShardWriter:
    """Tar shards of bounded size, written to a part file and moved into place when full."""

    def __init__(self, where: Path, shard_bytes: int, shard_samples: int) -> None:
        self.where = where
        self.shard_bytes = shard_bytes
        self.shard_samples = shard_samples
        self.written: list[Path] = []
        self._fh: Any = None
        self._size = 0
        self._count = 0

    def add(self, members: list[tuple[str, bytes | _File]]) -> None:
        try:
            size = sum(_blocks(data.size if isinstance(data, _File) else len(data)) for _, data in members)
            if self._fh is not None and (self._count >= self.shard_samples or
                                         self._size + size + 2 * tarfile.BLOCKSIZE > self.shard_bytes):
                self._finish()
            if self._fh is None:
                # unbuffered: headers and records go straight to the file, between the kernel's copies
                self._fh = open(self._part(), "wb", buffering=0)  # noqa: SIM115  (closed in _finish)
                self._size = self._count = 0
            pending: list[bytes] = []  # written together: one write between two kernel copies
            for name, data in members:
                length = data.size if isinstance(data, _File) else len(data)
                pending.append(ustar_header(name, length))
                if isinstance(data, _File):
                    self._fh.write(b"".join(pending))
                    pending = []
                    _copy_into(self._fh.fileno(), data)
                else:
                    pending.append(data)
                pending.append(b"\0" * (-length % tarfile.BLOCKSIZE))
            self._fh.write(b"".join(pending))
            self._size += size
            self._count += 1
        finally:
            for _, data in members:
                if isinstance(data, _File):
                    os.close(data.fd)

    def _part(self) -> Path:
        return self.where / f".shard-{len(self.written):06d}.tar.part"

    def _finish(self) -> None:
        self._fh.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
        self._fh.close()
        self._fh = None
        final = self.where / f"shard-{len(self.written):06d}.tar"
        os.replace(self._part(), final)
        self.written.append(final)

    def close(self) -> list[Path]:
        if self._fh is not None:
            self._finish()
        return self.written


def _copy_into(out: int, source: _File) -> None:
    """``source.size`` bytes of an open file appended to ``out``: by the kernel where it can (sendfile)."""
    offset = 0
    if hasattr(os, "sendfile"):
        try:
            while offset < source.size:
                sent = os.sendfile(out, source.fd, offset, source.size - offset)
                if sent == 0:
                    break
                offset += sent
        except OSError:  # a file system that refuses sendfile: copy what is left by reading
            pass
    while offset < source.size:
        chunk = os.pread(source.fd, min(1 << 20, source.size - offset), offset)
        if not chunk:
            raise OSError(f"the file shrank while it was copied ({offset} of {source.size} bytes)")
        os.write(out, chunk)
        offset += len(chunk)


# ----------------------------------------------------------- Hugging Face
def to_hf_dataset(selection: Any, *, target: str | None = "diagnosis_1", path: str | os.PathLike[str] | None = None,
                  classes: list[Any] | None = None, missing: str = "keep", api: IsicApi | None = None) -> Any:
    """A ``datasets.Dataset`` of a selection: ``image`` (the encoded file), ``isic_id``, ``attribution``,
    ``copyright_license``, every metadata column, and ``label`` (a ``ClassLabel`` of ``target``; ``-1``
    where an image has none).  With ``path`` it is saved there (``save_to_disk``) with a dataset card
    ``README.md``.  Needs the ``hf`` extra (``datasets``).
    """
    try:
        import datasets
    except ImportError:
        raise ImportError("to_hf_dataset needs datasets: pip install 'isicarchive[hf]'") from None
    samples = Samples(selection, target=target or MASK, classes=classes, missing=missing, api=api)
    columns, rows = metadata_rows(samples.records)
    images = [data for _, data in samples.stream(range(len(samples)), read=samples.image_bytes)]
    table: dict[str, list[Any]] = {"image": [{"bytes": data, "path": _key(i) + _extension(data)}
                                             for i, data in zip(samples.ids, images, strict=True)]}
    features: dict[str, Any] = {"image": datasets.Image()}
    for column in columns:
        values = [row.get(column) for row in rows]
        kind = _arrow_kind(values)
        features[column] = datasets.Value(kind)
        table[column] = [_typed_cell(v, kind) for v in values]
    if target not in (None, MASK):
        features["label"] = datasets.ClassLabel(names=[str(c) for c in samples.classes])
        table["label"] = list(samples.targets)
    dataset = datasets.Dataset.from_dict(table, features=datasets.Features(features))
    if path is not None:
        where = Path(path).expanduser()
        dataset.save_to_disk(str(where))
        _write_card(where, samples.records, "hf", samples.classes if target not in (None, MASK) else [], target)
    return dataset


def _arrow_kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(type(v) is bool for v in present):
        return "bool"
    if present and all(type(v) is int for v in present):
        return "int64"
    if present and all(type(v) in (int, float) for v in present):
        return "float64"
    return "string"


# ------------------------------------------------------------ dataset card
def licence_counts(records: list[dict]) -> Counter[str]:
    """Images per licence (``copyright_license``; v1 records: their dataset's licence)."""
    _, rows = metadata_rows(records)
    return Counter(str(row.get("copyright_license") or "unknown") for row in rows)


def attribution_counts(records: list[dict]) -> Counter[str]:
    """Images per attribution (the institution, or the dataset on v1)."""
    _, rows = metadata_rows(records)
    return Counter(str(row.get("attribution") or "unknown") for row in rows)


def _write_card(folder: Path, records: list[dict], layout: str, classes: list[Any], target: str | None) -> None:
    """``README.md``: a Hugging Face dataset card whose licence and attribution sections count the data."""
    (folder / "README.md").write_text(dataset_card(records, layout, classes, target), encoding="utf-8")


def dataset_card(records: list[dict], layout: str, classes: list[Any], target: str | None) -> str:
    licences = licence_counts(records)
    attributions = attribution_counts(records)
    hf = {_HF_LICENCES.get(name, "other") for name in licences}
    licence = hf.pop() if len(hf) == 1 else "other"
    size = len(records)
    category = next(label for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                               (10**9, "100K<n<1M")) if size < bound)
    out = io.StringIO()
    out.write("---\n")
    out.write(f"license: {licence}\n")
    if licence == "other":
        out.write("license_name: isic-archive-per-image\n")
    out.write("pretty_name: ISIC Archive images\n")
    out.write("task_categories:\n- image-classification\n")
    out.write(f"size_categories:\n- {category}\n")
    out.write("tags:\n- dermoscopy\n- isic\n- medical\n")
    out.write("---\n\n")
    out.write("# ISIC Archive images\n\n")
    out.write(f"{size} images of the ISIC Archive with their metadata, exported by isicarchive "
              f"(layout: {layout}).\n\n")
    if classes:
        out.write(f"Classes ({target}), in index order: {', '.join(map(str, classes))}.\n\n")
    out.write("## Licences\n\nEach image carries its own licence (column `copyright_license`); "
              "use and share every image under its licence.\n\n")
    out.write("| licence | images |\n| --- | --- |\n")
    for name, count in sorted(licences.items(), key=lambda item: (-item[1], item[0])):
        out.write(f"| {_cell_md(name)} | {count} |\n")
    out.write("\n## Attribution\n\nThe images are contributed by (images per contributor):\n\n")
    out.write("| attribution | images |\n| --- | --- |\n")
    for name, count in sorted(attributions.items(), key=lambda item: (item[0] == "Anonymous", -item[1], item[0])):
        out.write(f"| {_cell_md(name)} | {count} |\n")
    out.write("\n## Citation\n\nCite the ISIC Archive (https://www.isic-archive.com) and the contributors above "
              "as their licences ask.\n")
    return out.getvalue()


def _cell_md(text: str) -> str:
    """Text for a Markdown table cell: a pipe or a line break would end the cell or the row."""
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def card_tables(card: str) -> dict[str, dict[str, int]]:
    """The licence and attribution tables of a dataset card, read back (for checks and tests)."""
    tables: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in card.splitlines():
        if line.startswith("## "):
            current = tables.setdefault(line[3:].strip().lower(), {})
        elif current is not None and line.startswith("| ") and not line.startswith(("| ---", "| licence |",
                                                                                     "| attribution |")):
            cells = _split_row(line)
            if len(cells) == 2 and cells[1].isdigit():
                current[cells[0]] = int(cells[1])
    return tables


def _split_row(line: str) -> list[str]:
    cells, cell, escaped = [], [], False
    for ch in line.strip()[1:-1]:
        if escaped:
            cell.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
    cells.append("".join(cell).strip())
    return cells


def _iter_members(shard: Path) -> Iterator[tuple[str, bytes]]:
    """The members of a tar shard (for checks)."""
    with tarfile.open(shard) as tar:
        for member in tar:
            fh = tar.extractfile(member)
            if fh is not None:
                yield member.name, fh.read()
