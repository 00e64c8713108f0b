"""Lock files: a selection pinned so that a paper can name, fetch again and check exactly its images.

A lock is a small JSON file (gzipped when its name ends in ``.gz``)::

    {"format": "isicarchive-lock", "version": 1, "created": "2026-12-07T11:40:00+00:00",
     "client": "isicarchive 0.5.0",
     "archive": {"host": "https://api.isic-archive.com", "api": "/api/v2", "api_version": 2},
     "selection": {"query": "diagnosis_3:Melanoma", "collections": null, "criteria": null, "doi": null},
     "split": {"by": "patient_id", "stratify": null, "seed": 0, "fractions": {"train": 0.8, "test": 0.2}},
     "columns": ["isic_id", "bytes", "sha256", "license", "attribution", "patient_id", "lesion_id",
                 "metadata", "part"],
     "images": [["ISIC_0000000", 412345, "9f86d08…", "CC-BY", "ViDIR Group", "IP_…", "IL_…", "1a2b…", "train"],
                …]}

One row per image: its ISIC id, byte size and SHA-256 (of the file the
archive serves, computed as it streamed in), licence and attribution,
patient and lesion ids, a 64-bit digest of its metadata (to tell later
whether the archive changed it), and the part of a split it belongs to.
Rows, not one object per image, keep a lock of 10,000 images at about
60 bytes per image gzipped (``benchmarks/reproducibility.py``).

* :meth:`Selection.lock <isicarchive.selection.Selection.lock>` and
  :meth:`Splits.lock <isicarchive.selection.Splits.lock>` write one;
* :func:`materialise` fetches exactly those images into a folder and checks
  every SHA-256 (a file that does not match is fetched once more, then
  reported);
* :func:`verify_lock` reports how today's archive differs: ids gone, ids the
  same query adds, ids it no longer matches, metadata, licences and bytes
  changed; with ``folder=`` also files changed on disk since.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _json
from ._gc import collector_paused
from ._lazy import lazy_module
from ._version import __version__
from .digests import image_digests, sha256_of
from .errors import IsicError, NotFoundError, QueryError, UnsupportedError
from .grouping import field_of
from .licenses import attribution_of, license_of
from .transport import record_id

if TYPE_CHECKING:
    import numpy as np

    from .downloads import DownloadResult
    from .selection import Selection
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see ._lazy)

__all__ = ["COLUMNS", "DriftReport", "Lock", "MaterialiseResult", "Origin", "compare", "create_lock", "isic_id_of",
           "materialise", "metadata_digest", "open_session", "read_lock", "verify_lock"]

FORMAT = "isicarchive-lock"
VERSION = 1
COLUMNS = ("isic_id", "bytes", "sha256", "license", "attribution", "patient_id", "lesion_id", "metadata", "part")
#: largest lock file read (a lock of 400,000 images is about 60 MB of JSON)
MAX_LOCK_BYTES = 512 * 1024**2
SUMS = "SHA256SUMS"
_SHA256 = re.compile(r"[0-9a-f]{64}")

try:
    import orjson as _orjson

    def _canonical(value: Any) -> bytes:
        return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS | _orjson.OPT_NON_STR_KEYS)
except ImportError:  # pragma: no cover - orjson is a dependency
    import json as _stdjson

    def _canonical(value: Any) -> bytes:
        return _stdjson.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------- provenance
@dataclass
class Origin:
    """Where a selection came from: the session and what was asked of it.

    Attributes
    ----------
    session : IsicApi or None
        The session that made the selection (not written to locks).
    query : str, optional
        A search in the archive's language (v2, archives on disk).
    collections : list of int, optional
        The collections the search was limited to.
    criteria : list, optional
        ``select_images`` criteria.
    doi : str, optional
        The DOI of the collection the images are.
    """

    session: Any = None
    query: str | None = None
    collections: list[int] | None = None
    criteria: list[Any] | None = None
    doi: str | None = None
    collection_name: str | None = None

    def describe(self) -> dict[str, Any]:
        """What is written to a lock (no session, no secrets)."""
        criteria = [[_plain(part) for part in c] for c in self.criteria] if self.criteria is not None else None
        found = {"query": self.query, "collections": self.collections, "criteria": criteria, "doi": self.doi}
        if self.collection_name:
            found["collection_name"] = self.collection_name
        return found


def _plain(value: Any) -> Any:
    """A criterion's value as JSON can hold it (sets and tuples as lists, a compiled pattern as its text)."""
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def isic_id_of(record: dict) -> str:
    """The ISIC id of a record (v2 ``isic_id``; v1 ``name``): the same image in every backend."""
    value = record.get("isic_id") or record.get("name") or record_id(record)
    return str(value)


