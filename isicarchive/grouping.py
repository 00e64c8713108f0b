"""Groups of images (by lesion, by patient) and the leakage-free split of a selection.

A model trained on one image of a patient and tested on another image of the
same patient learns the patient, not the disease.  :func:`split` keeps every
group (a patient, a lesion) whole in one part, and spreads the groups of each
class over the parts in the asked proportions as evenly as the groups allow.

Field names are looked up as written when they are dotted paths
(``metadata.clinical.patient_id``); a bare name (``patient_id``,
``diagnosis_1``) is looked for in the record's clinical and acquisition
metadata (v2 ``metadata``, then v1 ``meta``), then at its top level.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .errors import QueryError
from .selection import get_path

__all__ = ["field_of", "group_ids", "split_ids"]

_SECTIONS = ("metadata.clinical", "metadata.acquisition", "meta.clinical", "meta.acquisition")


def field_of(record: dict, field: str) -> Any:
    """A record's value of ``field`` (a dotted path, or a bare metadata name)."""
    if "." in field:
        return get_path(record, field)
    for section in _SECTIONS:
        values = get_path(record, section)
        if isinstance(values, dict) and values.get(field) is not None:
            return values[field]
    return record.get(field)


def group_ids(records: Mapping[str, dict], by: str) -> dict[Any, list[str]]:
    """Image ids per value of ``by``; records without a value are left out."""
    groups: dict[Any, list[str]] = {}
    for key, record in records.items():
        value = field_of(record, by)
        if value is not None:
            groups.setdefault(value, []).append(key)
    return groups


def split_ids(records: Mapping[str, dict], fractions: Mapping[str, float], by: str,
              stratify: str | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Ids per part: no group in two parts, each class spread as ``fractions`` asks.

    Records without a value of ``by`` form groups of their own, one per
    image.  A group's class is the most common ``stratify`` value among its
    images.  Groups are dealt largest first (ties in an order the seed
    shuffles) to the part that is furthest below its share of that class, so
    the same seed gives the same split.

    Raises
    ------
    QueryError
        Fractions that are not positive or do not add up to 1; a grouping
        or stratifying field no record has (with close matches).
    """
    if not fractions or any(not isinstance(f, (int, float)) or f <= 0 for f in fractions.values()):
        raise QueryError(f"split fractions must be positive numbers, e.g. {{'train': 0.8, 'test': 0.2}}; got "
                         f"{dict(fractions)!r}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise QueryError(f"split fractions must add up to 1, not {sum(fractions.values()):g}: {dict(fractions)!r}")
    from .empty import field_problem

    for field, purpose in ((by, "group by"), (stratify, "stratify by")):
        if field is not None and records and all(field_of(r, field) is None for r in records.values()):
            raise field_problem(records.values(), field, purpose, _SECTIONS)
    groups: dict[Any, list[str]] = {}
    for key, record in records.items():
        value = field_of(record, by)
        groups.setdefault(("group", value) if value is not None else ("alone", key), []).append(key)
    by_class: dict[Any, list[Any]] = {}
    for group, members in groups.items():
        label = None
        if stratify is not None:
            counts = Counter(field_of(records[key], stratify) for key in members)
            label = min(counts, key=lambda value: (-counts[value], str(value)))
        by_class.setdefault(label, []).append(group)
    rng = random.Random(seed)
    parts: dict[str, list[str]] = {name: [] for name in fractions}
    for label in sorted(by_class, key=str):
        ordered = sorted(by_class[label], key=str)
        rng.shuffle(ordered)
        ordered.sort(key=lambda group: -len(groups[group]))  # stable: the shuffle orders equal sizes
        total = sum(len(groups[group]) for group in ordered)
        have = dict.fromkeys(fractions, 0)
        for group in ordered:
            # the part furthest below its share of this class (relative to its share), first named on a tie
            name = max(fractions, key=lambda n: (fractions[n] * total - have[n]) / fractions[n])
            parts[name].extend(groups[group])
            have[name] += len(groups[group])
    return parts
