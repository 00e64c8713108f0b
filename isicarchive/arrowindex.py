"""The selection index's columns read by pyarrow's JSON reader, a slice of records at a time.

:class:`~isicarchive.selection.ImageIndex` needs, for every dotted path of
the records, a code per record and the distinct values.  Decoding the records
into Python dicts (millions of small objects) and transposing them costs
several times the JSON parse; pyarrow's reader parses the records' JSON text
(the bytes a :class:`~isicarchive.records.RecordStore` keeps, one record a
line) straight into columns, in C++ and on every core, and
``dictionary_encode`` gives each column's codes and distinct values.

Arrow's reading is not Python's in a few places, and those are settled so
that the index is the one the pure build makes, value for value:

- a ``null`` in the JSON and a missing key are both null in Arrow (the index
  tells them apart): a key's null is found in the text (``"key":null``);
  where that does not say which dict holds it, the record is decoded and
  the paths looked up (:func:`_explicit_nulls`);
- a column of numbers where some are floats is all doubles in Arrow (``1``
  would read as ``1.0``; integers past 2**63 lose digits), and a list of
  objects is read with every key any of them has: the records with a whole
  number in such a column, or with such a list, are decoded and give their
  own values (:func:`_exact_values`);
- text such as ``"2015-01-04"`` is read by Arrow as a timestamp: a slice with such a column is read again
  with those paths as strings;
- records kept as objects (not JSON text) are left to the pure build.

A slice Arrow refuses (one key with a number in one record and text in
another, a key twice in an object, a number too big for a double) is read
the pure way as a whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np

    from .records import Held
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see ._lazy)

__all__ = ["ArrowSlice", "Parsed", "arrow_available", "parse_slice", "read_slice"]

# pyarrow, imported by the first build that uses it (it costs a fifth of a second: not at start-up)
_pa: Any = None
_pc: Any = None
_pj: Any = None


def arrow_available() -> bool:
    """Whether pyarrow can be imported (and imports it for this module)."""
    global _pa, _pc, _pj
    if _pa is None:
        try:
            import pyarrow
            import pyarrow.compute
            import pyarrow.json
        except ImportError:
            return False
        _pa, _pc, _pj = pyarrow, pyarrow.compute, pyarrow.json
    return True


class Leaf:
    """A path that holds plain values in this slice: the rows that have one and their codes into
    ``distinct`` (a list, or an Arrow array of strings, integers, booleans or floats)."""

    __slots__ = ("codes", "distinct", "rows")

    def __init__(self, rows: np.ndarray, codes: np.ndarray, distinct: Any) -> None:
        self.rows = rows
        self.codes = codes
        self.distinct = distinct


class ArrowSlice:
    """What one slice's text gave: the paths that hold dicts (with their rows), the leaves, and the rows
    (positions in the slice) to be read the pure way."""

    __slots__ = ("dict_rows", "dotted_root_keys", "leaves", "pure", "size")

    def __init__(self, size: int) -> None:
        #: the records in the slice
        self.size = size
        self.dict_rows: dict[tuple[str, ...], np.ndarray] = {}
        self.leaves: dict[tuple[str, ...], Leaf] = {}
        self.dotted_root_keys: set[str] = set()
        self.pure: np.ndarray = np.zeros(0, np.int64)


def _plain_list(kind: Any) -> bool:
    """Whether a list type's values read back exactly (strings, whole numbers, booleans, nulls, lists of them)."""
    if _pa.types.is_list(kind) or _pa.types.is_large_list(kind):
        return _plain_list(kind.value_type)
    return bool(_pa.types.is_string(kind) or _pa.types.is_large_string(kind) or _pa.types.is_int64(kind)
                or _pa.types.is_boolean(kind) or _pa.types.is_null(kind))