def metadata_digest(record: dict) -> str:
    """A 64-bit digest (hex) of an image's metadata as its backend publishes it (v2 ``metadata``, v1 ``meta``)."""
    if isinstance(record.get("metadata"), dict):
        published: Any = record["metadata"]
    else:
        meta = record.get("meta") or {}
        published = {"acquisition": meta.get("acquisition"), "clinical": meta.get("clinical")}
    return hashlib.blake2b(_canonical(published), digest_size=8).hexdigest()


def _shape(record: dict) -> str:
    return "v2" if isinstance(record.get("metadata"), dict) else "v1"


# ---------------------------------------------------------------------- lock
@dataclass
class Lock:
    """A lock file's content (see the module docstring); one list per column."""

    host: str
    api: str
    api_version: int
    created: str
    selection: dict[str, Any]
    ids: list[str]
    size: list[int]
    sha256: list[str]
    license: list[str | None]
    attribution: list[str | None]
    patient_id: list[str | None]
    lesion_id: list[str | None]
    metadata: list[str]
    part: list[str | None]
    split: dict[str, Any] | None = None
    metadata_shape: str = "v2"
    client: str = f"isicarchive {__version__}"

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        parts = f", parts {sorted(self.parts())}" if self.split else ""
        return f"Lock({len(self)} images of {self.host}{self.api}, {self.created[:10]}{parts})"

    @property
    def archive_url(self) -> str:
        return self.host.rstrip("/") + self.api if not self.host.startswith("file:") else self.host

    def parts(self) -> dict[str, list[str]]:
        """Ids per part of the split (``{None: [...]}`` when the lock holds no split)."""
        found: dict[Any, list[str]] = {}
        for isic_id, part in zip(self.ids, self.part, strict=True):
            found.setdefault(part, []).append(isic_id)
        return found

    def row(self, isic_id: str) -> dict[str, Any]:
        """One image's entry as a dict of the columns."""
        at = self.ids.index(isic_id)
        attribute = {"isic_id": "ids", "bytes": "size"}
        return {name: getattr(self, attribute.get(name, name))[at] for name in COLUMNS}

    def as_json(self) -> dict[str, Any]:
        columns = [self.ids, self.size, self.sha256, self.license, self.attribution, self.patient_id,
                   self.lesion_id, self.metadata, self.part]
        return {"format": FORMAT, "version": VERSION, "created": self.created, "client": self.client,
                "archive": {"host": self.host, "api": self.api, "api_version": self.api_version},
                "selection": self.selection, "split": self.split, "metadata_shape": self.metadata_shape,
                "columns": list(COLUMNS), "images": [list(row) for row in zip(*columns, strict=True)]}

    def dumps(self, compress: bool = False) -> bytes:
        data = _json.dumps(self.as_json())
        return gzip.compress(data, compresslevel=9, mtime=0) if compress else data

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically; gzipped when the name ends in ``.gz``."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(self.dumps(compress=target.name.endswith(".gz")))
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    @classmethod
    def from_json(cls, payload: Any) -> Lock:
        """A lock from its decoded JSON, checked.

        Raises
        ------
        QueryError
            Not a lock file, or one of a later format.
        """
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise QueryError("not an isicarchive lock file (no \"format\": \"isicarchive-lock\")")
        if payload.get("version") != VERSION:
            raise QueryError(f"lock file format {payload.get('version')!r}; this isicarchive reads version {VERSION}"
                             " (a newer release may read it)")
        archive = payload.get("archive") or {}
        columns = payload.get("columns")
        rows = payload.get("images")
        if not isinstance(columns, list) or not set(COLUMNS) <= set(columns) or not isinstance(rows, list):
            raise QueryError(f"the lock file lacks columns {sorted(set(COLUMNS) - set(columns or []))}")
        at = [columns.index(name) for name in COLUMNS]
        try:
            values = [[row[i] for row in rows] for i in at]
        except (IndexError, TypeError, KeyError):
            raise QueryError("the lock file has a malformed image row") from None
        if not all(isinstance(v, str) for v in values[0]) or not all(isinstance(v, int) for v in values[1]):
            raise QueryError("the lock file's ids must be strings and sizes whole numbers")
        bad = next((v for v in values[2] if not (isinstance(v, str) and _SHA256.fullmatch(v))), None)
        if bad is not None or len(set(values[0])) != len(values[0]):
            raise QueryError("the lock file has an image twice or a SHA-256 that is not 64 hex digits"
                             + (f" ({str(bad)[:70]!r})" if bad is not None else ""))
        return cls(host=str(archive.get("host", "")), api=str(archive.get("api", "")),
                   api_version=int(archive.get("api_version", 2)), created=str(payload.get("created", "")),
                   selection=dict(payload.get("selection") or {}), ids=values[0], size=values[1],
                   sha256=values[2], license=values[3], attribution=values[4], patient_id=values[5],
                   lesion_id=values[6], metadata=values[7], part=values[8], split=payload.get("split"),
                   metadata_shape=str(payload.get("metadata_shape", "v2")),
                   client=str(payload.get("client", "")))


