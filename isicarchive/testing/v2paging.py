"""Paging and parameter validation of the local archive's v2 API, as the real archive does it.

The archive pages with keyset cursors (``isic/core/pagination.py``): a cursor
is the base64 of a query string ``o=<offset>&r=<1 if reverse>&p=<position>``
where the position is the sort key of the last item seen, so a page follows
from "after this key" and stays right when images are added meanwhile.
``limit`` is clamped to 0..100 (0 or none: 100), ``count`` is given when the
cursor has no position.  Parameters that do not validate are django-ninja's
422 with a ``detail`` list.
"""

from __future__ import annotations

import base64
import bisect
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

from .server import ApiError, Request, Response

__all__ = ["MAX_LIMIT", "invalid", "paginate", "query_bool", "query_int", "query_int_list"]

MAX_LIMIT = 100
OFFSET_CUTOFF = 100


def invalid(field: str, kind: str, message: str) -> ApiError:
    """django-ninja's 422 for one query parameter."""
    return ApiError(422, message, payload={"detail": [{"type": kind, "loc": ["query", field], "msg": message}]})


def query_int(req: Request, name: str) -> int | None:
    text = req.arg(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise invalid(name, "int_parsing", "Input should be a valid integer, unable to parse string as an integer") \
            from None


def query_bool(req: Request, name: str) -> bool | None:
    text = req.arg(name)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("1", "true", "t", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "f", "no", "n", "off"):
        return False
    raise invalid(name, "bool_parsing", "Input should be a valid boolean, unable to interpret input")


def query_int_list(req: Request, name: str) -> list[int] | None:
    """``1,2,3`` as the archive's ``collections`` validator reads it."""
    text = req.arg(name)
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise invalid(name, "value_error", f"Value error, {exc}") from None


def _cursor(req: Request) -> tuple[int, bool, str | None]:
    text = req.arg("cursor")
    if text is None:
        return 0, False, None
    try:
        tokens = parse_qs(base64.b64decode(text.encode(), validate=False).decode(), keep_blank_values=True)
        offset = max(0, min(int(tokens.get("o", ["0"])[0]), OFFSET_CUTOFF))
        reverse = bool(int(tokens.get("r", ["0"])[0]))
        position = tokens.get("p", [None])[0]
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid("cursor", "value_error", "Value error, Invalid cursor.") from None
    return offset, reverse, position


def _link(req: Request, offset: int, reverse: bool, position: str | None) -> str:
    tokens = {}
    if offset:
        tokens["o"] = str(offset)
    if reverse:
        tokens["r"] = "1"
    if position is not None:
        tokens["p"] = position
    cursor = base64.b64encode(urlencode(tokens).encode()).decode()
    query = sorted({**req.query, "cursor": cursor}.items())
    return f"{req.base_url}{req.path}?{urlencode(query)}"


def paginate(req: Request, items: Sequence[Any], render: Callable[[Any], dict], keys: Sequence[str]) -> Response:
    """One page of ``items`` (ordered so that ``keys``, their positions, ascend)."""
    limit = query_int(req, "limit")
    limit = max(0, min(limit or MAX_LIMIT, MAX_LIMIT))
    offset, reverse, position = _cursor(req)
    if reverse:
        end = (bisect.bisect_left(keys, position) if position is not None else len(keys)) - offset
        end = max(0, end)
        start = max(0, end - limit)
        has_previous, has_next = start > 0, True
    else:
        start = (bisect.bisect_right(keys, position) if position is not None else 0) + offset
        end = min(len(items), start + limit)
        has_previous, has_next = position is not None or offset > 0, start + limit < len(items)
    page = items[start:end]
    next_link = previous_link = None
    if has_next and end < len(items):
        next_link = _next_link(req, keys, start, end, offset, position)
    if has_previous and page:
        previous_link = _link(req, 0, True, keys[start])
    return Response.json({
        "count": len(items) if position is None else None,
        "next": next_link,
        "previous": previous_link,
        "results": [render(item) for item in page],
    })


def _next_link(req: Request, keys: Sequence[str], start: int, end: int, offset: int, position: str | None) -> str:
    # the archive's marker: the last item of the page whose key differs from the next item's,
    # and how many items after it (tied with the next one) were already on this page
    compare = keys[end] if end < len(keys) else None
    skipped = 0
    for index in range(end - 1, start - 1, -1):
        if keys[index] != compare:
            return _link(req, skipped, False, keys[index])
        compare = keys[index]
        skipped += 1
    # every item of the page shares one key: move the offset on from the old marker
    return _link(req, offset + (end - start), False, position)
