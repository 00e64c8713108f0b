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
import datetime as _dt
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

from .server import ApiError, Request, Response

__all__ = ["MAX_LIMIT", "Descending", "by_created", "descending_datetime_position", "django_datetime_position",
           "invalid", "invalid_cursor", "paginate", "path_int", "pydantic_int", "query_bool", "query_int",
           "query_int_list"]

MAX_LIMIT = 100
OFFSET_CUTOFF = 100


def invalid(field: str, kind: str, message: str, ctx: dict[str, Any] | None = None,
            where: str = "query") -> ApiError:
    """django-ninja's 422 for one parameter: pydantic's error with ``input`` and ``url`` dropped
    (``NinjaAPI.validation_error_from_error_contexts``), ``ctx`` kept where pydantic gives one."""
    item: dict[str, Any] = {"type": kind, "loc": [where, field], "msg": message}
    if ctx is not None:
        item["ctx"] = ctx
    return ApiError(422, message, payload={"detail": [item]})


_PYDANTIC_INT = re.compile(r"\s*([+-]?\d+(?:_\d+)*)(?:\.0+)?\s*")


def pydantic_int(text: str) -> int | None:
    """A string as pydantic (lax mode) reads an ``int``: ``" 5 "``, ``"+5"``, ``"5_0"`` and ``"5.0"`` are
    numbers; ``""``, ``"5."``, ``"5.5"`` and ``"1e2"`` are not (None)."""
    match = _PYDANTIC_INT.fullmatch(text)
    return int(match.group(1)) if match else None


def query_int(req: Request, name: str, where: str = "query") -> int | None:
    """An ``int | None`` parameter: absent is None; present, even empty, it must parse (pydantic's rule)."""
    text = req.arg(name)
    if text is None:
        return None
    number = pydantic_int(text)
    if number is None:
        raise invalid(name, "int_parsing", "Input should be a valid integer, unable to parse string as an integer",
                      where=where)
    return number


def path_int(text: str, name: str = "id") -> int:
    """An ``id: int`` path parameter: django-ninja's ``{id}`` matches any segment, pydantic then reads it
    (``5.0`` is 5; ``abc`` is a 422 at ``["path", "id"]``, never Django's HTML 404)."""
    number = pydantic_int(text)
    if number is None:
        raise invalid(name, "int_parsing", "Input should be a valid integer, unable to parse string as an integer",
                      where="path")
    return number


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
    """``collections`` as ``SearchQueryIn.collections_to_list`` (isic/core/serializers.py) reads it.

    django-ninja hands a list field every value (``getlist``): one value is
    split at commas (``1,2,3``; empty: no filter), several are each an
    integer (``collections=1&collections=2``).
    """
    values = req.multi_query.get(name) or ([req.query[name]] if name in req.query else [])
    if not values:
        return None
    if len(values) == 1:
        if not values[0]:
            return None
        try:
            return [int(part) for part in values[0].split(",")]
        except ValueError as exc:
            raise invalid(name, "value_error", f"Value error, {exc}", {"error": str(exc)}) from None
    numbers = []
    for index, value in enumerate(values):
        number = pydantic_int(value)
        if number is None:
            raise ApiError(422, "int_parsing", payload={"detail": [{
                "type": "int_parsing", "loc": ["query", name, index],
                "msg": "Input should be a valid integer, unable to parse string as an integer"}]})
        numbers.append(number)
    return numbers


