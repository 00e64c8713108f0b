"""Image licences: counted, filtered, kept out of exports that must not carry them.

Every image of the archive carries a Creative Commons licence (v2
``copyright_license``; v1 ``dataset.license``): ``CC-0``, ``CC-BY`` or
``CC-BY-NC``.  ``commercial=True`` keeps the first two only; an image whose
licence is unknown is never taken as allowed.

Searches filter server-side with the archive's own language:
``api.search_images("diagnosis_3:Melanoma AND " + licenses.query(commercial=True))``;
selections with :meth:`~isicarchive.selection.Selection.licensed`; exports
with ``selection.export(folder, commercial=True)``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .errors import QueryError

__all__ = ["COMMERCIAL", "LICENSES", "allowed_licenses", "attribution_of", "count", "keep", "license_of",
           "normalise_license", "query"]

#: the licences the archive uses, most permissive first
LICENSES = ("CC-0", "CC-BY", "CC-BY-NC")
#: those that allow commercial use
COMMERCIAL = frozenset({"CC-0", "CC-BY"})
_SPELLINGS = {"CC0": "CC-0", "CC-0": "CC-0", "CC0-1.0": "CC-0", "CC-BY": "CC-BY", "CCBY": "CC-BY",
              "CC-BY-4.0": "CC-BY", "CC-BY-NC": "CC-BY-NC", "CCBYNC": "CC-BY-NC", "CC-BY-NC-4.0": "CC-BY-NC"}


@functools.lru_cache(maxsize=256)  # a handful of spellings, read for every record of a drift report
def _normalised(text: str) -> str:
    upper = text.upper().replace(" ", "-").replace("_", "-")
    return _SPELLINGS.get(upper, _SPELLINGS.get(upper.replace("-", ""), text))


def normalise_license(name: Any) -> str | None:
    """The archive's spelling of a licence name (``cc0`` → ``CC-0``); None for no licence."""
    if not isinstance(name, str) or not name.strip():
        return None
    return _normalised(name.strip())


def license_of(record: dict) -> str | None:
    """An image record's licence (v2 ``copyright_license``, v1 ``dataset.license``)."""
    return normalise_license(record.get("copyright_license") or (record.get("dataset") or {}).get("license"))


def attribution_of(record: dict) -> str | None:
    """Whom an image is to be attributed to (v2 ``attribution``; v1: its dataset's name, as exports write it)."""
    value = record.get("attribution") or (record.get("dataset") or {}).get("attribution") or \
        (record.get("dataset") or {}).get("name")
    return str(value) if value else None


def allowed_licenses(licenses: Iterable[str] | str | None = None, commercial: bool = False) -> frozenset[str] | None:
    """The licences a filter keeps (None: every image, licence known or not).

    Raises
    ------
    QueryError
        A licence name the archive does not use.
    """
    if isinstance(licenses, str):
        licenses = [licenses]
    chosen: frozenset[str] | None = None
    if licenses is not None:
        names = [normalise_license(name) for name in licenses]
        unknown = [name for name, known in zip(licenses, names, strict=True) if known not in LICENSES]
        if unknown:
            raise QueryError(f"unknown licence {unknown[0]!r}; the archive's licences are {', '.join(LICENSES)}")
        chosen = frozenset(n for n in names if n)
    if commercial:
        chosen = COMMERCIAL if chosen is None else chosen & COMMERCIAL
    return chosen


def keep(records: Iterable[dict], licenses: Iterable[str] | str | None = None,
         commercial: bool = False) -> list[dict]:
    """The records whose licence the filter allows (an unknown licence never is, once there is a filter)."""
    chosen = allowed_licenses(licenses, commercial)
    records = list(records)
    if chosen is None:
        return records
    return [record for record in records if license_of(record) in chosen]


def count(records: Iterable[dict]) -> dict[str, int]:
    """Images per licence, most permissive first (``"unknown"`` for records without one)."""
    counts = Counter(license_of(record) or "unknown" for record in records)
    order = {name: i for i, name in enumerate(LICENSES)}
    return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def query(licenses: Iterable[str] | str | None = None, commercial: bool = False) -> str:
    """A term of the archive's search language that keeps these licences (to AND with a query).

    Raises
    ------
    QueryError
        No licence chosen, or an unknown one.
    """
    chosen = allowed_licenses(licenses, commercial)
    if not chosen:
        raise QueryError("choose licences (licenses=[...]) or commercial=True")
    terms = [f"copyright_license:{name}" for name in LICENSES if name in chosen]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"