def distinct_in_order(chunks: list[Any], ids: IdStrings | None = None) -> tuple[np.ndarray, list[Any]]:
    """The distinct values of Arrow arrays of one type, in the order they first occur, and for each value of
    the arrays (one after the other) the number of its distinct value; empties ``chunks``.

    ``ids``: the index's ids; distinct values that are those strings, one per record in their order (a
    column of ids, or of names equal to them), are those very string objects (no second copy).
    """
    encoded = _pa.chunked_array(chunks).dictionary_encode()  # one dictionary for every chunk
    chunks.clear()
    numbers = np.concatenate([_numpy(chunk.indices) for chunk in encoded.chunks]).astype(np.int32)
    dictionary = encoded.chunk(0).dictionary
    del encoded
    distinct = ids.same(dictionary) if ids is not None else None
    if distinct is None:
        distinct = dictionary.to_pylist()
    del dictionary
    release_memory()
    return numbers, distinct


class IdStrings:
    """The index's ids, and as an Arrow array when a column's values are compared with them (made once)."""

    __slots__ = ("_array", "ids")

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self._array: Any = None

    def same(self, values: Any) -> list[str] | None:
        """The ids, where ``values`` (an Arrow array) holds exactly them in their order; else None."""
        ids = self.ids
        if len(values) != len(ids) or not ids or not _pa.types.is_string(values.type) or \
                values[0].as_py() != ids[0] or values[len(ids) - 1].as_py() != ids[-1]:
            return None
        if self._array is None:
            try:
                text = "\n".join(ids).encode("utf-8")
            except UnicodeError:  # a lone surrogate
                return None
            if len(text) >= 1 << 31:
                return None
            whole = _binary(np.asarray([0, len(text)], np.int32), text, _pa.string())
            self._array = _pc.split_pattern(whole, "\n").flatten()
        if len(self._array) != len(ids):  # an id with a line break in it
            return None
        return list(ids) if _pc.all(_pc.equal(values, self._array)).as_py() else None


# pyarrow.array() imports pandas where it is installed (most of a second, once): arrays here are made from
# buffers instead
def _binary(offsets: np.ndarray, data: bytes, kind: Any = None) -> Any:
    """An Arrow binary (or ``kind``) array of the slices of ``data`` between the (int32) ``offsets``."""
    return _pa.Array.from_buffers(kind if kind is not None else _pa.binary(), len(offsets) - 1,
                                  [None, _pa.py_buffer(offsets), _pa.py_buffer(data)])


def _booleans(mask: np.ndarray) -> Any:
    """An Arrow boolean array of a numpy one."""
    return _pa.Array.from_buffers(_pa.bool_(), mask.size,
                                  [None, _pa.py_buffer(np.packbits(mask, bitorder="little"))])


def release_memory() -> None:
    """Give back the memory Arrow's allocator keeps for reuse (the slices' tables are gone when the index is
    built)."""
    if _pa is not None:
        _pa.default_memory_pool().release_unused()


def _walk(array: Any, path: tuple[str, ...],
          valid: np.ndarray | None) -> Iterator[tuple[tuple[str, ...], Any, np.ndarray | None]]:
    """Every path of a struct array with its array (structs too; nulls where a level above is missing) and
    where the dict that holds it exists (None: in every record)."""
    for field, child in zip(array.type, array.flatten(), strict=True):
        here = (*path, field.name)
        yield here, child, valid
        if _pa.types.is_struct(child.type):
            yield from _walk(child, here, _valid(child))


def _valid(array: Any) -> np.ndarray:
    """Where an Arrow array holds a value (not null), as numpy booleans, read from its validity bitmap."""
    if not array.null_count:
        return np.ones(len(array), bool)
    bits = array.buffers()[0]
    if bits is None or _pa.types.is_null(array.type):
        return np.zeros(len(array), bool)
    return np.unpackbits(np.frombuffer(bits, np.uint8), count=array.offset + len(array),
                         bitorder="little")[array.offset:].view(bool)


