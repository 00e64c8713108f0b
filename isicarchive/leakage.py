"""The leakage audit of a split: what the parts share that a model could learn instead of the disease.

:func:`audit` reports, across the parts (train / validation / test):

* patients and lesions in more than one part;
* byte-identical images in more than one part (the same SHA-256 under two
  ids: a re-upload, an image in two collections);
* overlap between archives, when parts come from several (the same ISIC id,
  or the same bytes, in an archive online and a copy on disk, or in two
  releases);
* optionally (``near_duplicates=True``), near-duplicates: images whose
  perceptual hash differs in at most ``distance`` bits, through the
  ``imagehash`` library (``pip install 'isicarchive[audit]'``; without it
  the check is skipped with a note).

It reads patient and lesion ids from the records (v2 ``patient_id``,
``lesion_id``), SHA-256 digests from the cache (computed when the files came
in; images not cached are fetched) or from a lock file, which holds both:
``audit(lock)`` needs no network at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import QueryError
from .grouping import field_of

__all__ = ["AuditReport", "Finding", "audit"]

KINDS = ("patient", "lesion", "identical", "archive_overlap", "near_duplicate")
_LABELS = {"patient": "patients in several parts", "lesion": "lesions in several parts",
           "identical": "byte-identical images in several parts",
           "archive_overlap": "images in several archives", "near_duplicate": "near-duplicate images in several parts"}


@dataclass
class Finding:
    """One thing the parts share.

    Attributes
    ----------
    kind : str
        ``patient``, ``lesion``, ``identical``, ``archive_overlap`` or ``near_duplicate``.
    value : str
        The patient or lesion id, the SHA-256, the ISIC id, the pair's distance.
    where : dict
        Part → the image ids there.
    """

    kind: str
    value: str
    where: dict[str, list[str]]

    def __str__(self) -> str:
        places = "; ".join(f"{part}: {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}"
                           for part, ids in self.where.items())
        return f"{self.value} — {places}"


@dataclass
class AuditReport:
    """What :func:`audit` found; ``ok`` when nothing."""

    parts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def shared_patients(self) -> list[str]:
        return [f.value for f in self.of_kind("patient")]

    @property
    def shared_lesions(self) -> list[str]:
        return [f.value for f in self.of_kind("lesion")]

    @property
    def identical_images(self) -> list[Finding]:
        return self.of_kind("identical")

    def as_dict(self) -> dict[str, Any]:
        return {"parts": self.parts, "ok": self.ok, "notes": self.notes,
                "findings": [{"kind": f.kind, "value": f.value, "where": f.where} for f in self.findings]}

    def __str__(self) -> str:
        sizes = ", ".join(f"{name} {n}" for name, n in self.parts.items())
        lines = [f"leakage audit of {len(self.parts)} parts ({sizes}): "
                 + ("no findings" if self.ok else f"{len(self.findings)} findings")]
        for kind in KINDS:
            found = self.of_kind(kind)
            if found:
                lines.append(f"  {len(found)} {_LABELS[kind]}:")
                lines += [f"    {f}" for f in found[:20]]
                if len(found) > 20:
                    lines.append(f"    … and {len(found) - 20} more")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class _Entry:
    part: str
    key: str
    isic_id: str
    archive: str
    patient: str | None
    lesion: str | None
    sha256: str | None
    record: dict | None
    session: Any


def _entries(parts: Any, api: Any) -> tuple[list[_Entry], dict[str, int]]:
    from .lockfile import Lock, isic_id_of

    if isinstance(parts, Lock):
        entries = [_Entry(str(part), i, i, parts.archive_url, patient, lesion, sha, None, None)
                   for i, sha, patient, lesion, part in zip(parts.ids, parts.sha256, parts.patient_id,
                                                            parts.lesion_id, parts.part, strict=True)]
        sizes: dict[str, int] = {}
        for entry in entries:
            sizes[entry.part] = sizes.get(entry.part, 0) + 1
        return entries, sizes
    if not isinstance(parts, Mapping) or not parts:
        raise QueryError("audit takes the parts of a split: {'train': selection, 'test': selection, ...} "
                         "(or a lock file's Lock)")
    entries = []
    sizes = {}
    for name, selection in parts.items():
        if not isinstance(selection, Mapping):
            raise QueryError(f"part {name!r} is not a selection (a mapping of id → record)")
        origin = getattr(selection, "origin", None)
        session = api if api is not None else getattr(selection, "session", None) or getattr(origin, "session", None)
        archive = getattr(session, "base_url", None) or "an archive"
        sizes[str(name)] = len(selection)
        for key, record in selection.items():
            patient, lesion = field_of(record, "patient_id"), field_of(record, "lesion_id")
            entries.append(_Entry(str(name), str(key), isic_id_of(record), str(archive),
                                  None if patient is None else str(patient), None if lesion is None else str(lesion),
                                  None, record, session))
    return entries, sizes


def _shared(entries: Iterable[_Entry], value_of: Any) -> dict[str, dict[str, list[str]]]:
    """value → part → ids, for the values found in more than one part."""
    places: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        value = value_of(entry)
        if value is not None:
            places.setdefault(value, {}).setdefault(entry.part, []).append(entry.isic_id)
    return {value: where for value, where in places.items() if len(where) > 1}


def _digest(entries: list[_Entry], notes: list[str]) -> None:
    """Fill in the SHA-256 of every entry that has a session to read it through."""
    from .digests import image_digests

    by_session: dict[int, list[_Entry]] = {}
    for entry in entries:
        if entry.sha256 is None and entry.session is not None and entry.record is not None:
            by_session.setdefault(id(entry.session), []).append(entry)
    for group in by_session.values():
        session = group[0].session
        found = image_digests(session.context.store, [e.record for e in group if e.record is not None], progress=False)
        for entry in group:
            digest = found.get(entry.key)
            entry.sha256 = digest.sha256 if digest is not None else None
    if any(e.sha256 is None for e in entries):
        notes.append("some images were not compared byte for byte: their parts know no session "
                     "(pass api=...) or no digest")


def audit(parts: Any, *, near_duplicates: bool = False, distance: int = 4, api: Any = None,
          check_bytes: bool = True) -> AuditReport:
    """Report what the parts of a split share (see the module docstring).

    Parameters
    ----------
    parts : mapping or Lock
        Part name → :class:`~isicarchive.selection.Selection` (e.g. a
        :class:`~isicarchive.selection.Splits`), or a lock file's
        :class:`~isicarchive.lockfile.Lock` of a split.
    near_duplicates : bool
        Also compare perceptual hashes (needs ``imagehash``).
    distance : int
        Most differing bits of two perceptual hashes (of 64) that still
        make a near-duplicate.
    api : IsicApi, optional
        The session to read images through, for parts no session made.
    check_bytes : bool
        Compare SHA-256 digests (fetches images not yet cached).
    """
    entries, sizes = _entries(parts, api)
    report = AuditReport(parts=sizes)
    for kind, value_of in (("patient", lambda e: e.patient), ("lesion", lambda e: e.lesion)):
        for value, where in sorted(_shared(entries, value_of).items()):
            report.findings.append(Finding(kind, value, where))
    archives = {e.archive for e in entries}
    if len(archives) > 1:
        for isic_id, where in sorted(_shared(entries, lambda e: e.isic_id).items()):
            if len({e.archive for e in entries if e.isic_id == isic_id}) > 1:
                report.findings.append(Finding("archive_overlap", isic_id, where))
    if check_bytes:
        _digest(entries, report.notes)
        overlapping = {f.value for f in report.of_kind("archive_overlap")}
        for sha, where in sorted(_shared(entries, lambda e: e.sha256).items()):
            holders = [e for e in entries if e.sha256 == sha]
            if len({e.archive for e in holders}) > 1:
                if not {e.isic_id for e in holders} <= overlapping:
                    report.findings.append(Finding("archive_overlap", f"SHA-256 {sha[:16]}…", where))
            else:
                report.findings.append(Finding("identical", f"SHA-256 {sha[:16]}…", where))
    if near_duplicates:
        _near_duplicates(entries, distance, report)
    return report


def _near_duplicates(entries: list[_Entry], distance: int, report: AuditReport) -> None:
    try:
        import imagehash
        from PIL import Image as PILImage
    except ImportError:
        report.notes.append("near-duplicates not checked: they need imagehash (pip install 'isicarchive[audit]')")
        return
    import io

    from .pixels import check_pixels

    hashes: list[int] = []
    kept: list[_Entry] = []
    for entry in entries:
        if entry.session is None or entry.record is None:
            continue
        store = entry.session.context.store
        path = store.image_path(entry.record)
        data = path.read_bytes() if path is not None else store.backend.read_image(entry.record) \
            if store.backend.local else store.http.get_bytes(store.backend.image_file(entry.record))[0]
        check_pixels(data, f"image {entry.record.get('isic_id') or entry.record.get('_id')}")  # the pixel limit
        with PILImage.open(io.BytesIO(data)) as image:
            hashes.append(int(str(imagehash.phash(image)), 16))
        kept.append(entry)
    if len(kept) < len(entries):
        report.notes.append("near-duplicates were looked for only among images read through a session")
    if not kept:
        return
    values = np.asarray(hashes, dtype=np.uint64)
    parts = np.asarray([e.part for e in kept], dtype=object)
    found: set[tuple[int, int]] = set()
    for i in range(len(kept)):
        # differing bits of this hash and every later one, all at once
        xor = np.bitwise_xor(values[i], values[i + 1:])
        bits = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for j in np.flatnonzero((bits <= distance) & (parts[i + 1:] != parts[i])).tolist():
            found.add((i, i + 1 + j))
    identical = {(e.isic_id) for f in report.of_kind("identical") for ids in f.where.values() for e in kept
                 if e.isic_id in ids}
    for i, j in sorted(found):
        a, b = kept[i], kept[j]
        if a.isic_id in identical and b.isic_id in identical:
            continue  # already reported as byte-identical
        bits = bin(hashes[i] ^ hashes[j]).count("1")
        report.findings.append(Finding("near_duplicate", f"{bits} bits apart",
                                       {a.part: [a.isic_id], b.part: [b.isic_id]}))