def read_lock(lock: Lock | str | os.PathLike[str] | bytes) -> Lock:
    """A :class:`Lock` from a path (plain or gzipped JSON), its bytes, or a lock in hand.

    Raises
    ------
    NotFoundError
        No such file.
    QueryError
        Not a lock file.
    """
    if isinstance(lock, Lock):
        return lock
    if isinstance(lock, (bytes, bytearray)):
        data = bytes(lock)
    else:
        path = Path(lock).expanduser()
        try:
            if path.stat().st_size > MAX_LOCK_BYTES:
                raise QueryError(f"{path} is larger than any lock file ({MAX_LOCK_BYTES >> 20} MB)")
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no lock file at {path}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=__import__("io").BytesIO(data)) as fh:
                data = fh.read(MAX_LOCK_BYTES + 1)
        except (OSError, EOFError):
            raise QueryError("the lock file is a damaged gzip file") from None
        if len(data) > MAX_LOCK_BYTES:
            raise QueryError(f"the lock file unpacks to more than {MAX_LOCK_BYTES >> 20} MB")
    try:
        payload = _json.loads(data)
    except ValueError:
        raise QueryError("the lock file is not JSON") from None
    return Lock.from_json(payload)


def session_of(origin: Origin | None, api: Any) -> Any:
    session = api if api is not None else (origin.session if origin is not None else None)
    if session is None:
        raise QueryError("this selection does not know its archive (it was not made by a session): "
                         "pass api=IsicApi(...)")
    return session


def create_lock(parts: Mapping[str | None, Iterable[dict]], *, origin: Origin | None = None, api: Any = None,
                split: dict[str, Any] | None = None, progress: bool | None = None) -> Lock:
    """A :class:`Lock` of the images of ``parts`` (part name → records; ``{None: records}`` for no split).

    The SHA-256 of each image comes from the cache where it was computed as
    the file came in; images not cached are fetched (into the cache when
    there is one) and digested as they stream.
    """
    session = session_of(origin, api)
    rows: list[tuple[dict, str | None]] = []
    seen: set[str] = set()
    for part, records in parts.items():
        for record in records:
            key = isic_id_of(record)
            if key in seen:
                raise QueryError(f"the image {key} is in two parts; a lock gives each image one part")
            seen.add(key)
            rows.append((record, part))
    digests = image_digests(session.context.store, [record for record, _ in rows], progress=progress)
    shapes = {_shape(record) for record, _ in rows}
    lock = Lock(host=session.hostname, api=session.api_uri if not session.hostname.startswith("file:") else "",
                api_version=session.api_version, created=_dt.datetime.now(_dt.UTC).isoformat(
                    timespec="seconds"),
                selection=(origin or Origin()).describe(), split=split,
                metadata_shape=shapes.pop() if len(shapes) == 1 else "v2",
                ids=[], size=[], sha256=[], license=[], attribution=[], patient_id=[], lesion_id=[], metadata=[],
                part=[])
    for record, part in sorted(rows, key=lambda row: isic_id_of(row[0])):
        digest = digests[record_id(record)]
        lock.ids.append(isic_id_of(record))
        lock.size.append(digest.size)
        lock.sha256.append(digest.sha256)
        lock.license.append(license_of(record))
        lock.attribution.append(attribution_of(record))
        lock.patient_id.append(_text(field_of(record, "patient_id")))
        lock.lesion_id.append(_text(field_of(record, "lesion_id")))
        lock.metadata.append(metadata_digest(record))
        lock.part.append(part)
    return lock


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------- sessions
def open_session(lock: Lock, **options: Any) -> Any:
    """A session with the archive a lock was made against (anonymous)."""
    from .api import IsicApi

    options.setdefault("progress", False)
    if lock.host.startswith("file:"):
        return IsicApi(hostname=lock.host, **options)
    return IsicApi(hostname=lock.host, api_uri=lock.api or None, api_version=lock.api_version, **options)


