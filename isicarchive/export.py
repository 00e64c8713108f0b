"""Downloads into a plain folder: ``ISIC_xxxxxxx.jpg`` files plus ``metadata.csv``,
the layout of the archive's official CLI."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import threading
import time
import unicodedata
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from .cache import safe_name
from .csvguard import write_csv
from .downloads import EXTENSIONS, Downloader, DownloadResult, Job, extension_for, jobs_for, sniffed_type
from .errors import IsicError
from .search import DECIMAL_FIELDS, decimal_text
from .store import Store
from .transport import record_id

__all__ = ["download_to_folder", "metadata_rows"]


def _named_file(folder: Path, name: str, content_type: str | None) -> Path:
    return folder / f"{name}{extension_for(content_type)}"


class _FileNames:
    """One file name per image, never shared: names that clean up to the same text (``a/b`` and
    ``a_b``, ``É`` and ``e`` on some file systems, long names with one prefix, ``X`` and ``x`` on a
    case-blind disk) get a short digest of the original name."""

    #: longest file name stem (file systems allow 255 bytes; leaves room for the extension and part suffix)
    LONGEST = 120

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str) -> str:
        stem = safe_name(name)
        if stem != name or self._fold(stem) in self._taken:
            # a cleaned or clashing name: a digest of the original keeps it apart from the others
            digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
            stem = f"{stem[: self.LONGEST - 11]}-{digest}"
        if self._fold(stem) in self._taken:
            raise IsicError(f"no file name of its own for {name!r}")
        self._taken.add(self._fold(stem))
        return stem

    @staticmethod
    def _fold(stem: str) -> str:
        return unicodedata.normalize("NFKD", stem).casefold()


def _flat(record: dict) -> dict[str, Any]:
    """One CSV row: id, name, attribution, licence, then every acquisition/clinical key."""
    meta = record.get("metadata") or record.get("meta") or {}  # v2 keys when present
    row: dict[str, Any] = {
        "isic_id": record.get("isic_id") or record.get("name"),
        "attribution": record.get("attribution") or (record.get("dataset") or {}).get("name"),
        "copyright_license": record.get("copyright_license") or (record.get("dataset") or {}).get("license"),
    }
    for section in ("acquisition", "clinical"):
        for key, value in sorted((meta.get(section) or {}).items()):
            # decimals as the archive (and the official CLI's metadata file) write them: "24.10"
            row[key] = (decimal_text(value) or value) if key in DECIMAL_FIELDS else value
    return row


def metadata_rows(records: list[dict]) -> tuple[list[str], list[dict[str, Any]]]:
    rows = [_flat(r) for r in records]
    keys = sorted({k for row in rows for k in row} - {"isic_id", "attribution", "copyright_license"})
    return ["isic_id", "attribution", "copyright_license"] + keys, rows


def export_locks(folder: Path) -> Path:
    """Where the cross-process locks of an export into ``folder`` live: the user's temporary folder,
    one subfolder per export folder, so the folder the user asked for holds only their files.

    (Processes on other machines writing into one shared folder are not kept apart; each writes
    a file whole, by rename, all the same.)
    """
    import tempfile

    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24]
    locks = Path(tempfile.gettempdir()) / f"isicarchive-locks-{user}" / key
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    return locks


def download_to_folder(store: Store, records: list[dict], folder: Path, workers: int, progress: bool, *,
                       licenses: frozenset[str] | None = None, origin: Any = None) -> DownloadResult:
    """Download images as ``<name>.<ext>`` into ``folder`` and write ``metadata.csv``.

    ``licenses``: only images under these licences are written (an image of
    unknown licence is not); ``origin`` (the selection's) goes into ``CITATION.cff``.
    """
    if licenses is not None:
        from .licenses import license_of

        records = [r for r in records if isinstance(r, dict) and license_of(r) in licenses]
    folder.mkdir(parents=True, exist_ok=True)
    locks = export_locks(folder)
    names = _FileNames()

    def job(record: dict) -> Job:
        key = record_id(record)
        if not store.backend.is_id(key):
            raise IsicError(f"{key[:40]!r} is not an image id of this archive")
        name = names.claim(str(store.backend.image_record_name(record)))
        size = ((record.get("files") or {}).get("full") or {}).get("size")
        return Job(key, store.backend.image_file(record), functools.partial(_named_file, folder, name),
                   folder / f".{name}.part", size, locks / f"{name}.lock",
                   renew=store.backend.image_file_renewer(record))

    jobs, unusable = jobs_for(records, job)

    where = os.fspath(folder)

    def done(job: Job) -> Path | None:
        # exactly <name><one of our extensions>: a prefix glob listed the whole folder for every file
        # (quadratic) and took ISIC_1.5.jpg for ISIC_1. Asked under the file's lock (the question before
        # the transfers start is answered from one listing of the folder, _listed): plain strings and
        # os.stat, since a Path per extension cost more than the stat calls themselves
        start = os.path.join(where, job.part.name[1:-5])
        for ext in EXTENSIONS:
            try:
                if stat.S_ISREG(os.stat(start + ext).st_mode):
                    return Path(start + ext)
            except FileNotFoundError:
                continue
        return None

    columns, rows = metadata_rows(records)
    licences = _LicenceTexts(store, rows)  # asked for while the images download: one round trip less at the end
    if store.backend.local:  # an archive on disk: the files are copied, not fetched
        # a job exists only for a usable record, keyed as jobs_for keys it
        in_hand = {record_id(r): r for r in records if isinstance(r, dict)}
        result = _copy(store, jobs, _listed(folder), workers, in_hand)
    else:
        result = Downloader(store.http, workers, progress).run(jobs, done=done, desc="Images",
                                                               done_before=_listed(folder))
    result.failed.update(unusable)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        write_csv(fh, columns, ([row.get(key) for key in columns] for row in rows))
    _write_attribution_and_licenses(rows, folder, licences.texts())
    from .citations import write_citation_cff

    write_citation_cff(folder, records, origin=origin, archive=store.http.base_url)
    return result


class _LicenceTexts:
    """The archive's texts of the licences in use by ``rows``, fetched on a thread of their own while the
    images download (a daemon thread: an interrupted download does not wait for it)."""

    def __init__(self, store: Store, rows: list[dict[str, Any]]) -> None:
        self._store = store
        self._names = sorted({str(row["copyright_license"]) for row in rows if row.get("copyright_license")})
        self._texts: dict[str, str] = {}
        self._thread = threading.Thread(target=self._fetch, name="isic-licence-texts", daemon=True)
        if self._names:
            self._thread.start()

    def _fetch(self) -> None:
        for name in self._names:
            self._texts[name] = self._store.backend.license_text(name)

    def texts(self) -> dict[str, str]:
        """Licence name → text, in name order (any the thread did not get is fetched here, failing here)."""
        if self._names:
            self._thread.join()
        return {name: self._texts[name] if name in self._texts else self._store.backend.license_text(name)
                for name in self._names}


def _write_attribution_and_licenses(rows: list[dict[str, Any]], folder: Path, licences: dict[str, str]) -> None:
    """``attribution.txt`` (institutions by number of images, then name; Anonymous last) and one
    ``licenses/<licence>.txt`` per licence in use: the rest of the official CLI's layout."""
    counts = Counter(str(row["attribution"]) for row in rows if row.get("attribution"))
    ordered = sorted(counts.items(), key=lambda item: (item[0] == "Anonymous", -item[1], item[0]))
    text = "\n\n".join(name for name, _ in ordered)
    (folder / "attribution.txt").write_text(text + "\n" if text else "", encoding="utf-8")
    if licences:
        (folder / "licenses").mkdir(exist_ok=True)
    for licence, licence_text in licences.items():
        (folder / "licenses" / f"{safe_name(licence)}.txt").write_text(licence_text, encoding="utf-8")


#: the image type a file name in an archive on disk claims, by its extension
_CLAIMED_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff",
                  ".tiff": "image/tiff"}