@functools.total_ordering
class Descending:
    """A key of a ``-field`` ordering (``CursorPagination.default_ordering = ("-created",)``): sorts in
    reverse, so a listing newest first still has ascending keys, and its position is ``str`` of the value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: Descending) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return str(self.value)


def by_created(items: Sequence[Any], created: Callable[[Any], str], *, newest_first: bool = True
               ) -> tuple[list[Any], list[Any]]:
    """``items`` in a ``created`` ordering (newest first: the paginator's default ``-created``) and their keys."""
    keyed = sorted(((_dt.datetime.fromisoformat(created(item)), n, item) for n, item in enumerate(items)),
                   key=lambda k: (k[0], k[1]), reverse=newest_first)
    wrap: Callable[[Any], Any] = Descending if newest_first else (lambda value: value)
    return [item for _, _, item in keyed], [wrap(moment) for moment, _, _ in keyed]


def descending_datetime_position(text: str) -> Descending:
    return Descending(django_datetime_position(text))


def invalid_cursor() -> ApiError:
    """A cursor position that is not of its ordering field's type (``_apply_ordering``, isic/core/pagination.py
    and isic/core/api/image.py): a NinjaValidationError written by hand, so ``loc`` and ``msg`` only."""
    return ApiError(422, "Invalid cursor.", payload={"detail": [{"loc": ["query", "cursor"],
                                                                 "msg": "Value error, Invalid cursor."}]})


def _cursor(req: Request) -> tuple[int, bool, str | None]:
    """``CursorPagination.Input.decode_cursor``: a cursor that does not decode is pydantic's value error."""
    text = req.arg("cursor")
    if text is None:
        return 0, False, None
    try:
        tokens = parse_qs(base64.b64decode(text.encode(), validate=False).decode(), keep_blank_values=True)
        offset = max(0, min(int(tokens.get("o", ["0"])[0]), OFFSET_CUTOFF))
        reverse = bool(int(tokens.get("r", ["0"])[0]))
        position = tokens.get("p", [None])[0]
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid("cursor", "value_error", "Value error, Invalid cursor.", {"error": "Invalid cursor."}) \
            from None
    return offset, reverse, position


def django_datetime_position(text: str) -> _dt.datetime:
    """A cursor position on ``created`` as ``DateTimeField.to_python`` reads it (ValueError otherwise):
    ISO 8601 with ``T`` or a space, or a date alone (its midnight); naive ones are taken as UTC."""
    try:
        moment = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        day = _dt.date.fromisoformat(text.strip())
        moment = _dt.datetime(day.year, day.month, day.day)
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def _link(req: Request, offset: int, reverse: bool, position: Any) -> str:
    tokens = {}
    if offset:
        tokens["o"] = str(offset)
    if reverse:
        tokens["r"] = "1"
    if position is not None:
        tokens["p"] = str(position)
    cursor = base64.b64encode(urlencode(tokens).encode()).decode()
    # _replace_query_param (isic/core/pagination.py): every other parameter kept, repeated ones too, sorted
    query = sorted({**(req.multi_query or {k: [v] for k, v in req.query.items()}), "cursor": [cursor]}.items())
    return f"{req.base_url}{req.path}?{urlencode(query, doseq=True)}"


def paginate(req: Request, items: Sequence[Any], render: Callable[[Any], dict], keys: Sequence[Any], *,
             parse: Callable[[str], Any] | None = None, counted: bool = False) -> Response:
    """One page of ``items``, ordered so that ``keys``, their positions, ascend.

    ``parse`` reads a cursor's position into a key (ValueError: the
    archive's 422 for a position of the wrong type); by default keys are the
    positions' text.  A key's position is ``str(key)``, as
    ``_get_position_from_instance``.  ``counted``: the listing has a
    ``custom_count`` (lesions), so every page carries ``count``.
    """
    limit = query_int(req, "limit")
    limit = max(0, min(limit or MAX_LIMIT, MAX_LIMIT))
    offset, reverse, text = _cursor(req)
    position: Any = text
    if text is not None and parse is not None:
        try:
            position = parse(text)
        except ValueError:
            raise invalid_cursor() from None
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
        "count": len(items) if position is None or counted else None,
        "next": next_link,
        "previous": previous_link,
        "results": [render(item) for item in page],
    })


def _next_link(req: Request, keys: Sequence[Any], start: int, end: int, offset: int, position: Any) -> str:
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