def _records_by_isic_id(session: Any, ids: Sequence[str]) -> dict[str, dict]:
    """Today's records of these ISIC ids (those the archive no longer shows are left out)."""
    if not ids:
        return {}
    found = session.context.backend.images_by_key(list(ids), workers=min(2 * session.workers, 64))
    return {isic_id_of(record): record for record in found.values()}


# -------------------------------------------------------------- materialise
@dataclass
class MaterialiseResult:
    """What :func:`materialise` did.

    Attributes
    ----------
    folder : Path
    verified : list of str
        Ids whose file is there with the locked SHA-256.
    mismatched : dict
        Id → ``(locked SHA-256, SHA-256 of what came)``, after a second try
        (the file was not kept).
    missing : list of str
        Ids the archive no longer shows.
    failed : dict
        Id → why the transfer failed.
    download : DownloadResult
        The download engine's own result (bytes, seconds).
    """

    folder: Path
    verified: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    download: DownloadResult | None = None

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.failed)

    def __repr__(self) -> str:
        return (f"MaterialiseResult({len(self.verified)} verified, {len(self.mismatched)} mismatched, "
                f"{len(self.missing)} missing, {len(self.failed)} failed, folder={str(self.folder)!r})")

    def raise_for_problems(self) -> None:
        """Raise one :class:`~isicarchive.errors.IsicError` naming every image that is not as locked."""
        if self.ok:
            return
        problems = [f"{k}: SHA-256 {got[:12]}… where the lock has {want[:12]}…"
                    for k, (want, got) in self.mismatched.items()]
        problems += [f"{k}: no longer in the archive" for k in self.missing]
        problems += [f"{k}: {why}" for k, why in self.failed.items()]
        shown = "; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
        raise IsicError(f"{len(problems)} of the lock's images are not as locked: {shown}")


def materialise(lock: Lock | str | os.PathLike[str], folder: str | os.PathLike[str], api: Any = None, *,
                workers: int | None = None, progress: bool | None = None, strict: bool = False) -> MaterialiseResult:
    """Fetch exactly the images of a lock into ``folder`` and check every SHA-256.

    The folder gets the export layout (``ISIC_….jpg``, ``metadata.csv``,
    ``attribution.txt``, ``licenses/``, ``CITATION.cff``) and a
    ``SHA256SUMS`` of the locked digests (``sha256sum -c SHA256SUMS``).
    Files already there are checked, not fetched again.  A file whose
    digest differs, or whose transfer failed through every retry, is
    fetched once more; if it still differs it is removed and reported.

    Parameters
    ----------
    lock : Lock or path
    folder : path
    api : IsicApi, optional
        Where to fetch from (default: an anonymous session with the
        lock's archive); any backend whose images are the same will do.
    strict : bool
        Raise :class:`~isicarchive.errors.IsicError` unless every image
        arrived with its locked digest.
    """
    from .export import download_to_folder

    lock = read_lock(lock)
    session = api if api is not None else open_session(lock)
    target = Path(folder).expanduser()
    wanted = dict(zip(lock.ids, lock.sha256, strict=True))
    records = _records_by_isic_id(session, lock.ids)
    result = MaterialiseResult(target, missing=[i for i in lock.ids if i not in records])
    todo = [records[i] for i in lock.ids if i in records]
    show = session.progress if progress is None else progress
    for attempt in range(2):
        download = download_to_folder(session.context.store, todo, target, workers=workers or session.workers,
                                      progress=show)
        result.download = download
        by_key = {record_id(r): isic_id_of(r) for r in todo}
        retry = []
        for key, isic_id in by_key.items():
            if key in download.failed:
                # a transfer that failed through every retry of the policy may have met a passing
                # fault (a cut, a 503 burst): it gets the second round too
                result.failed[isic_id] = download.failed[key]
                retry.append(records[isic_id])
                continue
            result.failed.pop(isic_id, None)
            path = download.paths[key]
            got = download.sha256.get(key) or sha256_of(path)  # files already there are read, once
            if got == wanted[isic_id]:
                result.verified.append(isic_id)
                result.mismatched.pop(isic_id, None)
                continue
            path.unlink(missing_ok=True)
            result.mismatched[isic_id] = (wanted[isic_id], got)
            retry.append(records[isic_id])
        if not retry or attempt:
            break
        todo = retry  # bytes that differ may have been damaged on the way, or never came: once more
    _write_sums(target, lock, set(result.verified))
    if strict:
        result.raise_for_problems()
    return result