def _listed(folder: Path) -> Any:
    """Which image file of a job the folder holds, from one listing of it: a copy out of an archive on disk
    and a download both ask for every job at once, and a look-up per extension and job took seconds at
    20,000 images (a download asks again under each file's lock; a copy waits for no other process's
    files: each copy is written whole, by rename, all the same)."""
    present = {entry.name for entry in os.scandir(folder) if entry.is_file()}

    def done(job: Job) -> Path | None:
        stem = job.part.name[1:-5]  # as download_to_folder's done: exactly <name><one of our extensions>
        return next((folder / name for ext in EXTENSIONS if (name := f"{stem}{ext}") in present), None)

    return done


def _copy(store: Store, jobs: list[Job], done: Any, workers: int, records: dict[str, dict]) -> DownloadResult:
    """The download result of copying each job's image out of an archive on disk (atomically)."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    result = DownloadResult()

    def write(job: Job, data: bytes) -> tuple[Job, Path | None, str | None, int]:
        kind = sniffed_type(data[:16])
        claimed = _CLAIMED_TYPES.get(PurePosixPath(job.endpoint).suffix.lower())
        if kind is None or (claimed is not None and kind != claimed):
            # an archive someone else made may hold anything under an image's name
            return job, None, (f"{job.endpoint[:80]} in the archive is not the {claimed or 'image'} its name says "
                               "(its first bytes are those of no such image): not exported"), 0
        final = job.destination(kind)
        job.part.write_bytes(data)
        job.sha256 = hashlib.sha256(data).hexdigest()  # of the bytes in hand: no second read
        os.replace(job.part, final)
        return job, final, None, len(data)

    handed: dict[int, tuple[Job, Path | None, str | None, int]] = {}

    def one(job: Job) -> tuple[Job, Path | None, str | None, int]:
        existing = done(job)
        if existing is not None:
            return job, existing, None, 0
        try:
            data = store.backend.read_image(records[job.key])
        except IsicError as exc:
            return job, None, str(exc), 0
        return write(job, data)

    prefetch = getattr(store.backend, "prefetch_images", None)
    if prefetch is not None:
        # a snapshot over HTTP: neighbouring members in one request (isicarchive.disk.snapshot), each checked
        # by size and CRC-32 and written here as it arrives, not kept in the cache and read back (this folder
        # is what a cut export resumes from); whatever is not handed over is read below
        todo = [(position, job) for position, job in enumerate(jobs) if done(job) is None]

        def deliver(index: int, data: bytes) -> None:
            position, job = todo[index]
            handed[position] = write(job, data)

        prefetch([records[job.key] for _, job in todo], deliver=deliver)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 8))) as pool:
        rest = iter(pool.map(one, [job for position, job in enumerate(jobs) if position not in handed]))
        for position in range(len(jobs)):
            job, path, problem, size = handed[position] if position in handed else next(rest)
            if problem is not None:
                result.failed[job.key] = problem
            elif size:
                result.downloaded.append(job.key)
                if job.sha256 is not None:
                    result.sha256[job.key] = job.sha256
            else:
                result.skipped.append(job.key)
            if path is not None:
                result.paths[job.key] = path
            result.bytes += size
    result.seconds = time.monotonic() - started
    return result

