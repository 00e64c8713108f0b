"""Image records held compactly: each record's JSON bytes, decoded when someone reads it.

A whole archive's image records (400,000 of them) as Python dicts take about
1.1 GB, and freeing their millions of small objects costs seconds when the
interpreter exits.  :class:`RecordStore` keeps each record as the compact JSON
text orjson writes (about a third of the memory, a single object per record)
and builds a fresh dict only when a record is asked for (microseconds).  It is
the mapping id → record of ``api.image_cache``: reading it gives records equal
to the ones stored, and the selection index reads it a slice at a time, so the
whole archive never exists as dicts at once.

A record that JSON cannot hold exactly (non-string keys, objects other than
dict, list, str, int, float, bool and None) is kept as it is.  Reading a record
gives a new dict each time: change a record by storing it again
(``store[key] = record``).
"""

from __future__ import annotations

import gzip
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, overload

from . import _json

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency
    _orjson = None  # type: ignore[assignment]
    import json as _stdjson

__all__ = ["RecordRows", "RecordStore", "decode", "decode_many", "encode", "names_of", "read_lines", "write_lines"]

#: a record held as it is (not as JSON), or as JSON text
Held = bytes | dict

if _orjson is not None:
    # subclasses of str, int, dict and list, datetimes and dataclasses would be written as JSON that does
    # not read back as the same object: they go to _refuse, and the record is kept as it is
    _ENCODE_OPTIONS = (_orjson.OPT_PASSTHROUGH_SUBCLASS | _orjson.OPT_PASSTHROUGH_DATETIME
                       | _orjson.OPT_PASSTHROUGH_DATACLASS)


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _exact_in_json(value: Any) -> bool:
    """Whether JSON holds the value exactly (the check orjson does not make: tuples, NaN, infinities)."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _exact_in_json(v) for k, v in value.items())
    if kind is list:
        return all(map(_exact_in_json, value))
    if kind is float:
        return value - value == 0.0  # NaN and infinities (orjson writes null for them) fail
    return kind in (str, int, bool, type(None))


def encode(record: dict, *, checked: bool = False) -> Held:
    """The record's JSON bytes, or the record itself where JSON would not give it back exactly.

    ``checked=True``: the record was decoded from JSON just now (only JSON's
    types are in it), so the walk that looks for tuples and NaN is skipped.
    """
    if type(record) is not dict or (not checked and not _exact_in_json(record)):
        return record
    if _orjson is None:
        try:
            return _stdjson.dumps(record, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return record
    try:
        text = _orjson.dumps(record, default=_refuse, option=_ENCODE_OPTIONS)
    except (TypeError, _orjson.JSONEncodeError):  # non-string keys, objects JSON has no type for, too deep
        return record
    # orjson's bytes keep the buffer it wrote into (4 kB for a 1 kB record): a copy of the exact size
    return memoryview(text).tobytes()


def decode(held: Held) -> dict:
    """A record as :func:`encode` kept it (a new dict for JSON text)."""
    if type(held) is bytes:
        return _orjson.loads(held) if _orjson is not None else _stdjson.loads(held)  # type: ignore[no-any-return]
    return held  # type: ignore[return-value]


def decode_many(held: list[Held]) -> list[Any]:
    """Many records at once (one parse of their JSON texts joined into an array, where all are text)."""
    if _orjson is not None and held and set(map(type, held)) == {bytes}:
        return _orjson.loads(b"[" + b",".join(held) + b"]")  # type: ignore[arg-type, no-any-return]
    return [decode(h) for h in held]


class RecordStore(MutableMapping[str, dict]):
    """A mapping id → record that keeps each record as its JSON bytes (see the module's text).

    Parameters
    ----------
    records : mapping or iterable of (id, record) pairs, optional
    """

    __slots__ = ("_held", "names")

    def __init__(self, records: Mapping[str, dict] | Iterable[tuple[str, dict]] = ()) -> None:
        self._held: dict[str, Held] = {}
        #: name -> id of the records that have a name (``ISIC_0000000``), gathered as records come in
        #: (so that the session's name map needs no decoding of every record)
        self.names: dict[str, str] = {}
        if records:
            self.update(records)

    @classmethod
    def of_json(cls, records: Iterable[tuple[str, dict]]) -> RecordStore:
        """A store of records that were just decoded from JSON (no check for tuples or NaN needed)."""
        store = cls()
        put = store.put
        for key, record in records:
            put(key, record, checked=True)
        return store

    def put(self, key: str, record: dict, *, checked: bool = False) -> None:
        """Store a record (``checked``: as :func:`encode` takes it)."""
        self._held[key] = encode(record, checked=checked)
        name = record.get("name") if type(record) is dict else None
        if type(name) is str and name:
            self.names[name] = key

    # the mapping
    def __getitem__(self, key: str) -> dict:
        return decode(self._held[key])

    def __setitem__(self, key: str, record: dict) -> None:
        self.put(key, record)

    def __delitem__(self, key: str) -> None:
        del self._held[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def get(self, key: str, default: Any = None) -> Any:
        held = self._held.get(key)
        return default if held is None else decode(held)

    def update(self, other: Any = (), /, **kwargs: dict) -> None:
        """Add or replace records; another store's records are taken as they are held (no re-encoding)."""
        if isinstance(other, RecordStore):
            self._held.update(other._held)
            self.names.update(other.names)
        else:
            for key, record in other.items() if isinstance(other, Mapping) else other:
                self[key] = record
        for key, record in kwargs.items():
            self[key] = record

    def copy(self) -> RecordStore:
        out = RecordStore()
        out._held, out.names = dict(self._held), dict(self.names)
        return out

    def __repr__(self) -> str:
        return f"RecordStore({len(self)} records)"

    # what the index, the cache file and subsets read
    def held(self) -> ItemsHeld:
        """The (id, held) pairs: JSON bytes or kept records, for :func:`decode`."""
        return self._held.items()

    def subset(self, keys: Iterable[str]) -> RecordStore:
        """The records of these keys (those it has), without decoding them."""
        out = RecordStore()
        held = self._held
        out._held = {key: held[key] for key in keys if key in held}
        out.names = {name: key for name, key in self.names.items() if key in out._held}
        return out


ItemsHeld = Any  # dict_items[str, Held]: the view type has no public name


def names_of(records: Mapping[str, dict]) -> dict[str, str]:
    """name -> id of the records that have a name (a store's, gathered as they came in, with no decoding)."""
    if isinstance(records, RecordStore):
        return records.names
    return {name: key for key, record in records.items() if (name := record.get("name"))}


class RecordRows(Sequence[dict]):
    """Records by row number over a list of held records (what the index and its selections read)."""

    __slots__ = ("held",)

    def __init__(self, held: list[Held]) -> None:
        self.held = held

    @overload
    def __getitem__(self, row: int) -> dict: ...
    @overload
    def __getitem__(self, row: slice) -> list[dict]: ...

    def __getitem__(self, row: int | slice) -> dict | list[dict]:
        if isinstance(row, slice):
            return [decode(h) for h in self.held[row]]
        return decode(self.held[row])

    def __len__(self) -> int:
        return len(self.held)


# ---------------------------------------------------------------- the file
# The image cache file is one JSON object, id → record, with one entry per line:
#
#     {
#     "<id>":{...},
#     "<id>":{...}
#     }
#
# Any JSON reader reads it whole; this module reads it a line at a time, so that the
# records never exist as dicts all at once, and keeps each line's JSON as it is.


def write_lines(fh: BinaryIO | Any, store: RecordStore) -> None:
    """Write the store as one JSON object in the order of its ids, an entry per line (records kept as
    dicts are encoded here)."""
    fh.write(b"{")
    separator = b"\n"
    for chunk in _chunks(sorted(store.held(), key=operator.itemgetter(0)), 2000):
        lines = []
        for key, held in chunk:
            value = held if type(held) is bytes else _json.dumps(held)
            lines.append(_json.dumps(key) + b":" + value)
        fh.write(separator + b",\n".join(lines))
        separator = b",\n"
    fh.write(b"\n}")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def read_lines(path: Path) -> RecordStore | None:
    """The records of an image cache file written by :func:`write_lines`, a line at a time.

    Returns None for a file of another shape (the original package's, an
    older one's: one line of JSON), which the caller reads whole.  Raises
    ValueError (or OSError, EOFError) for a damaged file; an entry that is no
    record (a list, text) is left out.  The file is read in blocks of
    :data:`READ_BLOCK` bytes, whatever its size.
    """
    store = RecordStore()
    with gzip.open(path, "rb") as fh:
        if fh.readline() != b"{\n":
            return None
        rest = b""
        while block := fh.read(READ_BLOCK):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            if lines and lines[-1] == b"}":
                raise ValueError("an image cache file that goes on after its closing brace")
            add_lines(store, [line[:-1] if line.endswith(b",") else line for line in lines])
        if rest != b"}":
            raise ValueError("the image cache file ends before its closing brace")
    return store


#: how much of an image cache file is decompressed at a time
READ_BLOCK = 1 << 22


def add_lines(store: RecordStore, entries: Iterable[bytes]) -> None:
    """Add the entries of cache lines (``"<id>":<record JSON>``, no separator) to the store, each checked by
    a JSON parse; an entry's own JSON is kept as it is.  ValueError for a line that is no entry."""
    held, names = store._held, store.names
    for entry in entries:
        # the key ends at the first '":' unless it holds an escaped character
        end = entry.find(b'":')
        value: bytes | None
        if entry[:1] == b'"' and end > 0 and b"\\" not in entry[:end]:
            key = _json.loads(entry[:end + 1])
            value = entry[end + 2:]
            record = _json.loads(value)  # checks the depth, as every read of the archive's JSON
        else:
            parsed = _json.loads(b"{" + entry + b"}")
            if not isinstance(parsed, dict) or len(parsed) != 1:
                raise ValueError("an image cache line that is not one entry")
            ((key, record),) = parsed.items()
            prefix = _json.dumps(key) + b":"
            # the line's own JSON where it starts with the key as written here, else the record written again
            value = entry[len(prefix):] if entry.startswith(prefix) else None
        if not isinstance(record, dict):
            continue
        held[key] = value if value is not None else encode(record, checked=True)
        name = record.get("name")
        if type(name) is str and name:
            names[name] = key