def _write_sums(folder: Path, lock: Lock, verified: set[str]) -> None:
    names = {path.stem: path.name for path in folder.iterdir() if path.is_file()}
    lines = [f"{sha}  {names[i]}\n" for i, sha in zip(lock.ids, lock.sha256, strict=True)
             if i in verified and i in names]
    (folder / SUMS).write_text("".join(lines), encoding="ascii")


# ------------------------------------------------------------------- drift
@dataclass
class DriftReport:
    """How today's archive (and a materialised folder) differs from a lock.

    Every list holds ISIC ids, in the lock's order (``added``: today's).
    """

    compared: int = 0
    gone: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    metadata_changed: list[str] = field(default_factory=list)
    license_changed: list[str] = field(default_factory=list)
    bytes_changed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    files_missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    KINDS = ("gone", "added", "dropped", "metadata_changed", "license_changed", "bytes_changed", "files_changed",
             "files_missing")

    @property
    def ok(self) -> bool:
        """True when nothing drifted."""
        return not any(getattr(self, kind) for kind in self.KINDS)

    def as_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, **{kind: getattr(self, kind) for kind in self.KINDS},
                "notes": self.notes, "ok": self.ok}

    def __str__(self) -> str:
        labels = {"gone": "no longer in the archive", "added": "added by the same query",
                  "dropped": "still in the archive, no longer matched by the query",
                  "metadata_changed": "metadata changed", "license_changed": "licence changed",
                  "bytes_changed": "image bytes changed", "files_changed": "files changed on disk",
                  "files_missing": "files missing from the folder"}
        lines = [f"drift against the lock ({self.compared} locked images): "
                 + ("none" if self.ok else "found")]
        for kind in self.KINDS:
            ids = getattr(self, kind)
            if ids:
                more = f" … and {len(ids) - 20} more" if len(ids) > 20 else ""
                lines.append(f"  {len(ids)} {labels[kind]}: {', '.join(ids[:20])}{more}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _column(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def compare(lock: Lock, today: Mapping[str, dict], query_ids: Iterable[str] | None = None, *,
            same_archive: bool = True) -> DriftReport:
    """The drift of ``today``'s records (ISIC id → record) against a lock; vectorised over the lock's images.

    Parameters
    ----------
    today : mapping
        Every record of today's archive the comparison may need: those the
        query matches and those of the lock's ids it no longer matches.
    query_ids : iterable, optional
        The ids the lock's query matches today (None: the lock has no query).
    same_archive : bool
        Compare metadata digests (only meaningful against the archive and
        API the lock was made with).
    """
    with collector_paused():  # hundreds of thousands of short-lived objects, none of them cyclic
        return _compare(lock, today, query_ids, same_archive)


def _compare(lock: Lock, today: Mapping[str, dict], query_ids: Iterable[str] | None, same_archive: bool
             ) -> DriftReport:
    report = DriftReport(compared=len(lock))
    ids = _column(lock.ids)
    present = np.fromiter((i in today for i in lock.ids), dtype=bool, count=len(lock))
    report.gone = ids[~present].tolist()
    if query_ids is not None:
        matched = list(query_ids)
        locked = set(lock.ids)
        report.added = sorted(i for i in matched if i not in locked)
        matched_set = set(matched)
        report.dropped = [i for i in ids[present].tolist() if i not in matched_set]
    rows = np.flatnonzero(present)
    here = [today[i] for i in ids[rows].tolist()]
    sizes = np.fromiter((_announced_size(r) for r in here), dtype=np.int64, count=len(here))
    locked_sizes = np.asarray(lock.size, dtype=np.int64)[rows]
    report.bytes_changed = ids[rows[(sizes >= 0) & (sizes != locked_sizes)]].tolist()
    licences = _column([license_of(r) for r in here])
    report.license_changed = ids[rows[licences != _column(lock.license)[rows]]].tolist()
    if same_archive:
        digests = _column([metadata_digest(r) for r in here])
        report.metadata_changed = ids[rows[digests != _column(lock.metadata)[rows]]].tolist()
    else:
        report.notes.append("metadata not compared: the lock was made with another archive or API")
    return report