def _numpy(array: Any) -> np.ndarray:
    """An Arrow array of booleans or numbers as a numpy array (a null's value is whatever the buffer holds:
    callers mask them), read from its buffers: Arrow's own conversion imports pandas."""
    kind = array.type
    if not len(array):
        return np.zeros(0, bool if _pa.types.is_boolean(kind) else np.int64)
    if _pa.types.is_boolean(kind):
        bits = np.frombuffer(array.buffers()[1], np.uint8)
        return np.unpackbits(bits, count=array.offset + len(array), bitorder="little")[array.offset:].view(bool)
    dtype = np.dtype(f"{'f' if _pa.types.is_floating(kind) else 'u' if _pa.types.is_unsigned_integer(kind) else 'i'}"
                     f"{kind.bit_width // 8}")
    return np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)


def _records_of(data: bytes, rows: int, threads: bool, schema: Any = None) -> Any | None:
    """The ``rows`` records of ``data`` (a JSON object a line) as one Arrow struct array, or None where Arrow
    refuses the text or reads another number of rows.

    With ``schema``, its paths alone (every other key skipped); without, every key, and text Arrow took for
    timestamps read again as text.
    """
    options = _pj.ReadOptions(use_threads=threads, block_size=1 << 20)
    try:
        if schema is not None:
            table = _pj.read_json(_pa.BufferReader(data), read_options=options, parse_options=_pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"))
        else:
            table = _pj.read_json(_pa.BufferReader(data), read_options=options)
            text_schema = _pa.schema([_pa.field(field.name, _as_text(field.type)) for field in table.schema])
            if not text_schema.equals(table.schema):
                table = _pj.read_json(_pa.BufferReader(data), read_options=options,
                                      parse_options=_pj.ParseOptions(explicit_schema=text_schema))
    except (_pa.ArrowInvalid, _pa.ArrowNotImplementedError, _pa.ArrowTypeError):
        return None
    if table.num_rows != rows:
        return None
    records = table.combine_chunks().to_struct_array()
    del table
    return records.combine_chunks() if isinstance(records, _pa.ChunkedArray) else records


class Parsed:
    """A slice's text as Arrow read it (:func:`parse_slice`), for :func:`read_slice` to take in."""

    __slots__ = ("data", "records", "text_rows", "texts")

    def __init__(self, texts: list[bytes], text_rows: Any, data: bytes | None, records: Any) -> None:
        self.texts = texts
        self.text_rows = text_rows
        self.data: bytes | None = data
        self.records = records


def parse_slice(held: list[Held], *, threads: bool = True) -> Parsed | None:
    """Arrow's reading of a slice of records' text (the part of :func:`read_slice` that runs without the GIL),
    or None where Arrow cannot read it."""
    if not arrow_available():
        return None
    # (a record's text has no line break: orjson escapes them in strings; a carriage return that some
    # other writer left between tokens would make Arrow's row count or parse fail, and the slice pure)
    every = set(map(type, held)) == {bytes}
    text_rows = range(len(held)) if every else [i for i, h in enumerate(held) if type(h) is bytes]
    texts: list[bytes] = held if every else [held[i] for i in text_rows]  # type: ignore[assignment, misc]
    if not texts:
        return Parsed(texts, text_rows, b"", None)
    data = b"\n".join(texts)
    records = _records_of(data, len(texts), threads)
    return Parsed(texts, text_rows, data, records) if records is not None else None


def read_slice(held: list[Held], *, threads: bool = True, parsed: Parsed | None = None) -> ArrowSlice | None:
    """The columns of a slice of records, or None where Arrow cannot read it (read it all the pure way).

    ``parsed``: the slice's :func:`parse_slice`, where it was parsed already."""
    if parsed is None:
        parsed = parse_slice(held, threads=threads)
        if parsed is None:
            return None
    out = ArrowSlice(len(held))
    texts, text_rows, data, records = parsed.texts, parsed.text_rows, parsed.data, parsed.records
    parsed.data = parsed.records = None  # (this function's to let go of)
    pure = np.ones(len(held), bool)
    pure[text_rows] = False
    if not texts:
        out.pure = np.arange(len(held), dtype=np.int64)
        return out
    for field in records.type:
        if "." in field.name:  # no dotted path names it; a look-up of its prefix becomes special
            out.dotted_root_keys.add(field.name)
    walked = list(_walk(records, (), None))
    paths = [(path, array, valid) for path, array, valid in walked if not any("." in name for name in path)]
    exact = _inexact(paths)
    if exact is None:
        return None
    assert data is not None
    nulls = _explicit_nulls(texts, data, paths, walked) if b"null" in data else {}
    del data
    out.pure = np.flatnonzero(pure)
    patches: dict[tuple[str, ...], tuple[np.ndarray, list[Any]]] = {
        path: (where, [None] * where.size) for path, where in nulls.items() if where.size}
    if exact:
        patches.update(_exact_values(texts, exact))
    _fill(out, np.asarray(text_rows, np.int64), paths, exact, patches)
    return out


def _inexact(paths: list[tuple[tuple[str, ...], Any, Any]]) -> dict[tuple[str, ...], np.ndarray] | None:
    """The rows (of Arrow's) whose values Arrow may have read otherwise than Python (see the module's text), to
    be taken from the records, by path; None for a type this reader does not know."""
    exact: dict[tuple[str, ...], np.ndarray] = {}
    for path, array, _ in paths:
        kind = array.type
        if _pa.types.is_struct(kind) or _pa.types.is_null(kind):
            continue
        if _pa.types.is_floating(kind):
            values = _numpy(array)
            if array.null_count:
                values = np.where(_valid(array), values, np.nan)
            with np.errstate(invalid="ignore"):
                whole = np.flatnonzero(np.floor(values) == values)  # was it 1 or 1.0? (NaN: missing)
            if whole.size:
                exact[path] = whole
        elif _pa.types.is_list(kind) or _pa.types.is_large_list(kind):
            listed = np.flatnonzero(_valid(array)) if not _plain_list(kind) else None
            if listed is not None and listed.size:  # (the slice's lists of objects, or of mixed numbers)
                exact[path] = listed
        elif not (_pa.types.is_string(kind) or _pa.types.is_large_string(kind) or _pa.types.is_int64(kind)
                  or _pa.types.is_boolean(kind)):
            return None  # a type this reader does not know (no JSON value should give one)
    return exact


def _fill(out: ArrowSlice, rows: np.ndarray, paths: list[tuple[tuple[str, ...], Any, Any]],
          exact: dict[tuple[str, ...], np.ndarray],
          patches: dict[tuple[str, ...], tuple[np.ndarray, list[Any]]]) -> None:
    """Put each path's dict rows or leaf (codes of its values, with the ``patches``' rows set to their values:
    nulls, and the ``exact`` values Python reads) into ``out``; ``rows``: the slice's rows of Arrow's rows."""
    for path, array, _ in paths:
        kind = array.type
        leaf: tuple[np.ndarray, np.ndarray, list[Any]] | None = None
        everywhere = array.null_count == 0
        if _pa.types.is_null(kind) or array.null_count == len(array):
            pass
        elif _pa.types.is_struct(kind):
            out.dict_rows[path] = rows if everywhere else rows[_valid(array)]
        elif path not in exact or not (_pa.types.is_list(kind) or _pa.types.is_large_list(kind)):
            where = np.arange(len(array)) if everywhere else np.flatnonzero(_valid(array))
            if _pa.types.is_list(kind) or _pa.types.is_large_list(kind):
                codes, distinct = _lists(array if everywhere else array.filter(_booleans(_valid(array))))
                if codes is None:  # lists that cannot be keyed: every row's own list
                    codes, distinct = np.arange(len(distinct)), distinct
            else:  # (nulls have no code: those of the other rows are the present values' own)
                encoded = array.dictionary_encode()
                codes, distinct = _numpy(encoded.indices), encoded.dictionary
                if not everywhere:
                    codes = codes[where]
            leaf = (where, codes, distinct)
        patch = patches.pop(path, None)
        if patch is not None:
            leaf = _patched(leaf, *patch)
        if leaf is not None:
            out.leaves[path] = Leaf(rows[leaf[0]], leaf[1], leaf[2])
    for path, (patch_rows, patch_values) in patches.items():  # keys that hold null wherever they are
        leaf = _patched(None, patch_rows, patch_values)
        out.leaves[path] = Leaf(rows[leaf[0]], leaf[1], leaf[2])


def _exact_values(texts: list[bytes],
                  exact: dict[tuple[str, ...], np.ndarray]) -> dict[tuple[str, ...], tuple[np.ndarray, list[Any]]]:
    """The values at these paths and rows, as Python reads the records' JSON."""
    from .records import decode_many

    rows = np.unique(np.concatenate(list(exact.values())))
    records = dict(zip(rows.tolist(), decode_many([texts[row] for row in rows.tolist()]), strict=True))
    out = {}
    for path, where in exact.items():
        values = []
        for row in where.tolist():
            value = records[row]
            for name in path:
                value = value[name]
            values.append(value)
        out[path] = (where, values)
    return out


def _patched(leaf: tuple[np.ndarray, np.ndarray, list[Any]] | None, rows: np.ndarray,
             values: list[Any]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """A leaf (rows, codes, distinct values) with these rows' values set, its distinct values in the order
    of their first rows and none that no row has."""
    if leaf is None:
        all_rows, codes, distinct = rows, np.arange(len(values)), list(values)
    else:
        where, codes, distinct = leaf
        if not isinstance(distinct, list):
            distinct = distinct.to_pylist()
        unpatched = ~np.isin(where, rows)
        all_rows = np.concatenate([where[unpatched], rows])
        codes = np.concatenate([codes[unpatched], np.arange(len(distinct), len(distinct) + len(values))])
        distinct = [*distinct, *values]
    order = np.argsort(all_rows, kind="stable")
    all_rows, codes = all_rows[order], codes[order]
    used, first = np.unique(codes, return_index=True)
    by_first = used[np.argsort(first, kind="stable")]
    renumber = np.zeros(len(distinct), np.int64)
    renumber[by_first] = np.arange(len(by_first))
    return all_rows, renumber[codes], [distinct[code] for code in by_first.tolist()]


def _explicit_nulls(texts: list[bytes], data: bytes, paths: list[tuple[tuple[str, ...], Any, Any]],
                    walked: list[tuple[tuple[str, ...], Any, Any]]) -> dict[tuple[str, ...], np.ndarray]:
    """Where a key holds ``null`` (Arrow reads it as missing): path -> rows.

    ``data``: the ``texts`` joined by line breaks; ``paths``: the paths read (no dotted key on the way),
    ``walked``: every path of Arrow's reading.  In compact JSON an object's key with a null value reads
    ``{"key":null`` or ``,"key":null``, and no string holds that text unescaped (a quote in a string is
    ``\\"``).  Every ``null`` of the text is found at once (numpy over the bytes), with the key before it; in
    a record where each key of that name is as many times null as the paths ending in it are missing in
    Arrow's reading (while their dict exists), those paths hold null.  A record where that does not settle
    it (a key of that name null in one dict and missing in another, a ``null`` anywhere else: in a list, in a
    string, after a space; an escape or a long key; a list of objects or a dotted key, whose keys no path
    holds) is decoded, and each of those paths looked up in it.
    """
    size = len(texts)
    starts = np.zeros(size, np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, size)[:-1] + 1, out=starts[1:])
    text = np.frombuffer(data, np.uint8)
    at = np.flatnonzero(text[3:] == ord("l"))  # "null" at `at`: its last letter first (the rarest here)
    at = at[text[at + 2] == ord("l")]
    at = at[(text[at] == ord("n")) & (text[at + 1] == ord("u"))]
    row_of = np.searchsorted(starts, at, "right") - 1
    has_null = np.zeros(size, bool)
    has_null[row_of] = True
    keyed = (at >= starts[row_of] + 3) & (text[at - 1] == ord(":")) & (text[at - 2] == ord('"'))
    unsure = np.zeros(size, bool)
    unsure[row_of[~keyed]] = True
    close, row_of = at[keyed] - 2, row_of[keyed]  # the quote that ends each key
    # the key's opening quote: the nearest one before, within a window (a longer key: the record decoded)
    window = 64
    back = close[:, None] - 1 - np.arange(window)
    before = text[np.maximum(back, 0)]
    quote = (before == ord('"')) & (back > starts[row_of][:, None])
    found = quote.any(axis=1)
    length = quote.argmax(axis=1)  # (the key's length: its bytes are `before` reversed)
    opening = close - 1 - length
    escaped = ((before == ord("\\")) & (np.arange(window) < length[:, None])).any(axis=1)
    plain_key = found & ~escaped & np.isin(text[np.maximum(opening - 1, 0)], (ord("{"), ord(",")))
    unsure[row_of[~plain_key]] = True
    # keys no path holds: in a list of objects, under a dotted key
    for path, array, _ in walked:
        kind = array.type
        if any("." in name for name in path) or ((_pa.types.is_list(kind) or _pa.types.is_large_list(kind))
                                                 and not _plain_list(kind)):
            unsure |= _valid(array) & has_null
    by_name: dict[str, list[tuple[tuple[str, ...], np.ndarray]]] = {}
    for path, array, valid in paths:
        missing = ~_valid(array)
        if valid is not None:
            missing &= valid
        by_name.setdefault(path[-1], []).append((path, missing))
    named = np.zeros(close.size, bool)
    out: dict[tuple[str, ...], np.ndarray] = {}
    checks: list[tuple[list[tuple[tuple[str, ...], np.ndarray]], np.ndarray]] = []
    for name, candidates in by_name.items():
        key = name.encode("utf-8", "surrogatepass")[::-1]
        if len(key) >= window:
            continue
        same = plain_key & (length == len(key))
        same[same] = (before[same, :len(key)] == np.frombuffer(key, np.uint8)).all(axis=1)
        if not same.any():
            continue
        named |= same
        matched = np.bincount(row_of[same], minlength=size)
        counted = np.sum([missing for _, missing in candidates], axis=0)
        settled = (matched > 0) & (matched == counted)
        for path, missing in candidates:
            where = np.flatnonzero(missing & settled)
            if where.size:
                out[path] = where
        doubt = np.flatnonzero((matched > 0) & (matched != counted))
        if doubt.size:  # e.g. null in one dict, missing in another: look those paths up in the record
            checks.append((candidates, doubt))
    unsure[row_of[plain_key & ~named]] = True  # a key that no path ends in
    out = {path: where[~unsure[where]] for path, where in out.items()}
    checks = [(candidates, doubt[~unsure[doubt]]) for candidates, doubt in checks]
    if unsure.any():  # every path null in Arrow's row is looked up in the record
        checks.append(([entry for entries in by_name.values() for entry in entries], np.flatnonzero(unsure)))
    if checks:
        from .records import decode_many

        rows = np.unique(np.concatenate([doubt for _, doubt in checks])).tolist()
        records = dict(zip(rows, decode_many([texts[row] for row in rows]), strict=True))
        added: dict[tuple[str, ...], list[int]] = {}
        for candidates, doubt in checks:
            for path, missing in candidates:
                added.setdefault(path, []).extend(
                    row for row in doubt[missing[doubt]].tolist() if _holds_null(records[row], path))
        for path, more in added.items():
            if more:
                out[path] = np.sort(np.concatenate([out.get(path, np.zeros(0, np.int64)), more]))
    return {path: where for path, where in out.items() if where.size}


def _holds_null(record: Any, path: tuple[str, ...]) -> bool:
    """Whether the record has the path's last key, with None, in the dict the path leads to."""
    for name in path[:-1]:
        record = record.get(name) if type(record) is dict else None
    return type(record) is dict and path[-1] in record and record[path[-1]] is None


def _lists(array: Any) -> tuple[np.ndarray | None, list[Any]]:
    """A list array's (no nulls) codes and distinct lists, or (None, every list) where they cannot be keyed.

    Lists of strings usually repeat (tags): each distinct one is made a Python list once.
    """
    if len(array.flatten()) == 0:
        return np.zeros(len(array), np.int64), [[]]
    if _pa.types.is_string(array.type.value_type) and not _pc.any(
            _pc.match_substring(array.flatten(), "\x1f")).as_py():
        # with no separator in any string, its count and the strings joined by it tell the lists apart
        separators = _binary(np.arange(len(array) + 1, dtype=np.int32), b"\x1f" * len(array), _pa.string())
        keys = _pc.binary_join_element_wise(_pc.cast(_pc.list_value_length(array), _pa.string()),
                                            _pc.binary_join(array, separators), separators)
        encoded = keys.dictionary_encode()
        distinct = [[] if text.startswith("0\x1f") else text.split("\x1f")[1:]
                    for text in encoded.dictionary.to_pylist()]
        return _numpy(encoded.indices), distinct
    return None, array.to_pylist()


# ------------------------------------------------------------------ reading only the paths a selection names
# A JSON parse that materialises one path (an explicit schema, other keys ignored) costs about half of one
# that materialises every value; :class:`~isicarchive.selection.ImageIndex` reads the paths its first
# selections name that way and builds the other columns when something needs them.

def lazy_name(name: str) -> bool:
    """Whether a key can be read alone: one that orjson writes as it is (its text search below is exact)."""
    return bool(name) and not any(char in name for char in '"\\') and all(ord(char) >= 0x20 for char in name)


def path_schema(sample: list[Held], paths: list[tuple[str, ...]]) -> Any | None:
    """The explicit schema that reads these paths alone: each path with the type Arrow gives the ``sample``'s
    values there (a dict: an empty struct, only where it exists is read), each level above it a struct.
    None where the sample does not settle a path's type (no value, only nulls, values Arrow refuses together,
    a level above that holds something else than dicts), or a path ends where another goes on."""
    if not arrow_available() or not sample:
        return None
    from .records import decode_many

    records = decode_many(sample)
    tree: dict[str, Any] = {}
    for path in paths:
        values = []
        for record in records:
            value = record
            for name in path:
                if type(value) is not dict:
                    break
                value = value.get(name)
            else:
                if value is not None:
                    values.append(value)
                continue
            if value is not None:
                return None  # a level above the path holds something else than a dict
        kind = _type_of(values)
        if kind is None:
            return None
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                return None
        if _pa.types.is_struct(kind):
            if not isinstance(node.setdefault(path[-1], {}), dict):
                return None
        elif path[-1] in node:
            return None
        else:
            node[path[-1]] = kind

    def struct(node: dict[str, Any]) -> list[Any]:
        return [_pa.field(name, _pa.struct(struct(child)) if isinstance(child, dict) else child)
                for name, child in node.items()]

    return _pa.schema(struct(tree))


def _type_of(values: list[Any]) -> Any | None:
    """The type Arrow's JSON reader gives these values together (None: none, all null, or refused)."""
    from .records import encode

    if values and all(type(value) is dict for value in values):
        return _pa.struct([])  # (only where the dicts are is read)
    lines = [encode({"v": value}) for value in values]
    if not lines or set(map(type, lines)) != {bytes}:
        return None
    try:
        kind = _pj.read_json(_pa.BufferReader(b"\n".join(lines)),  # type: ignore[arg-type]
                             read_options=_pj.ReadOptions(use_threads=False)).schema.field("v").type
    except (_pa.ArrowInvalid, _pa.ArrowNotImplementedError, _pa.ArrowTypeError, KeyError):
        return None
    return None if _pa.types.is_null(kind) else _as_text(kind)


def _as_text(kind: Any) -> Any:
    """The type with every timestamp a string: Arrow takes text such as ``"2015-01-04"`` for a timestamp, and
    read as one it would not give Python's string back; read as a string it does."""
    if _pa.types.is_timestamp(kind):
        return _pa.string()
    if _pa.types.is_list(kind):
        return _pa.list_(_as_text(kind.value_type))
    if _pa.types.is_struct(kind):
        return _pa.struct([_pa.field(field.name, _as_text(field.type)) for field in kind])
    return kind


def read_paths(held: list[Held], schema: Any, paths: list[tuple[str, ...]], *,
               threads: bool = True) -> ArrowSlice | None:
    """What :func:`read_slice` gives for these paths and every level above them (``schema``: their
    :func:`path_schema`), read alone: None where they cannot be (a value of another type than the schema's,
    a record kept as an object, a path that some record also has as a top-level key of its own).

    The levels above a path are read as dicts: where a record holds null there, it becomes a leaf (the level
    is a column, as the whole build finds it), any other value makes Arrow refuse the slice.
    """
    if not held or set(map(type, held)) != {bytes}:
        return None
    texts: list[bytes] = held  # type: ignore[assignment]
    data = b"\n".join(texts)
    for path in paths:  # a record's own key "a.b" is what a look-up of the path a.b finds: read them all then
        if len(path) > 1 and (b'"' + ".".join(path).encode("utf-8") + b'":') in data:
            return None
    # keys a writer other than orjson wrote otherwise (a backslash is rare: one search for it first, fast)
    escaped = b"\\" in data and (b"\\u" in data or b"\\/" in data)
    if escaped:
        escaped_rows = np.flatnonzero(np.fromiter((b"\\u" in text or b"\\/" in text for text in texts), bool,
                                                  len(texts)))
        from .records import decode_many

        for record in decode_many([texts[row] for row in escaped_rows.tolist()]):
            if any(".".join(path) in record for path in paths if len(path) > 1):
                return None
    records = _records_of(data, len(texts), threads, schema)
    del data
    if records is None:
        return None
    nodes = list(_walk(records, (), None))
    exact = _inexact(nodes)
    if exact is None:
        return None
    out = ArrowSlice(len(held))
    patches = {path: (where, [None] * where.size) for path, where in _nulls_at(texts, nodes).items()}
    if exact:
        patches.update(_exact_values(texts, exact))
    _fill(out, np.arange(len(texts), dtype=np.int64), nodes, exact, patches)
    return out


def _nulls_at(texts: list[bytes], nodes: list[tuple[tuple[str, ...], Any, Any]]) -> dict[tuple[str, ...], np.ndarray]:
    """The rows where each path holds an explicit ``null`` (Arrow reads it as missing), when only these paths
    were read: of the rows where the path is null in Arrow's reading while the dict that holds it exists,
    those whose text has the key's ``"key":null``, or a ``null`` written otherwise (after a space) or escapes
    in keys, are decoded and the path looked up; the rest have no such key."""
    from .records import decode_many

    out = {}
    for path, array, valid in nodes:
        if not array.null_count:
            continue
        missing = ~_valid(array)
        if valid is not None:
            missing &= valid
        candidates = np.flatnonzero(missing)
        if not candidates.size:
            continue
        chosen = [texts[row] for row in candidates.tolist()]
        key = b'"' + path[-1].encode("utf-8") + b'":null'
        # (bytes' own searches: faster than Arrow's kernels over a few thousand records)
        doubt = np.fromiter((b"null" in text and (key in text or text.count(b"null") != text.count(b'":null')
                                                  or b"\\u" in text or b"\\/" in text) for text in chosen),
                            bool, len(chosen))
        rows = candidates[doubt]
        if rows.size:
            records = decode_many([texts[row] for row in rows.tolist()])
            held_null = np.fromiter((_holds_null(record, path) for record in records), bool, len(records))
            if held_null.any():
                out[path] = rows[held_null]
    return out
