"""``select_images``: the original package's criteria, answered from a columnar index.

Semantics (exactly those of the original's per-record evaluation)
-----------------------------------------------------------------
A criterion is ``[field, op, value]``; all criteria of a list must hold.
``field`` is a dotted path (``meta.clinical.age_approx``; keys may contain
spaces).  For each record the field's value is looked up as the original
``getxattr`` did: a missing key (or a missing level) reads as ``None``; a
list accepts a numeric segment (``notes.tags.0``); ``#`` is the length of a
dict or list.  The operator is then applied with Python's own rules:

=================  ==========================================
``==`` ``!=``       ``value == test`` (so ``True == 1``)
``<`` ``<=`` …      ``value < test``
``in``/``not in``   ``value in test`` (test is a collection)
``ni``/``not ni``   ``test in value`` (a tag in a list, a substring
                    of a string, a key of a dict)
``match`` ``~``     ``re.search(test, value) is not None``
``not match`` ``!~`` ``re.search(test, value) is None``
``is``/``not is``   identity (``True``, ``False``, ``None``)
``is None``         ``value is None`` (third element ignored)
``not is None``     ``value is not None``
=================  ==========================================

A comparison that raises for a record — ``None >= 5``, ``'abc' >= 5``, a
regular expression on a number, ``'x' in None`` — makes that record not
match (for the negated operators too: ``not ni`` on a missing list selects
nothing).  An unknown operator or malformed criterion raises
:class:`~isicarchive.errors.QueryError` before anything is evaluated (the
original silently selected nothing).

How it is fast
--------------
:class:`ImageIndex` flattens every record once into columns, one per dotted
path: an ``int32`` code per record and the list of distinct values.  A
criterion is evaluated once per *distinct value* with the Python operator
itself (so the answer is the original's by construction) and broadcast to
the records with one numpy gather; equality and numeric comparisons are
vectorised further.  Paths whose look-up has special cases (numeric list
segments, ``#``, a level that is a dict in some records and not in others)
fall back to the per-record evaluation, which is exact and slower.
"""

from __future__ import annotations

import bisect
import contextlib
import html
import itertools
import operator
import os
import re
import threading
from array import array
from collections.abc import (
    Container,
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from typing import TYPE_CHECKING, Any

from . import arrowindex
from ._gc import collector_paused
from ._lazy import lazy_module
from .arrowindex import ArrowSlice, IdStrings, parse_slice, read_slice
from .errors import QueryError
from .records import Held, RecordRows, RecordStore, decode_many
from .regex import StringValues, string_values
from .search import DECIMAL_FIELDS

if TYPE_CHECKING:
    import numpy as np

    from .leakage import AuditReport
    from .lockfile import Lock, Origin
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see ._lazy)

__all__ = ["OPERATORS", "UNARY", "ImageIndex", "Selection", "Splits", "evaluate", "get_path", "normalise_criteria"]

BINARY = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "ni", "not ni", "match", "~", "not match", "!~",
          "is", "not is")
UNARY = ("is None", "not is None")
OPERATORS = BINARY + UNARY
_SCALARS = (type(None), bool, int, float, str)
#: held while a deferred index reads paths or builds its columns: selections made from several threads at once
#: wait for it, and see the paths read alone until every column is in
_DEFERRED_WORK = threading.RLock()
_SPECIAL_SEGMENT = re.compile(r"^(#|\$|%|%%|-?\d+|\[\]|\{\}|\{keys\})$|[=~]")
_EXACT_FLOAT = 2 ** 53


# ------------------------------------------------------------------ criteria
def normalise_criteria(criteria: Any) -> list[tuple[str, str, Any]]:
    """Validate criteria; returns a list of ``(field, op, test)``.

    A single criterion may be given bare (``['a.b', '==', 1]``); unary
    operators accept the two-element form.

    Raises
    ------
    QueryError
        Naming the offending criterion.
    """
    if isinstance(criteria, (str, bytes)) or not isinstance(criteria, Sequence) or not criteria:
        raise QueryError(f"criteria must be a list like ['meta.clinical.diagnosis', '==', 'melanoma'] "
                         f"or a list of such lists; got {criteria!r}")
    if isinstance(criteria[0], str):
        criteria = [criteria]
    parsed = []
    for criterion in criteria:
        parsed.append(_parse_one(criterion))
    return parsed


