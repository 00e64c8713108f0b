"""JSON with orjson when it is installed (3-10x faster on the image cache), json otherwise."""

from __future__ import annotations

from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but stay usable without it
    _orjson = None  # type: ignore[assignment]
    import json as _stdjson

__all__ = ["MAX_DEPTH", "TooDeep", "dumps", "loads"]

#: deepest nesting accepted (orjson's encoder limit): archive records are 4 levels deep; a
#: hostile answer hundreds deep would parse, then break recursive consumers and the cache's encoder
MAX_DEPTH = 254


class TooDeep(ValueError):
    """JSON nested deeper than :data:`MAX_DEPTH`."""


def loads(data: bytes | str, check_depth: bool = True) -> Any:
    """Decode JSON; raises ValueError on malformed input (:class:`TooDeep` for too deep).

    ``check_depth=False``: the caller checks the depth of what it keeps (a
    metadata sync encodes every record it keeps, which fails past
    :data:`MAX_DEPTH` levels), and orjson's own limit (1,024) still holds.
    """
    if _orjson is None:
        try:
            return _stdjson.loads(data)
        except RecursionError:
            raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    try:
        value = _orjson.loads(data)
    except _orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        raise
    if check_depth and isinstance(value, (dict, list)) and _may_nest(data):
        # orjson's encoder stops at MAX_DEPTH levels: the cheapest exact depth check there is
        # (a tenth of the parse), where a walk in Python would cost as much as the parse
        try:
            _orjson.dumps(value, option=_orjson.OPT_NON_STR_KEYS)
        except _orjson.JSONEncodeError:
            raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    return value


def dumps(obj: Any) -> bytes:
    """Encode to compact UTF-8 JSON bytes."""
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_NON_STR_KEYS)
    return _stdjson.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _may_nest(data: bytes | str) -> bool:
    """Whether JSON text could nest MAX_DEPTH levels: each level opens a bracket, so text with fewer
    (a record of the image cache: a few dozen) needs no other check."""
    if isinstance(data, str):
        return len(data) >= MAX_DEPTH and data.count("{") + data.count("[") >= MAX_DEPTH
    if isinstance(data, (bytes, bytearray)):
        return len(data) >= MAX_DEPTH and data.count(b"{") + data.count(b"[") >= MAX_DEPTH
    return True  # a buffer of another kind: checked the long way
