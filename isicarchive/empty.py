"""No silently empty selection: when criteria, a search or a split's field select nothing, say why.

The original semantics stay (a missing key reads as None, so a criterion on a
field no record has simply selects nothing).  But when a selection comes out
empty, each criterion is looked at on its own, and a likely mistake is named
with its close matches (:mod:`difflib`):

* a field no record has (``meta.clinical.diagnossis``);
* a value of the wrong type (``['…age_approx', '>=', "50"]``: numbers there);
* a value that never occurs (``melanomma``);
* a v2 search term that matches nothing while a case variant does
  (``diagnosis_1:malignant``).

By default that is an :class:`EmptySelectionWarning`; under ``strict`` (the
``strict=`` argument of ``select_images``/``search_images``, or
``IsicApi.strict_selection = True`` for a whole session) a
:class:`~isicarchive.errors.QueryError`.  A selection that is empty because
its criteria, each fine on its own, exclude each other is not a mistake and
says nothing.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from .errors import QueryError

__all__ = ["EmptySelectionWarning", "check_empty_search", "check_empty_selection", "close_matches",
           "field_problem"]


class EmptySelectionWarning(UserWarning):
    """A selection or search came out empty, most likely because of a mistake it names."""


_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


def close_matches(word: str, candidates: Iterable[Any], n: int = 3) -> list[str]:
    """Up to ``n`` candidates close to ``word`` (case-insensitive; exact case variants first)."""
    texts = sorted({str(c) for c in candidates if c is not None})
    folded: dict[str, list[str]] = {}
    for text in texts:
        folded.setdefault(text.lower(), []).append(text)
    same_case = [t for t in folded.get(word.lower(), []) if t != word]
    fuzzy = difflib.get_close_matches(word.lower(), list(folded), n=n, cutoff=0.75)
    found = same_case + [t for key in fuzzy for t in folded[key] if t != word and t not in same_case]
    return found[:n]


def _suggest(matches: list[str]) -> str:
    return f"; close matches: {', '.join(map(repr, matches))}" if matches else ""


def report(message: str, strict: bool, stacklevel: int = 3) -> None:
    """Warn, or (strict) raise :class:`QueryError`."""
    if strict:
        raise QueryError(message)
    warnings.warn(message, EmptySelectionWarning, stacklevel=stacklevel)


def _criterion_problem(index: Any, path: str, op: str, test: Any) -> str | None:
    """Why ``[path, op, test]`` alone selects nothing, when it is a likely mistake (None: no mistake seen)."""
    if op in ("is None", "not is None", "is", "not is", "ni", "not ni"):
        return None
    if not index.has_path(path):
        known = index.paths()
        return f"no record has the field {path!r}" + _suggest(close_matches(path, known))
    if op not in _COMPARISONS:
        return None
    values = index.values_of(path)
    tests = list(test) if op in ("in", "not in") and isinstance(test, (list, tuple, set)) else [test]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    for value in tests:
        if isinstance(value, str) and numbers and not texts and _NUMBER.match(value):
            return (f"{path!r} holds numbers, and {value!r} is text, which no number equals or compares with: "
                    f"write {value.strip()} without quotes")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and texts and not numbers:
            return f"{path!r} holds text, and {value!r} is a number: write {str(value)!r}"
    if op in ("==", "in"):
        absent = [v for v in tests if isinstance(v, str) and v not in texts]
        if absent and len(absent) == len(tests):
            matches = [m for v in absent for m in close_matches(v, texts)]
            return (f"no record has {path} == {absent[0]!r}" if len(absent) == 1 else
                    f"no record has {path} in {absent!r}") + _suggest(matches)
    return None


def check_empty_selection(index: Any, criteria: list[tuple[str, str, Any]], strict: bool,
                          within: Iterable[str] | None = None) -> None:
    """After an empty selection: warn (or raise) about each criterion that alone selects nothing by mistake."""
    problems = []
    for path, op, test in criteria:
        try:
            alone = bool(index.mask([(path, op, test)], within).any())
        except Exception:  # a criterion the selection itself accepted; the check must not fail where it did not
            continue
        if not alone:
            problem = _criterion_problem(index, path, op, test)
            if problem:
                problems.append(problem)
    if problems:
        report("the selection is empty: " + "; and ".join(problems), strict, stacklevel=4)


_TERM = re.compile(r'(?<![\w.])(-?)([A-Za-z_][\w.]*):("(?:[^"\\]|\\.)*"|[^\s()"\[\]{}]+)')


def check_empty_search(query: str, count: Callable[[str], int], strict: bool) -> None:
    """After an empty v2 search: name each ``field:value`` term whose case variant does match.

    ``count(query)`` tells how many images a query finds (a search of one
    record at most); it is asked only for terms of plain text, at most three
    variants each, and only when the search found nothing.
    """
    problems = []
    for negated, field, raw in _TERM.findall(query or ""):
        if negated:
            continue
        quoted = raw.startswith('"')
        value = raw[1:-1] if quoted else raw
        if not value or any(ch in value for ch in "*?") or not any(ch.isalpha() for ch in value):
            continue
        variants = dict.fromkeys(v for v in (value.capitalize(), value.lower(), value.title(), value.upper())
                                 if v != value)
        for variant in variants:
            text = f'"{variant}"' if quoted or " " in variant else variant
            try:
                found = count(f"{field}:{text}")
            except Exception:  # a term the archive refuses on its own: nothing to suggest
                break
            if found:
                problems.append(f"{field}:{raw} matches nothing, but {field}:{text} does "
                                "(values are case-sensitive)")
                break
    if problems:
        report("the search found nothing: " + "; ".join(problems), strict, stacklevel=4)


def field_problem(records: Iterable[dict], field: str, purpose: str, sections: tuple[str, ...]) -> QueryError:
    """The error for a field no record has a value of (a split's ``by`` or ``stratify``), with close matches."""
    names: set[str] = set()
    for n, record in enumerate(records):
        if n >= 2000:  # the fields of a few thousand records are every field in practice
            break
        for section in sections:
            node: Any = record
            for part in section.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                names.update(k for k in node if isinstance(k, str))
                names.update(f"{section}.{k}" for k in node if isinstance(k, str))
        names.update(k for k in record if isinstance(k, str))
    return QueryError(f"no record has a value of {field!r} to {purpose} (v2 names: patient_id, lesion_id, "
                      f"diagnosis_1..5)" + _suggest(close_matches(field, names)))