def _parse_one(criterion: Any) -> tuple[str, str, Any]:
    if isinstance(criterion, (str, bytes)) or not isinstance(criterion, Sequence):
        raise QueryError(f"criterion {criterion!r} must be a list [field, op, value]")
    if len(criterion) == 2 and criterion[1] in UNARY:
        criterion = [criterion[0], criterion[1], None]
    if len(criterion) != 3:
        raise QueryError(f"criterion {list(criterion)!r} must have three elements [field, op, value]")
    field, op, test = criterion
    if not isinstance(field, str) or not field:
        raise QueryError(f"criterion {list(criterion)!r}: the field must be a non-empty dotted path string")
    if op not in OPERATORS:
        raise QueryError(f"criterion {list(criterion)!r}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if op in ("in", "not in") and not isinstance(test, Container):
        raise QueryError(f"criterion {list(criterion)!r}: {op!r} needs a collection (list, set, string) as value")
    if op in ("match", "~", "not match", "!~"):
        if not isinstance(test, (str, re.Pattern)):
            raise QueryError(f"criterion {list(criterion)!r}: {op!r} needs a regular expression string")
        try:
            re.compile(test)
        except re.error as exc:
            raise QueryError(f"criterion {list(criterion)!r}: invalid regular expression: {exc}") from None
    return field, op, test


# ------------------------------------------------------------ the reference
def get_path(record: Any, path: str) -> Any:
    """A record's value at a dotted path, as the original package's ``getxattr`` read it."""
    if record is None:
        return None
    if "." not in path:
        return _segment(record, path)
    if isinstance(record, dict) and path in record:
        return record[path]
    parts = path.split(".")
    obj = record
    for part in parts[:-1]:
        obj = _segment(obj, part)
        if obj is None:
            return None
    return _segment(obj, parts[-1])


def _segment(obj: Any, name: str) -> Any:
    try:
        if isinstance(obj, dict):
            if name == "#":
                return len(obj)
            if name == "$":
                return obj.values()
            if name == "%":
                return list(obj.keys())
            if name == "%%":
                return " ".join(obj.keys())
            return obj.get(name)
        if name.isdigit() or (name[:1] == "-" and name[1:].isdigit()):
            return obj[int(name)]
        if not isinstance(obj, list):
            return getattr(obj, name)
        if name == "#":
            return len(obj)
        if "=" in name:
            parts = name.split("=")
            key = ".".join(parts[0].split(">"))
            wanted: Any = int(parts[-1]) if len(parts) == 3 and parts[1] == "#" else parts[-1]
            return next((sub for sub in obj if isinstance(sub, dict) and get_path(sub, key) == wanted), None)
        if "~" in name:
            key, _, pattern = name.partition("~")
            regex = re.compile(pattern)
            key = ".".join(key.split(">"))
            return next((sub for sub in obj if isinstance(sub, dict) and regex.search(get_path(sub, key))), None)
        return getattr(obj, name)
    except Exception:
        return None


_APPLY: dict[str, Any] = {
    "==": lambda v, t: v == t, "!=": lambda v, t: v != t, "<": lambda v, t: v < t, "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t, ">=": lambda v, t: v >= t, "in": lambda v, t: v in t,
    "not in": lambda v, t: v not in t, "ni": lambda v, t: t in v, "not ni": lambda v, t: t not in v,
    "match": lambda v, t: re.search(t, v) is not None, "~": lambda v, t: re.search(t, v) is not None,
    "not match": lambda v, t: re.search(t, v) is None, "!~": lambda v, t: re.search(t, v) is None,
    "is": lambda v, t: v is t, "not is": lambda v, t: v is not t,
    "is None": lambda v, t: v is None, "not is None": lambda v, t: v is not None,
}


def evaluate(value: Any, op: str, test: Any) -> bool:
    """One criterion on one value, with the original's rules (an error is False)."""
    apply = _APPLY.get(op)
    if apply is None:
        raise QueryError(f"unknown operator {op!r}")
    try:
        return bool(apply(value, test))
    except Exception:
        return False


# --------------------------------------------------------------- the index
def _freeze(value: Any) -> Any:
    """A hashable key that tells apart values Python's ``==`` would merge (1, 1.0, True)."""
    kind = type(value)
    if kind is str:
        return value
    if kind in (list, tuple):
        return (kind, tuple(_freeze(v) for v in value))
    if kind is dict:
        return (dict, tuple((k, _freeze(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return (kind, id(value))
    return (kind, value)


_REGEX_LITERAL = r"[^\\.^$*+?{}\[\]|()]+"
_LITERAL_PREFIXES = re.compile(rf"\^\(({_REGEX_LITERAL}(?:\|{_REGEX_LITERAL})*)\)|\^({_REGEX_LITERAL})")
_LITERAL = re.compile(_REGEX_LITERAL)
#: fewer distinct values than this: Python's re over them beats the fixed cost of a pass through Arrow
_RE2_MIN_VALUES = 1000
#: numpy's function of each comparison, by name (numpy is imported on first use, not with this module)
_COMPARE = {"<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal"}
_DENSE_OPS = {**_COMPARE, "==": "equal", "!=": "not_equal"}


#: the kind of a column whose values are told apart by :func:`_freeze`, one at a time
_GENERAL = object()


def _shared_kind(column: Any, values: Any) -> Any:
    """The kind of a column that held ``column`` values and takes ``values`` (None: they cannot share a dict).

    ``str`` stands for strings and None, which equal nothing else; ``list`` for lists of strings.
    """
    if column is _GENERAL:
        return None
    if column is None or column is values:
        return values
    if column is str and values is not list:
        return values
    if values is str and column is not list:
        return column
    return None


def _keyed_by_kind(values: Sequence[Any], kinds: set[type] | None = None) -> tuple[Any, Iterable[Any]]:
    """The kind of ``values`` and the dict keys that tell them apart as :func:`_freeze` does.

    One kind of scalar (strings and None beside it, which equal nothing else) keys by the values
    themselves, lists of strings by their tuples; ``(None, ())`` for mixed kinds (``1``, ``1.0`` and
    ``True`` are one dict key), which need :func:`_freeze` one value at a time.
    """
    if kinds is None:
        kinds = set(map(type, values))
    scalars = kinds - {str, type(None)}
    if len(scalars) <= 1 and scalars <= {int, float, bool}:
        return next(iter(scalars), str), values
    if kinds == {list} and set(map(type, itertools.chain.from_iterable(values))) <= {str}:
        return list, map(tuple, values)
    return None, ()


def _narrowest(codes: np.ndarray, count: int) -> np.ndarray:
    """The codes in the narrowest integer type that holds ``count`` codes (most columns have few values: a
    byte a record instead of four)."""
    kind = np.uint8 if count <= 1 << 8 else np.uint16 if count <= 1 << 16 else np.int32
    return codes if codes.dtype == kind else codes.astype(kind)


_FINISHING = object()  # a column's pending finish under way (see _Column.finish_later)


class _Column:
    """One dotted path: a code per record and the distinct values.

    Code 0 is "no such key in this record" (read as None); a value that is
    None in the record has a code of its own, so ``codes != 0`` tells where
    the key exists (dict-key membership needs that).
    """

    __slots__ = ("_arrow_strings", "_arrow_values", "_base", "_by_row", "_codes", "_dense", "_eq", "_keys", "_kind",
                 "_next", "_none", "_numeric", "_pending", "_present", "_raw", "_rows", "_sorted_strings", "_strings",
                 "_uniques", "_vals")

    def __init__(self) -> None:
        self._pending: Any = None  # (rows, ids) of a finish left for the first use (see finish_later)
        self.uniques: list[Any] = [None]
        # value -> code while records are being added; dropped when they are in (a near-unique column's
        # table is as big as the column: ~50 MB at 400,000 records) and rebuilt if more records come
        self._keys: dict[Any, int] | None = {}
        # while a column holds one kind of value (see extend): value -> provisional id, and that kind
        self._raw: dict[Any, int] | None = None
        self._kind: Any = None
        self._base = self._next = 1
        self._rows = array("i")
        self._vals = array("i")
        # or, for a column most records have, the (provisional) id by row: half the memory of rows and values
        self._by_row: np.ndarray | None = None
        # the pyarrow build's distinct values of each slice, one Arrow type, told apart by Arrow (see extend_arrow)
        self._arrow_values: list[Any] = []
        self.codes: np.ndarray = np.zeros(0, np.int32)
        self._eq: dict[Any, list[int]] | None = None
        self._numeric: tuple[np.ndarray, np.ndarray] | None = None
        self._strings: tuple[np.ndarray, Any] | None = None
        self._sorted_strings: tuple[np.ndarray, list[str]] | None = None
        self._arrow_strings: tuple[np.ndarray, StringValues | None] | None = None
        self._dense: np.ndarray | None = None
        self._none: np.ndarray | None = None
        self._present: np.ndarray | None = None

    # the distinct values and codes; a column the pyarrow build left to finish (see finish_later) is finished
    # when they are first asked for
    @property
    def uniques(self) -> list[Any]:
        if self._pending is not None:
            self._finish_pending()
        return self._uniques

    @uniques.setter
    def uniques(self, value: list[Any]) -> None:
        self._uniques = value

    @property
    def codes(self) -> np.ndarray:
        if self._pending is not None:
            self._finish_pending()
        return self._codes

    @codes.setter
    def codes(self, value: np.ndarray) -> None:
        self._codes = value

    def finish_later(self, n_rows: int, ids: IdStrings | None = None) -> None:
        """:meth:`finish`, or, for a column of the pyarrow build's values (telling apart the values of every
        slice and making Python objects of them: most of the work in a near-unique column), the same when
        its values or codes are first asked for: a selection pays it for the columns it names."""
        if self._arrow_values and self._raw is None:
            self._pending = (n_rows, ids)
        else:
            self.finish(n_rows, ids)

    def _finish_pending(self) -> None:
        with _DEFERRED_WORK:  # (one thread finishes it; the others wait here and find it done)
            pending = self._pending
            if pending is None or pending is _FINISHING:  # (done; or finish itself asking, in this thread)
                return
            self._pending = _FINISHING
            try:
                self.finish(*pending)
            finally:
                self._pending = None

    def append(self, row: int, value: Any) -> None:
        self._settle()
        keys = self._keys
        if keys is None:
            keys = self._keys = {_freeze(v): c for c, v in enumerate(self.uniques) if c}
        key = _freeze(value)
        code = keys.get(key)
        if code is None:
            code = keys[key] = len(self.uniques)
            self.uniques.append(value)
        self._rows.append(row)
        self._vals.append(code)

    def extend(self, rows: np.ndarray, values: Sequence[Any], kinds: set[type] | None = None) -> None:
        """Append many rows at once (what :meth:`append` does for each, with the per-value work in C).

        While the column holds one kind of value, values are told apart by a
        dict of the values themselves, which merges exactly what
        :func:`_freeze` merges: one kind of scalar (with strings and None
        beside it, which equal nothing else), or lists of strings (keyed by
        their tuple).  Each value gets a provisional id there in C
        (``dict.setdefault`` with a running count: the id of its first
        occurrence), made into codes when the records are in
        (:meth:`_settle`); the dict lives across the slices of records the
        index reads.  A column of mixed kinds (``1`` and ``1.0`` and ``True``
        are one dict key) takes :meth:`append` for every value.
        """
        if self._arrow_values:
            self._settle()
        kind, keyed = _keyed_by_kind(values, kinds)
        if kind is not None and self._kind is not _GENERAL and self._raw is None and len(self.uniques) > 1:
            self._raw_from_uniques()  # a column finished before (more records added): its values as keys
        if kind is not None:
            kind = _shared_kind(self._kind, kind)
        if kind is None:
            self._settle()
            self._kind = _GENERAL
            for row, value in zip(rows.tolist(), values, strict=True):
                self.append(row, value)
            return
        if self._raw is None:
            self._raw, self._base, self._next = {}, len(self.uniques), len(self.uniques)
        self._kind = kind
        first = values[0]
        if values[-1] == first and values[len(values) // 2] == first and values.count(first) == len(values):
            # one value in every record (a dataset's name, a model type): one look-up, not one per record
            ids = np.full(len(values), self._raw.setdefault(next(iter(keyed)), self._next), np.int32)
        else:
            ids = np.fromiter(map(self._raw.setdefault, keyed, itertools.count(self._next)), np.int32, len(values))
        self._next += len(values)
        self._rows.frombytes(rows.astype(np.int32).tobytes())
        self._vals.frombytes(ids.tobytes())

    def extend_coded(self, rows: np.ndarray, codes: np.ndarray, distinct: Sequence[Any], n_rows: int = 0,
                     span: int = 0) -> None:
        """:meth:`extend` for values given as codes into their distinct values (pyarrow's dictionary encoding).

        The distinct values take their provisional ids in their order (the
        order of their first rows), so the column ends as :meth:`extend` leaves it.
        ``n_rows``: the rows the index will have when these records are in;
        a column that most of the ``span`` rows read at once have keeps an id
        per row (of ``n_rows``) instead of rows and values.
        """
        if self._arrow_values:
            self._settle()
        kind, keyed = _keyed_by_kind(distinct)
        if kind is not None and self._kind is not _GENERAL and self._raw is None and len(self.uniques) > 1:
            self._raw_from_uniques()
        if kind is not None:
            kind = _shared_kind(self._kind, kind)
        if kind is None:
            self.extend(rows, _gather(distinct, codes.tolist()))
            return
        if self._raw is None:
            self._raw, self._base, self._next = {}, len(self.uniques), len(self.uniques)
        self._kind = kind
        ids = np.fromiter(map(self._raw.setdefault, keyed, itertools.count(self._next)), np.int32, len(distinct))
        self._next += len(distinct)
        self._put(rows, ids[codes], n_rows, span)

    def extend_arrow(self, rows: np.ndarray, codes: np.ndarray, distinct: Any, n_rows: int = 0,
                     span: int = 0) -> None:
        """:meth:`extend_coded` with the distinct values as an Arrow array (strings, integers, booleans or
        floats), kept so: the values of every slice are told apart by Arrow when the records are in
        (:meth:`_settle`), which merges exactly what a dict of them merges (one type of value), instead of
        one dict look-up per value here (a near-unique column: a look-up per record)."""
        if self._raw is not None or len(self.uniques) > 1 or self._rows or (
                self._arrow_values and self._arrow_values[0].type != distinct.type):
            self.extend_coded(rows, codes, distinct.to_pylist(), n_rows, span)
            return
        if not self._arrow_values:
            self._base = self._next = len(self.uniques)
        self._arrow_values.append(distinct)
        ids = (codes + self._next).astype(np.int32)
        self._next += len(distinct)
        self._put(rows, ids, n_rows, span)

    def _put(self, rows: np.ndarray, ids: np.ndarray, n_rows: int, span: int) -> None:
        """Keep the provisional ids of these rows (by row, for a column most rows have)."""
        if self._by_row is None and not self._rows and rows.size * 2 > span and n_rows > self.codes.size:
            self._by_row = np.zeros(n_rows, np.uint8)
        if self._by_row is not None and rows.size and rows[-1] < self._by_row.size:
            if self._next > np.iinfo(self._by_row.dtype).max:  # (a byte per row while the ids fit in one)
                self._by_row = self._by_row.astype(np.uint16 if self._next <= 1 << 16 else np.int32)
            self._by_row[rows] = ids
        else:
            self._rows.frombytes(rows.astype(np.int32).tobytes())
            self._vals.frombytes(ids.astype(np.int32).tobytes())

    def in_first_row_order(self) -> None:
        """Number the distinct values in the order of the rows where they first occur (as one pass in row order
        leaves them), after rows were added out of order."""
        first = np.full(len(self.uniques), self.codes.size, np.int64)
        np.minimum.at(first, self.codes, np.arange(self.codes.size))
        order = np.argsort(first[1:], kind="stable") + 1
        order = order[first[order] < self.codes.size]
        if np.array_equal(order, np.arange(1, len(self.uniques))):
            return
        renumber = np.zeros(len(self.uniques), np.int32)
        renumber[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        self.uniques = [None, *(self.uniques[c] for c in order.tolist())]
        self.codes = _narrowest(renumber[self.codes], len(self.uniques))

    def _raw_from_uniques(self) -> None:
        """Key the values a finished column already has by themselves, where one kind allows it."""
        kind, keyed = _keyed_by_kind(self.uniques[1:])
        if kind is None:
            self._kind = _GENERAL
            return
        self._kind = kind
        self._raw = dict(zip(keyed, range(1, len(self.uniques)), strict=True))
        self._base = self._next = len(self.uniques)
        self._keys = None

    def _settle(self, ids: IdStrings | None = None) -> None:
        """Turn the provisional ids of :meth:`extend` into codes (new values appended to ``uniques``;
        ``ids``: see :func:`~isicarchive.arrowindex.distinct_in_order`)."""
        raw = self._raw
        base = self._base
        if self._arrow_values:
            from .arrowindex import distinct_in_order

            numbers, distinct = distinct_in_order(self._arrow_values, ids)
            self._arrow_values = []
            lookup = np.arange(self._next, dtype=np.int32)
            lookup[base:] = numbers + base
            self.uniques.extend(distinct)
        elif raw is None:
            return
        else:
            count = len(raw) - (base - 1)
            lookup = np.arange(self._next, dtype=np.int32)
            lookup[np.fromiter(itertools.islice(raw.values(), base - 1, None), np.int64, count)] = \
                np.arange(base, base + count, dtype=np.int32)
            added = itertools.islice(raw, base - 1, None)
            self.uniques.extend(map(list, added) if self._kind is list else added)
        if self._vals:
            self._vals = array("i", lookup[np.frombuffer(self._vals, dtype=np.int32)].tobytes())
        if self._by_row is not None:
            np.take(lookup.astype(self._by_row.dtype), self._by_row, out=self._by_row)  # (0 stays 0)
        self._raw, self._kind, self._keys = None, None, None
        self._base = self._next = len(self.uniques)

    def finish(self, n_rows: int, ids: IdStrings | None = None) -> None:
        """Move appended rows into ``codes`` (length ``n_rows``; missing = None; ``ids``: as
        :meth:`_settle` takes them)."""
        self._settle(ids)
        self._kind = None
        by_row, self._by_row = self._by_row, None
        if by_row is not None and by_row.size == n_rows and not self.codes.size:
            codes = by_row  # (no copy)
        else:
            codes = np.zeros(n_rows, np.int32)
            codes[: self.codes.size] = self.codes
            if by_row is not None:
                have = np.flatnonzero(by_row)
                codes[have] = by_row[have]
        if self._rows:
            codes[np.frombuffer(self._rows, dtype=np.int32)] = np.frombuffer(self._vals, dtype=np.int32)
        self.codes = _narrowest(codes, len(self.uniques))
        self._rows = array("i")
        self._vals = array("i")
        self._keys = None
        self._eq = None
        self._numeric = None
        self._strings = None
        self._sorted_strings = None
        self._arrow_strings = None
        self._dense = None
        self._none = None
        self._present = None

    def present(self) -> np.ndarray:
        """Where the key exists (whatever its value, None included)."""
        if self._present is None:
            self._present = self.codes != 0
        return self._present

    # per-record answers where a column of values beats a look-up of per-distinct-value answers
    def rows(self, op: str, test: Any) -> np.ndarray | None:
        """The answer for every record at once, or None where :meth:`truth` must do.

        Numbers compare against a float column in which every value that is
        not a number is NaN: NaN fails ``== < <= > >=`` and passes ``!=``,
        exactly as Python's comparisons of None, strings or lists with a
        number fail (or raise, which counts as failing) and ``!=`` holds.
        """
        if op in ("is None", "not is None") or (op in ("is", "not is") and test is None):
            if self._none is None:
                self._none = self.truth("is None", None)[self.codes]
            return self._none if op in ("is None", "is") else ~self._none
        if op in _DENSE_OPS and type(test) in (int, float, bool) and test == test and abs(test) < _EXACT_FLOAT:
            if self._dense is None:
                numeric = self._numeric_values()
                if numeric is None:
                    return None
                lookup = np.full(len(self.uniques), np.nan)
                lookup[numeric[0]] = numeric[1]
                self._dense = lookup[self.codes]
            return getattr(np, _DENSE_OPS[op])(self._dense, test)
        return None

    # per-distinct-value answers
    def truth(self, op: str, test: Any) -> np.ndarray:
        n = len(self.uniques)
        if op in ("is None", "not is None") or (op in ("is", "not is") and test is None):
            none = np.zeros(n, bool)
            none[self._equal_codes(None)] = True  # the missing key and every explicit None
            return none if op in ("is None", "is") else ~none
        if op in ("==", "!=") and type(test) in _SCALARS and not (type(test) is float and test != test):
            equal = np.zeros(n, bool)
            equal[self._equal_codes(test)] = True
            return equal if op == "==" else ~equal
        if op in ("<", "<=", ">", ">=") and type(test) in (int, float) and abs(test) < _EXACT_FLOAT:
            numeric = self._numeric_values()
            if numeric is not None:
                codes, values = numeric
                out = np.zeros(n, bool)
                out[codes] = getattr(np, _COMPARE[op])(values, test)
                return out
        if op in ("<", "<=", ">", ">=") and type(test) is str:
            return self._string_range(op, test)
        if op in ("match", "~", "not match", "!~"):
            want_match = op in ("match", "~")
            fast = self._literal_regex(test, want_match) if isinstance(test, str) else None
            if fast is None:
                fast = self._re2_regex(test, want_match)
            if fast is not None:
                return fast
            regex = re.compile(test)
            return np.fromiter(((regex.search(v) is not None) == want_match if isinstance(v, str) else False
                                for v in self.uniques), bool, n)
        return np.fromiter((evaluate(v, op, test) for v in self.uniques), bool, n)

    def _string_range(self, op: str, test: str) -> np.ndarray:
        """``value < test`` … for a string test: only string values compare (the rest raise: False)."""
        codes, values = self._sorted()
        # Python orders str by code point, as sorted() did: the answer is a slice of the sorted values
        cut = {"<": bisect.bisect_left, "<=": bisect.bisect_right, ">": bisect.bisect_right,
               ">=": bisect.bisect_left}[op](values, test)
        out = np.zeros(len(self.uniques), bool)
        out[codes[:cut] if op in ("<", "<=") else codes[cut:]] = True
        return out

    def _sorted(self) -> tuple[np.ndarray, list[str]]:
        """The codes and values of the string values, sorted (Python's order of str: by code point)."""
        if self._sorted_strings is None:
            pairs = sorted((v, c) for c, v in enumerate(self.uniques) if type(v) is str)
            self._sorted_strings = (np.asarray([c for _, c in pairs], np.int64), [v for v, _ in pairs])
        return self._sorted_strings

    def _literal_regex(self, pattern: str, want_match: bool) -> np.ndarray | None:
        """Patterns that are plain text, ``^text`` or ``^(a|b)``, answered by numpy's string functions.

        ``re.search`` of such a pattern is exactly "contains" or "starts with";
        anything else (or numpy < 2) returns None for the general path.
        """
        prefixes = _LITERAL_PREFIXES.fullmatch(pattern)
        alternatives = (prefixes.group(1) or prefixes.group(2)).split("|") if prefixes else []
        if alternatives and all(ord(prefix[-1]) < 0x10FFFF for prefix in alternatives):
            # the strings that start with a prefix are one run of the sorted strings
            out = np.zeros(len(self.uniques), bool)
            sorted_codes, sorted_values = self._sorted()
            for prefix in alternatives:
                start = bisect.bisect_left(sorted_values, prefix)
                stop = bisect.bisect_left(sorted_values, prefix[:-1] + chr(ord(prefix[-1]) + 1), lo=start)
                out[sorted_codes[start:stop]] = True
            if not want_match:
                strings = np.zeros(len(self.uniques), bool)
                strings[sorted_codes] = True
                out = strings & ~out
            return out
        vectorised = getattr(np, "strings", None)  # numpy's string functions (numpy.strings from 2.0)
        if vectorised is None or not _LITERAL.fullmatch(pattern):
            return None
        if self._strings is None:
            string_codes = [c for c, v in enumerate(self.uniques) if type(v) is str]
            self._strings = (np.asarray(string_codes, np.int64),
                             np.asarray([self.uniques[c] for c in string_codes], dtype=np.dtypes.StringDType()))
        codes, values = self._strings
        hit = vectorised.find(values, pattern) >= 0
        out = np.zeros(len(self.uniques), bool)
        out[codes] = hit if want_match else ~hit
        return out

    def _re2_regex(self, pattern: str | re.Pattern, want_match: bool) -> np.ndarray | None:
        """Any pattern whose meaning RE2 shares (see :mod:`isicarchive.regex`), over the string values at once."""
        if self._arrow_strings is None:
            if len(self.uniques) < _RE2_MIN_VALUES:
                return None
            string_codes = [c for c, v in enumerate(self.uniques) if type(v) is str]
            self._arrow_strings = (np.asarray(string_codes, np.int64),
                                   string_values([self.uniques[c] for c in string_codes]))
        codes, values = self._arrow_strings
        found = values.search(pattern) if values is not None else None
        if found is None:
            return None
        out = np.zeros(len(self.uniques), bool)
        out[codes] = found if want_match else ~found
        return out

    def _equal_codes(self, test: Any) -> list[int]:
        if self._eq is None:
            # Python's == on builtin scalars merges exactly what a dict merges (1 == 1.0 == True)
            eq: dict[Any, list[int]] = {}
            for code, value in enumerate(self.uniques):
                if type(value) in _SCALARS and not (type(value) is float and value != value):
                    eq.setdefault(value, []).append(code)
            self._eq = eq
        return self._eq.get(test, [])

    def _numeric_values(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._numeric is None:
            codes = [c for c, v in enumerate(self.uniques) if type(v) in (bool, int, float)]
            values = [float(self.uniques[c]) for c in codes]
            if any(abs(v) >= _EXACT_FLOAT for v in values if v == v):
                return None
            self._numeric = (np.asarray(codes, np.int64), np.asarray(values, np.float64))
        return self._numeric


class _Missing:
    """The type of :data:`_MISSING`."""


#: what a record without a key holds there while a level is read
_MISSING = _Missing()


def _gather(items: Sequence[Any], positions: list[int]) -> Sequence[Any]:
    """``[items[p] for p in positions]``, in C."""
    if len(positions) == 1:
        return [items[positions[0]]]
    return operator.itemgetter(*positions)(items)  # type: ignore[no-any-return]


def _by_shape(dicts: Sequence[dict], rows: np.ndarray) -> Iterator[tuple[Any, Sequence[Any], np.ndarray]] | None:
    """Each key of the dicts with its values and their rows, read a group of dicts of one shape at a time.

    Records come in a few shapes (the same keys): for the dicts of one
    length, one ``itemgetter`` call per dict takes the values of the first
    one's keys (a dict of that length that has all of them has no other) and
    ``zip`` turns them into columns, all in C, instead of a pass over every
    dict per key.  A group where some dict lacks one of those keys is read a
    key at a time (:func:`_by_key`).  Values come in the order of the rows.
    None where the dicts have too many lengths for that to pay.
    """
    if set(map(type, dicts)) != {dict}:  # a subclass (defaultdict) may answer for a key it lacks
        return None
    lengths = np.fromiter(map(len, dicts), np.int64, len(dicts))
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist() if len(dicts) else []
    if len(starts) > 16 and len(starts) * 8 > len(dicts):
        return None
    parts: dict[Any, list[tuple[np.ndarray, Sequence[Any]]]] = {}
    for start, stop in zip(starts, [*starts[1:], len(dicts)], strict=True):
        positions = order[start:stop]
        group = _gather(dicts, positions.tolist())
        here = rows[positions]
        keys = tuple(group[0])
        if not keys:
            continue
        try:
            pairs = _group_columns(group, here, keys)
        except KeyError:  # dicts of this length with other keys: grouped by their keys
            pairs = _exact_shapes(group, here)
        for key, where, values in pairs:
            parts.setdefault(key, []).append((where, values))

    def columns_of() -> Iterator[tuple[Any, Sequence[Any], np.ndarray]]:
        for key, got in parts.items():
            if len(got) == 1:
                yield key, got[0][1], got[0][0]
                continue
            here = np.concatenate([r for r, _ in got])
            values = list(itertools.chain.from_iterable(v for _, v in got))
            by_row = np.argsort(here, kind="stable")
            yield key, _gather(values, by_row.tolist()), here[by_row]

    return columns_of()


def _group_columns(group: Sequence[dict], here: np.ndarray,
                   keys: tuple) -> list[tuple[Any, np.ndarray, Sequence[Any]]]:
    """The values of ``keys`` in dicts that all have them, a column per key (KeyError where one lacks one)."""
    columns: Iterable[Sequence[Any]]
    if len(keys) == 1:
        columns = [list(map(operator.itemgetter(keys[0]), group))]
    else:
        columns = zip(*map(operator.itemgetter(*keys), group), strict=True)
    return [(key, here, values) for key, values in zip(keys, columns, strict=False)]


def _exact_shapes(group: Sequence[dict], here: np.ndarray) -> list[tuple[Any, np.ndarray, Sequence[Any]]]:
    """:func:`_group_columns` for each set of dicts with the same keys in the same order (few of them), else
    :func:`_by_key`."""
    shapes: dict[tuple, int] = {}
    first = np.fromiter(map(shapes.setdefault, map(tuple, group), itertools.count()), np.int64, len(group))
    if len(shapes) > 16 and len(shapes) * 8 > len(group):
        return [(key, where, values) for key, values, where in _by_key(group, here)]
    order = np.argsort(first, kind="stable")
    ordered = first[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist()
    out: list[tuple[Any, np.ndarray, Sequence[Any]]] = []
    # the groups come in the order of their shapes' first dicts, as the shapes do in their dict
    for shape, start, stop in zip(shapes, starts, [*starts[1:], len(group)], strict=True):
        if shape:
            positions = order[start:stop]
            out += _group_columns(_gather(group, positions.tolist()), here[positions], shape)
    return out


def _by_key(dicts: Sequence[dict], rows: np.ndarray) -> Iterator[tuple[Any, Sequence[Any], np.ndarray]]:
    """Each key of the dicts with its values and their rows, a pass over all dicts per key (any shapes)."""
    for key in dict.fromkeys(itertools.chain.from_iterable(dicts)):
        values = [d.get(key, _MISSING) for d in dicts]  # a comprehension: faster than map(methodcaller)
        if _Missing in set(map(type, values)):
            present = np.flatnonzero(np.fromiter(map(operator.is_not, values, itertools.repeat(_MISSING)),
                                                 bool, len(values)))
            yield key, [values[i] for i in present.tolist()], rows[present]
        else:
            yield key, values, rows


class _Held(dict):
    """Records as the index holds them (JSON bytes or dicts), handed to a rebuilt index as they are."""

    def held(self) -> Any:
        return self.items()


class _Positions(dict):
    """Id -> row over an index's (append-only) list of ids, filled from it when first asked, and with the
    rows appended since when asked again: an index that is only selected from never makes it (400,000 ids:
    ~0.2 s); the selections it makes share it, as a view."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__()
        self._ids = ids
        self._filled = 0

    def _fill(self) -> None:
        filled, ids = self._filled, self._ids
        if filled < len(ids):
            self.update(zip(ids[filled:], itertools.count(filled)))
            self._filled = len(ids)

    def get(self, key: Any, default: Any = None) -> Any:
        self._fill()
        return super().get(key, default)

    def __getitem__(self, key: Any) -> int:
        self._fill()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Any:
        self._fill()
        return super().__iter__()

    def keys(self) -> Any:
        self._fill()
        return super().keys()


def _rows_meeting(truth: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The rows whose value meets a criterion, from its truth over the distinct values.

    A few matching values (an id, a name) are found by comparing the codes with each: a compare
    over every row is several times cheaper than a gather of the truth through them.
    """
    matching = np.flatnonzero(truth)
    if len(matching) <= 4:
        rows = codes == matching[0]
        for code in matching[1:]:
            rows |= codes == code
        return rows
    return truth[codes]


class _PathRead:
    """What a deferred index read of one path alone: its column (None: no record has a value there), whether
    some record holds a dict there, and whether no level above it holds anything but dicts."""

    __slots__ = ("column", "holds_dicts", "plain")

    def __init__(self, column: _Column | None, holds_dicts: bool, plain: bool) -> None:
        self.column = column
        self.holds_dicts = holds_dicts
        self.plain = plain


class ImageIndex:
    """A columnar index over image records (id → record), built once (over many records kept as JSON text,
    column by column as selections name them: see :meth:`build`).

    Parameters
    ----------
    records : mapping
        Image id → record (e.g. ``api.image_cache``).
    """

    def __init__(self, records: Mapping[str, dict]) -> None:
        self.ids: list[str] = []
        #: the records by row: a record store's JSON bytes (decoded when read), other mappings' dicts
        self._held: list[Held] = []
        self.records: Sequence[dict] = RecordRows(self._held)
        self._position: dict[str, int] = _Positions(self.ids)
        self._columns: dict[str, _Column] = {}
        self._dict_paths: set[str] = set()
        #: rows where a path holds a dict (key membership: ``['meta.clinical', 'ni', 'diagnosis']``)
        self._dict_rows: dict[str, array] = {}
        self._dict_masks: dict[str, np.ndarray] = {}
        self._dotted_root_keys: set[str] = set()
        #: the columns are not built yet: selections read the paths they name alone (see :meth:`build`)
        self._deferred = False
        #: what a deferred index read of each path: its column, whether it holds dicts, whether plain
        self._lazy: dict[str, _PathRead] = {}
        self._lazy_reads = 0
        self.add(records)

    def __len__(self) -> int:
        return len(self.ids)

    #: records decoded and read at once: a slice of a store is ~15 MB of dicts (and memory reused by the next)
    SLICE = 5000
    #: read the records' JSON text into columns with pyarrow where it is installed (see :mod:`.arrowindex`)
    COLUMNAR = True
    #: records read by pyarrow at once (~10 MB of text; the whole build keeps three such slices in hand: two
    #: being parsed, one taken in)
    ARROW_SLICE = 10000
    #: fewer records than this are read the pure way: importing pyarrow (and the pandas its conversions
    #: import where installed) costs more than it saves there
    COLUMNAR_FROM = 20000
    #: a columnar index reads only the paths its selections name until they have read this many times; then
    #: (or when something needs every column: key membership, an empty selection's diagnosis) it builds
    #: every column (:meth:`build`); 0: every column at once, when the index is made.  (A read of one path
    #: costs about half a whole build: after one, the next new path builds every column, so that no session
    #: pays more than one read and one whole build.)
    DEFERRED_READS = 1
    #: records whose types (read by pyarrow) give the type of each path a deferred index reads alone
    SAMPLE = 2000

    def add(self, records: Mapping[str, dict]) -> None:
        """Index more records (new ids are appended; known ids are replaced)."""
        # (a store's own id -> held mapping, read here and not kept: no copy of 400,000 entries)
        held: Mapping[str, Held] = records._held if isinstance(records, RecordStore) else records
        if self._position and not self._position.keys().isdisjoint(held):
            # rebuild on fresh lists, so that selections made before keep their view
            kept = {k: h for k, h in zip(self.ids, self._held, strict=True) if k not in held}
            self.__init__(_Held({**kept, **held}))  # type: ignore[misc]
            return
        self._add_held(held)

    def _add_held(self, held: Mapping[str, Held]) -> None:
        with collector_paused():  # the records decoded slice by slice are fresh, acyclic dicts: see _gc.py
            self._read_held(held)

    def _read_held(self, held: Mapping[str, Held]) -> None:
        start = len(self.ids)
        self.ids.extend(held)
        self._held.extend(held.values())
        if self._deferred:  # (what was read alone covers fewer rows)
            self._lazy.clear()
            return
        columnar = self.COLUMNAR and len(self.ids) - start >= self.COLUMNAR_FROM and arrowindex.arrow_available()
        if columnar and not start and self.DEFERRED_READS and set(map(type, self._held)) == {bytes}:
            self._deferred = True
            return
        self._read_columns(start, columnar)

    def build(self) -> None:
        """Build every column now.

        An index over many records kept as JSON text (a record store of
        :attr:`COLUMNAR_FROM` records or more, with pyarrow installed) starts
        with no column: each selection reads the paths it names alone (about
        half the work of reading every value), up to :attr:`DEFERRED_READS`
        times; after that, or when something needs every path (key
        membership ``ni``, the diagnosis of an empty selection), every column
        is built at once.  The answers are the same either way.  (A column of
        many distinct values is finished, its values made Python objects,
        when a selection first names it.)
        """
        with _DEFERRED_WORK:
            if not self._deferred:
                return
            # (the paths read alone go first: their memory is not held through the build; a selection in
            # another thread that asks for one now waits here for every column)
            self._lazy.clear()
            columnar = self.COLUMNAR and len(self.ids) >= self.COLUMNAR_FROM and arrowindex.arrow_available()
            with collector_paused():
                self._read_columns(0, columnar)
            self._deferred = False

    def _read_columns(self, start: int, columnar: bool) -> None:
        """Read the columns of the records from row ``start`` on."""
        from concurrent.futures import ThreadPoolExecutor

        step = self.ARROW_SLICE if columnar else self.SLICE
        starts = iter(range(start, len(self.ids), step))
        reordered: set[str] = set()
        with ThreadPoolExecutor(2) if columnar else contextlib.nullcontext() as pool:
            # two slices in flight: pyarrow parses them (on every core, without the GIL) while this thread
            # takes in the one before (in Python, where its numpy arrays stay in this thread's heap)
            ahead = [(first, pool.submit(parse_slice, self._held[first:first + step]) if pool is not None else None)
                     for first in itertools.islice(starts, 2 if pool is not None else 1)]
            while ahead:
                first, future = ahead.pop(0)
                stop = min(first + step, len(self.ids))
                parsed = future.result() if future is not None else None
                following = next(starts, None)
                if following is not None:
                    ahead.append((following, pool.submit(parse_slice, self._held[following:following + step])
                                  if pool is not None else None))
                got = read_slice(self._held[first:stop], parsed=parsed) if parsed is not None else None
                del parsed
                if got is None:
                    for part in range(first, stop, self.SLICE):
                        self._read_rows(np.arange(part, min(part + self.SLICE, stop), dtype=np.int64))
                    continue
                self._take_columns(got, first)
                pure = got.pure
                del got
                arrowindex.release_memory()  # the slice's Arrow memory, not kept for the next one (~100 MB)
                if pure.size:
                    grown = {path: len(column._rows) for path, column in self._columns.items()}
                    for part in range(0, pure.size, self.SLICE):
                        self._read_rows(pure[part:part + self.SLICE] + first)
                    if pure.size < stop - first:  # rows read after others of their slice: out of order
                        reordered.update(path for path, column in self._columns.items()
                                         if len(column._rows) != grown.get(path))
        if columnar:
            arrowindex.release_memory()  # (what the last slices in flight left in Arrow's pool)
        ids = arrowindex.IdStrings(self.ids) if columnar else None
        for column in self._columns.values():
            column.finish_later(len(self.ids), ids)
        del ids
        if columnar:
            arrowindex.release_memory()
        for path in reordered:
            self._columns[path].in_first_row_order()
        self._dict_masks.clear()

    def _read_paths(self, paths: Iterable[str]) -> None:
        """Read these paths alone, for a deferred index (see :meth:`build`), or build every column where
        they cannot be read so (or were read so :attr:`DEFERRED_READS` times)."""
        paths = list(paths)
        if self._deferred and any(path not in self._lazy for path in paths):
            with _DEFERRED_WORK, collector_paused():  # (records decoded for their nulls: fresh acyclic dicts)
                self._read_paths_now(paths)

    def _read_paths_now(self, paths: list[str]) -> None:
        wanted = [path for path in dict.fromkeys(paths) if path not in self._lazy]
        if not self._deferred or not wanted:
            return
        names = [tuple(path.split(".")) for path in wanted]
        schema = None
        if self._lazy_reads < self.DEFERRED_READS and all(map(arrowindex.lazy_name, itertools.chain(*names))):
            schema = arrowindex.path_schema(self._held[:self.SAMPLE], names)  # type: ignore[arg-type]
        read = self._read_alone(schema, names) if schema is not None else None
        if read is None:
            self.build()
            return
        self._lazy_reads += 1
        ids = IdStrings(self.ids)
        for column in read._columns.values():
            column.finish(len(self.ids), ids)
        del ids
        arrowindex.release_memory()
        for path, parts in zip(wanted, names, strict=True):
            self._lazy[path] = _PathRead(read._columns.get(path), path in read._dict_paths,
                                         not any(".".join(parts[:i]) in read._columns for i in range(1, len(parts))))

    def _read_alone(self, schema: Any, names: list[tuple[str, ...]]) -> ImageIndex | None:
        """An index of these paths (and the levels above them) alone, read with ``schema``; None where Arrow
        cannot read them so."""
        from concurrent.futures import ThreadPoolExecutor

        read = ImageIndex({})
        read.ids = self.ids  # (its columns' length; read-only here)
        step = self.ARROW_SLICE
        starts = iter(range(0, len(self.ids), step))
        with ThreadPoolExecutor(2) as pool:
            # two slices in flight: one parsed by pyarrow (on every core, without the GIL) while the other's
            # few columns are finished in Python; this thread takes them in, in order (a few columns: little
            # memory)
            ahead = [(first, pool.submit(arrowindex.read_paths, self._held[first:first + step], schema, names))
                     for first in itertools.islice(starts, 2)]
            while ahead:
                first, future = ahead.pop(0)
                got = future.result()
                if got is None:
                    for _, other in ahead:
                        other.cancel()
                    return None
                following = next(starts, None)
                if following is not None:
                    ahead.append((following, pool.submit(arrowindex.read_paths,
                                                          self._held[following:following + step], schema, names)))
                read._take_columns(got, first)
        return read

    def _read_rows(self, rows: np.ndarray) -> None:
        """Index these rows' records, decoded (the pure way)."""
        records = decode_many([self._held[row] for row in rows.tolist()])
        if set(map(type, records)) == {dict}:
            self._read_level(records, rows, "")
        else:
            picked = [i for i, record in enumerate(records) if isinstance(record, dict)]
            self._read_level([records[i] for i in picked], rows[picked], "")

    def _take_columns(self, got: ArrowSlice, first: int) -> None:
        """Add the columns pyarrow read from a slice of records (rows ``first`` on)."""
        if got.dotted_root_keys:
            self._dotted_root_keys |= got.dotted_root_keys
        for names, rows in got.dict_rows.items():
            path = ".".join(names)
            self._dict_paths.add(path)
            self._dict_rows.setdefault(path, array("i")).frombytes((rows + first).astype(np.int32).tobytes())
        for names, leaf in got.leaves.items():
            path = ".".join(names)
            column = self._columns.get(path)
            if column is None:
                column = self._columns[path] = _Column()
            if isinstance(leaf.distinct, list):
                column.extend_coded(leaf.rows + first, leaf.codes, leaf.distinct, len(self.ids), got.size)
            else:
                column.extend_arrow(leaf.rows + first, leaf.codes, leaf.distinct, len(self.ids), got.size)

    def _read_level(self, dicts: Sequence[dict], rows: np.ndarray, prefix: str) -> None:
        """Index one level of the records, a key at a time over all of them (the per-value work in C).

        ``dicts`` are the dicts found at path ``prefix`` and ``rows`` their
        record numbers.  Each key's values are gathered from every dict (see
        :func:`_by_shape`), the dicts below it are read the same way, and the
        other values go into the key's column in one :meth:`_Column.extend`.
        """
        for key, values, here in _by_shape(dicts, rows) or _by_key(dicts, rows):
            if type(key) is not str:
                continue
            if "." in key:  # no dotted path names it (a top-level one makes look-ups of its prefix special)
                if not prefix:
                    self._dotted_root_keys.add(key)
                continue
            path = prefix + key
            kinds: set[type] | None = set(map(type, values))
            assert kinds is not None
            if any(issubclass(kind, dict) for kind in kinds):
                if all(issubclass(kind, dict) for kind in kinds):
                    inner, inner_rows, values = values, here, []
                else:
                    is_dict = np.fromiter(map(isinstance, values, itertools.repeat(dict)), bool, len(values))
                    picked, others = np.flatnonzero(is_dict), np.flatnonzero(~is_dict)
                    inner, inner_rows = [values[i] for i in picked.tolist()], here[picked]
                    values, here = [values[i] for i in others.tolist()], here[others]
                    kinds = None
                self._dict_paths.add(path)
                self._dict_rows.setdefault(path, array("i")).frombytes(inner_rows.astype(np.int32).tobytes())
                self._read_level(inner, inner_rows, path + ".")
            if values:
                column = self._columns.get(path)
                if column is None:
                    column = self._columns[path] = _Column()
                column.extend(here, values, kinds)

    def values_of(self, path: str) -> list[Any]:
        """The distinct values records have at a plain path (empty where no record has it)."""
        self._read_paths([path])
        column = self._column(path)
        return [v for v in column.uniques[1:] if v is not None] if column is not None else []

    def has_path(self, path: str) -> bool:
        """Whether some record has the path (a value, or a dict, there)."""
        self._read_paths([path])
        return self._column(path) is not None or self._is_dict_path(path)

    def paths(self) -> set[str]:
        """Every path some record has (this builds every column: see :meth:`build`)."""
        self.build()
        return set(self._columns) | self._dict_paths

    # what a deferred index read alone answers the questions below (any other path: every column is built)
    def _column(self, path: str) -> _Column | None:
        if self._deferred:
            read = self._lazy.get(path)
            if read is not None:
                return read.column
            self.build()
        return self._columns.get(path)

    def _is_dict_path(self, path: str) -> bool:
        if self._deferred:
            read = self._lazy.get(path)
            if read is not None:
                return read.holds_dicts
            self.build()
        return path in self._dict_paths

    def _exact_by_column(self, path: str) -> bool:
        """Whether the column (or its absence) gives the look-up's exact answer."""
        return self._plain_path(path) and not self._is_dict_path(path)

    def _plain_path(self, path: str) -> bool:
        """A path whose look-up is plain dict access in every record."""
        parts = path.split(".")
        if any(_SPECIAL_SEGMENT.search(part) for part in parts):
            return False
        if self._deferred:
            read = self._lazy.get(path)
            if read is not None:  # (a read alone refuses a path that is a record's own key)
                return read.plain
            self.build()
        if path in self._dotted_root_keys:
            return False
        # a level that holds a non-dict value in some record would be read with getattr
        return not any(".".join(parts[:i]) in self._columns for i in range(1, len(parts)))

    def _dict_mask(self, path: str) -> np.ndarray:
        found = self._dict_masks.get(path)
        if found is None:
            found = np.zeros(len(self.ids), bool)
            rows = self._dict_rows.get(path)
            if rows:
                found[np.frombuffer(rows, dtype=np.int32)] = True
            self._dict_masks[path] = found
        return found

    def _key_membership(self, path: str, op: str, test: str) -> np.ndarray:
        """``test in value`` where ``value`` is a dict in some records: a key look-up, vectorised.

        In the records where the path holds a dict the answer is whether the
        key exists (whatever its value, None included); where it holds
        something else (a string: substring) that value's own answer; where it
        is missing, ``test in None`` raises, so False for ``ni`` and ``not ni``.
        """
        is_dict = self._dict_mask(path)
        key_path = f"{path}.{test}"
        column = self._columns.get(key_path)
        has_key = column.present() if column is not None else np.zeros(len(self.ids), bool)
        if key_path in self._dict_paths:
            has_key = has_key | self._dict_mask(key_path)
        out = is_dict & (has_key if op == "ni" else ~has_key)
        other = self._columns.get(path)  # the records where the path holds no dict
        if other is not None:
            out |= other.truth(op, test)[other.codes] & ~is_dict
        return out

    def mask(self, criteria: Iterable[tuple[str, str, Any]], within: Iterable[str] | None = None) -> np.ndarray:
        """Boolean mask over :attr:`ids` of the records meeting every criterion."""
        criteria = list(criteria)
        if self._deferred:
            self._read_criteria_paths(criteria)
        mask = np.ones(len(self.ids), bool)
        if within is not None:
            mask[:] = False
            rows = [self._position[k] for k in within if k in self._position]
            mask[np.asarray(rows, dtype=np.int64)] = True
        for path, op, test in criteria:
            if not mask.any():
                break
            if op in ("is", "not is") and not (test is None or test is True or test is False):
                mask &= self._per_record(path, op, test, mask)
            elif (op in ("ni", "not ni") and type(test) is str and "." not in test and test
                  and self._is_dict_path(path) and self._plain_path(path)):
                mask &= self._key_membership(path, op, test)
            elif self._exact_by_column(path):
                column = self._column(path)
                if column is None:
                    mask &= evaluate(None, op, test)
                else:
                    whole = column.rows(op, test)
                    if whole is not None:
                        mask &= whole
                    else:
                        truth = column.truth(op, test)  # over the column's distinct values
                        if not truth.any():  # no value meets it: no row does (skips a gather over every row)
                            mask[:] = False
                        elif not truth.all():  # (every value meets it: every row does)
                            mask &= _rows_meeting(truth, column.codes)
            else:
                by_parent = self._by_parent(path, op, test)
                mask &= by_parent if by_parent is not None else self._per_record(path, op, test, mask)
        return mask

    def _by_parent(self, path: str, op: str, test: Any) -> np.ndarray | None:
        """A criterion on a path that no column answers (``notes.tags.0``, ``notes.tags.#``,
        ``meta.clinical.sex.upper``) answered over the distinct values of its parent's column: where every
        record reaches the parent by plain dict access and holds no dict there, its value at the path is
        what the last part makes of the parent's value (as :func:`get_path` walks), the same for values the
        column holds as one; None where that is not so (then record by record)."""
        parent, _, last = path.rpartition(".")
        if (not parent or self._deferred or path in self._dotted_root_keys or not self._plain_path(parent)
                or self._is_dict_path(parent)):
            return None
        column = self._columns.get(parent)
        if column is None:  # no record has it: the walk ends in None everywhere
            return np.full(len(self.ids), evaluate(None, op, test))
        truth = np.fromiter((evaluate(None if value is None else _segment(value, last), op, test)
                             for value in column.uniques), bool, len(column.uniques))
        truth[0] = evaluate(None, op, test)  # (code 0: the key is missing)
        return truth[column.codes]

    def _read_criteria_paths(self, criteria: list[tuple[str, str, Any]]) -> None:
        """Read the paths whose columns answer these criteria (a deferred index), or build every column for
        key membership."""
        paths = []
        for path, op, test in criteria:
            if op in ("ni", "not ni"):
                self.build()
                return
            if op in ("is", "not is") and not (test is None or test is True or test is False):
                continue  # (answered record by record)
            if not any(_SPECIAL_SEGMENT.search(part) for part in path.split(".")):
                paths.append(path)
        self._read_paths(paths)

    def _per_record(self, path: str, op: str, test: Any, candidates: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.ids), bool)
        for row in np.flatnonzero(candidates).tolist():
            out[row] = evaluate(get_path(self.records[row], path), op, test)
        return out

    def select(self, criteria: Any, within: Iterable[str] | None = None) -> Selection:
        """A :class:`Selection` of the records meeting ``criteria``."""
        parsed = criteria if _is_parsed(criteria) else normalise_criteria(criteria)
        return Selection.of_rows(self, np.flatnonzero(self.mask(parsed, within)))


#: the default columns of :meth:`Selection.to_dataframe` on today's API: column name -> dotted path
V2_FRAME_FIELDS = {
    "patient_id": "metadata.clinical.patient_id",
    "lesion_id": "metadata.clinical.lesion_id",
    **{f"diagnosis_{n}": f"metadata.clinical.diagnosis_{n}" for n in range(1, 6)},
    "diagnosis_confirm_type": "metadata.clinical.diagnosis_confirm_type",
    "age_approx": "metadata.clinical.age_approx",
    "sex": "metadata.clinical.sex",
    "anatom_site_general": "metadata.clinical.anatom_site_general",
    "anatom_site_1": "metadata.clinical.anatom_site_1",
    "anatom_site_2": "metadata.clinical.anatom_site_2",
    "image_type": "metadata.acquisition.image_type",
    "dermoscopic_type": "metadata.acquisition.dermoscopic_type",
    "image_manipulation": "metadata.acquisition.image_manipulation",
    "pixels_x": "metadata.acquisition.pixels_x",
    "pixels_y": "metadata.acquisition.pixels_y",
    "copyright_license": "copyright_license",
    "attribution": "attribution",
}


class Splits(dict):
    """The parts of :meth:`Selection.split`: a dict name → :class:`Selection`, that also exports them.

    Attributes
    ----------
    origin : Origin or None
        The session and query the split selection came from.
    settings : dict
        ``by``, ``stratify``, ``seed`` and ``fractions`` of the split.
    """

    origin: Origin | None = None
    settings: dict[str, Any] = {}  # noqa: RUF012 (replaced per instance, never changed in place)

    def lock(self, path: str | os.PathLike[str] | None = None, *, api: Any = None,
             progress: bool | None = None) -> Lock:
        """One lock file for every part: each image with the part it is in (:mod:`isicarchive.lockfile`)."""
        from .lockfile import create_lock

        first = next(iter(self.values()), None)
        lock = create_lock({name: part.values() for name, part in self.items()}, origin=self.origin,
                           api=api if api is not None else getattr(first, "session", None),
                           split=dict(self.settings) or None, progress=progress)
        if path is not None:
            lock.save(path)
        return lock

    def audit(self, *, near_duplicates: bool = False, api: Any = None) -> AuditReport:
        """The leakage audit of the parts (:func:`isicarchive.audit`)."""
        from .leakage import audit

        return audit(self, near_duplicates=near_duplicates, api=api)

    def export(self, folder: Any, *, layout: str = "official", target: str = "diagnosis_1",
               licenses: Iterable[str] | str | None = None, commercial: bool = False, **options: Any) -> Any:
        """Write every part as a split of one training set (``train/``, ``validation/``, ``test/`` …), in
        the layout :meth:`Selection.export` names; ``commercial=True`` (or ``licenses=``) as there."""
        from .exports import export

        parts = {name: part.licensed(licenses, commercial=commercial) if licenses is not None or commercial
                 else part for name, part in self.items()}
        return export(parts, folder, layout=layout, target=target, **options)


class _Items(ItemsView):
    """Items of a selection, read straight from the index rows (no look-up per key)."""

    def __iter__(self) -> Any:
        return self._mapping._pairs()  # type: ignore[attr-defined]


class _Values(ValuesView):
    def __iter__(self) -> Any:
        return (record for _, record in self._mapping._pairs())  # type: ignore[attr-defined]


def _is_parsed(criteria: Any) -> bool:
    return isinstance(criteria, list) and all(isinstance(c, tuple) and len(c) == 3 for c in criteria)


class Selection(MutableMapping):
    """Selected image records: a mapping id → record with hand-off helpers.

    A selection made by :class:`ImageIndex` is a view of the index's rows
    (making it costs microseconds, whatever its size); it becomes a plain
    dict of its own the first time it is changed.
    """

    #: the view's row numbers, set by :meth:`of_rows` (a selection holding a dict of its own has none: and
    #: making an empty array here imported numpy for every session, in ``IsicApi()``)
    _rows: np.ndarray

    def __init__(self, items: Any = (), *, session: Any = None) -> None:
        #: the IsicApi the records came from (set by select_images, search_images and split): what
        #: training sets and exports read the images with
        self.session = session
        #: how the selection was made (the query, criteria or DOI), for locks, drift reports, citations
        self.origin: Origin | None = None
        self._data: dict[str, dict] | None = dict(items)
        # a view: the index's (append-only) id and record lists and its row numbers
        self._ids: list[str] = []
        self._records: Sequence[dict] = []
        self._position: dict[str, int] = {}
        self._member: np.ndarray | None = None

    @classmethod
    def of_rows(cls, index: ImageIndex, rows: np.ndarray) -> Selection:
        view = cls()
        view._data = None
        view._ids, view._records, view._position = index.ids, index.records, index._position
        view._rows = rows
        return view

    def _own(self) -> dict[str, dict]:
        if self._data is None:
            ids, records = self._ids, self._records
            self._data = {ids[r]: records[r] for r in self._rows.tolist()}
        return self._data

    def _contains_row(self, key: Any) -> int | None:
        row = self._position.get(key) if isinstance(key, str) else None
        if row is None:
            return None
        if self._member is None:
            self._member = np.zeros(int(self._rows.max()) + 1 if self._rows.size else 0, bool)
            self._member[self._rows] = True
        return row if row < self._member.size and self._member[row] else None

    def __getitem__(self, key: str) -> dict:
        if self._data is not None:
            return self._data[key]
        row = self._contains_row(key)
        if row is None:
            raise KeyError(key)
        return self._records[row]

    def __contains__(self, key: object) -> bool:
        if self._data is not None:
            return key in self._data
        return self._contains_row(key) is not None

    def __iter__(self) -> Any:
        if self._data is not None:
            return iter(self._data)
        ids = self._ids
        return (ids[r] for r in self._rows.tolist())

    def __len__(self) -> int:
        return len(self._data) if self._data is not None else int(self._rows.size)

    def __setitem__(self, key: str, value: dict) -> None:
        self._own()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._own()[key]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def copy(self) -> dict[str, dict]:
        return dict(self.items())

    def _pairs(self) -> Any:
        if self._data is not None:
            return iter(self._data.items())
        ids, records = self._ids, self._records
        return ((ids[r], records[r]) for r in self._rows.tolist())

    def items(self) -> _Items:
        return _Items(self)

    def values(self) -> _Values:
        return _Values(self)

    def ids(self) -> list[str]:
        return list(self.keys())

    def names(self) -> list[str]:
        return [str(r.get("name") or r.get("isic_id") or k) for k, r in self.items()]

    def records(self) -> list[dict]:
        return list(self.values())

    def group_by(self, field: str) -> dict[Any, Selection]:
        """Selections per value of ``field`` (``'lesion_id'``, ``'patient_id'``, a dotted path).

        Images without a value are left out.
        """
        from .grouping import group_ids

        return {value: self._derived((key, self[key]) for key in keys)
                for value, keys in group_ids(dict(self.items()), field).items()}

    def _derived(self, items: Any) -> Selection:
        """A new selection of some of these images, with this one's session and origin."""
        derived = Selection(items, session=self.session)
        derived.origin = self.origin
        return derived

    def split(self, fractions: Mapping[str, float], *, by: str = "patient_id", stratify: str | None = None,
              seed: int = 0, check: bool = False) -> Splits:
        """A leakage-free split: ``{'train': 0.7, 'validation': 0.15, 'test': 0.15}`` → selections.

        No value of ``by`` (a patient, a lesion) is in two parts; the classes
        of ``stratify`` (e.g. ``'diagnosis_1'``) are spread over the parts as
        evenly as the groups allow; the same seed gives the same split.
        Images without a value of ``by`` are groups of their own, one per
        image.  The parts come as a :class:`Splits` (a dict name → selection)
        that also exports them as a training set's splits, and locks them
        (:meth:`Splits.lock`).  ``check=True`` prints the leakage audit of the
        parts (:func:`isicarchive.audit`: shared patients, lesions, identical
        files); grouped by patient it finds nothing.

        Raises
        ------
        QueryError
            Fractions that do not add up to 1; a ``by`` or ``stratify`` field
            no image has (named with its close matches, the same error for both).
        """
        from .grouping import split_ids

        parts = split_ids(dict(self.items()), fractions, by=by, stratify=stratify, seed=seed)
        splits = Splits({name: self._derived((key, self[key]) for key in keys) for name, keys in parts.items()})
        splits.origin = self.origin
        splits.settings = {"by": by, "stratify": stratify, "seed": seed, "fractions": dict(fractions)}
        if check:
            print(splits.audit())
        return splits

    def export(self, folder: Any, *, layout: str = "official", target: str = "diagnosis_1",
               licenses: Iterable[str] | str | None = None, commercial: bool = False, **options: Any) -> Any:
        """Write the selection's images and metadata for other loaders (see :mod:`isicarchive.exports`).

        ``layout``: ``"official"`` (the official CLI's folder, with
        ``attribution.txt``, ``licenses/`` and ``CITATION.cff``), ``"imagefolder"``
        (a folder per class of ``target``, for torchvision's ``ImageFolder`` and
        Hugging Face's ``imagefolder``) or ``"webdataset"`` (tar shards).
        ``commercial=True`` (or ``licenses=[...]``) leaves out every image under
        another licence: such an export never writes a CC-BY-NC image.
        """
        from .exports import export

        chosen = self.licensed(licenses, commercial=commercial) if licenses is not None or commercial else self
        return export({"": chosen}, folder, layout=layout, target=target, **options)

    # ------------------------------------------------------ reproducibility
    def lock(self, path: str | os.PathLike[str] | None = None, *, api: Any = None,
             progress: bool | None = None) -> Lock:
        """Pin these images in a lock file (see :mod:`isicarchive.lockfile`); returns the :class:`Lock`.

        ``path`` ending in ``.gz`` is gzipped.  ``api`` is needed only for a
        selection no session made.
        """
        from .lockfile import lock_selection

        return lock_selection(self, path, api=api if api is not None else self.session, progress=progress)

    def licenses(self) -> dict[str, int]:
        """Images per licence (``CC-0``, ``CC-BY``, ``CC-BY-NC``; ``unknown``), most permissive first."""
        from .licenses import count

        return count(self.values())

    def licensed(self, licenses: Iterable[str] | str | None = None, *, commercial: bool = False) -> Selection:
        """The images under these licences; ``commercial=True`` keeps CC-0 and CC-BY only."""
        from .licenses import allowed_licenses, license_of

        chosen = allowed_licenses(licenses, commercial)
        return self._derived((k, r) for k, r in self.items() if chosen is None or license_of(r) in chosen)

    def cite(self, style: str = "bibtex") -> str:
        """The references to cite for these images: the archive, the challenges and datasets they come
        from, their collections' DOIs, and the attributions (``"bibtex"``, ``"apa"``, ``"csl-json"``)."""
        from .citations import cite

        return cite(self, style)

    def to_hf_dataset(self, *, target: str | None = "diagnosis_1", path: Any = None, **options: Any) -> Any:
        """A Hugging Face ``datasets.Dataset``: an Image column, every metadata column, licence and
        attribution; with ``path`` also saved there with a dataset card (see :mod:`isicarchive.exports`)."""
        from .exports import to_hf_dataset

        return to_hf_dataset(self, target=target, path=path, **options)

    def _speaks_v2(self) -> bool:
        """Whether the selection holds today's (v2) records: its session's API, else the records' shape."""
        version = getattr(self.session, "api_version", None)
        if version is not None:
            return bool(version == 2)
        first = next(iter(self.values()), None)
        return isinstance(first, dict) and "metadata" in first

    def to_dataframe(self, fields: Sequence[str] | None = None) -> Any:
        """A pandas DataFrame (index = id) of the chosen dotted fields (``pandas`` extra).

        Without ``fields``, on today's API (v2): the columns of
        :data:`V2_FRAME_FIELDS` (patient_id, lesion_id, diagnosis_1..5, age,
        sex, site, the acquisition fields, licence and attribution), named
        without their ``metadata.…`` prefix; on the legacy v1 API: name,
        dataset, diagnosis, age, sex, site, size.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_dataframe needs pandas: pip install 'isicarchive[pandas]'") from exc
        names: list[str] | None = None
        if fields is None and self._speaks_v2():
            fields, names = list(V2_FRAME_FIELDS.values()), list(V2_FRAME_FIELDS)
        fields = list(fields or ["name", "dataset.name", "meta.clinical.diagnosis", "meta.clinical.age_approx",
                                 "meta.clinical.sex", "meta.clinical.anatom_site_general",
                                 "meta.acquisition.pixelsX", "meta.acquisition.pixelsY"])
        rows = [[get_path(rec, f) for f in fields] for rec in self.values()]
        frame = pd.DataFrame(rows, index=pd.Index(list(self.keys()), name="id"), columns=names or fields)
        fields = names or fields
        for column in fields:
            if column.rsplit(".", 1)[-1] in DECIMAL_FIELDS:
                # the archive's decimals are numbers here (float64, NaN where missing), even in a column
                # where every value is missing, which pandas would leave as objects
                try:
                    frame[column] = frame[column].astype("float64")
                except (TypeError, ValueError):
                    pass  # text a hand-edited archive put there stays as it is
        return frame

    def to_dask_dataframe(self, npartitions: int | None = None, fields: Sequence[str] | None = None) -> Any:
        """The same table as :meth:`to_dataframe`, as a Dask DataFrame (the ``dask`` extra).

        ``npartitions`` defaults to one per 10,000 images.
        """
        from .scaleout import to_dask_dataframe

        return to_dask_dataframe(self.to_dataframe(fields), npartitions)

    def to_csv(self, path: str, fields: Sequence[str] | None = None) -> None:
        """Write the chosen fields as CSV (``pandas`` extra); cells that would read as spreadsheet
        formulas start with a tab, cells with line breaks are quoted (:mod:`isicarchive.csvguard`)."""
        from .csvguard import write_csv

        frame = self.to_dataframe(fields)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            write_csv(fh, [frame.index.name, *frame.columns], frame.itertuples(index=True, name=None))

    def __repr__(self) -> str:
        shown = ", ".join(self.names()[:5])
        more = f", … {len(self) - 5} more" if len(self) > 5 else ""
        return f"Selection({len(self)} images: {shown}{more})"

    def _repr_html_(self) -> str:
        head = "<tr><th>id</th><th>name</th><th>diagnosis</th><th>dataset</th></tr>"
        body = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(r.get('name', '')))}</td>"
            f"<td>{html.escape(str(get_path(r, 'meta.clinical.diagnosis')))}</td>"
            f"<td>{html.escape(str(get_path(r, 'dataset.name')))}</td></tr>"
            for k, r in list(self.items())[:20])
        more = f"<p>… and {len(self) - 20} more</p>" if len(self) > 20 else ""
        return f"<div><b>{len(self)} selected images</b><table>{head}{body}</table>{more}</div>"