def _announced_size(record: dict) -> int:
    size = ((record.get("files") or {}).get("full") or {}).get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else -1


def verify_lock(lock: Lock | str | os.PathLike[str], api: Any = None, *, folder: str | os.PathLike[str] | None = None,
                deep: bool = False, progress: bool | None = None) -> DriftReport:
    """Report how today's archive differs from a lock (and a materialised folder from its digests).

    The lock's query is run again (a search, ``select_images`` criteria,
    or the DOI'd collection) to find the images it adds and those it no
    longer matches; ids it no longer finds are looked up one by one to tell
    "gone" from "no longer matched".

    Parameters
    ----------
    lock : Lock or path
    api : IsicApi, optional
        Today's archive (default: an anonymous session with the lock's).
    folder : path, optional
        A folder :func:`materialise` filled: every file is digested again;
        one whose bytes changed is named in ``files_changed``.
    deep : bool
        Also fetch (or read from the cache) every image still in the
        archive and compare its SHA-256, not only its announced size.
    """
    lock = read_lock(lock)
    session = api if api is not None else open_session(lock)
    today, query_ids, notes = _today(session, lock)
    missing = [i for i in lock.ids if i not in today]
    today.update(_records_by_isic_id(session, missing))
    same = session.hostname.rstrip("/") == lock.host.rstrip("/") and session.api_version == lock.api_version
    report = compare(lock, today, query_ids, same_archive=same)
    report.notes[:0] = notes
    if deep:
        still = [today[i] for i in lock.ids if i in today]
        digests = image_digests(session.context.store, still, progress=progress)
        locked = dict(zip(lock.ids, lock.sha256, strict=True))
        changed = {isic_id_of(r) for r in still if digests[record_id(r)].sha256 != locked[isic_id_of(r)]}
        report.bytes_changed = [i for i in lock.ids if i in changed or i in set(report.bytes_changed)]
    if folder is not None:
        report.files_changed, report.files_missing = verify_folder(lock, folder)
    return report


def verify_folder(lock: Lock | str | os.PathLike[str], folder: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Ids whose file in ``folder`` no longer has the locked SHA-256, and ids with no file there."""
    lock = read_lock(lock)
    root = Path(folder).expanduser()
    files = {path.stem: path for path in root.iterdir() if path.is_file()} if root.is_dir() else {}
    changed, missing = [], []
    for isic_id, sha in zip(lock.ids, lock.sha256, strict=True):
        path = files.get(isic_id)
        if path is None:
            missing.append(isic_id)
        elif sha256_of(path) != sha:
            changed.append(isic_id)
    return changed, missing


def _today(session: Any, lock: Lock) -> tuple[dict[str, dict], list[str] | None, list[str]]:
    """Today's records of the lock's query, their ids (None: no query to run again), and notes."""
    selection = lock.selection or {}
    query, collections = selection.get("query"), selection.get("collections")
    criteria, doi = selection.get("criteria"), selection.get("doi")
    records: list[dict] | None
    try:
        records = _query_records(session, query, collections, criteria, doi)
    except (UnsupportedError, QueryError) as exc:  # a backend without that kind of query
        return {}, None, [f"the lock's query was not run again ({exc}): only its own ids were compared"]
    if records is None:
        return {}, None, ["the lock holds no query: only its own ids were compared"]
    today = {isic_id_of(r): r for r in records}
    return today, list(today), []


def _query_records(session: Any, query: str | None, collections: Any, criteria: Any, doi: str | None
                   ) -> list[dict] | None:
    if doi:
        from .collections import collection_by_doi

        records = list(collection_by_doi(session, doi).values())
    elif query is not None or collections:
        records = session.context.backend.search_images(query or "", collections=collections)
    elif criteria:
        records = list(session.select_images(criteria).values())
    else:
        return None
    return records


def lock_selection(selection: Selection, path: str | os.PathLike[str] | None, *, api: Any = None,
                   part: str | None = None, split: dict[str, Any] | None = None,
                   progress: bool | None = None) -> Lock:
    """What :meth:`Selection.lock <isicarchive.selection.Selection.lock>` does."""
    lock = create_lock({part: selection.values()}, origin=selection.origin, api=api, split=split, progress=progress)
    if path is not None:
        lock.save(path)
    return lock
