"""The v2 archive's search language: a recursive-descent parser and an evaluator.

Grammar (``AND`` binds tighter than ``OR``; adjacent terms are ANDed)::

    query    := [or_expr]
    or_expr  := and_expr ("OR" and_expr)*
    and_expr := not_expr (["AND"] not_expr)*
    not_expr := "NOT" not_expr | primary
    primary  := "(" or_expr ")" | field ":" value
    value    := range | '"' text '"' | word
    range    := ("[" | "{") number "TO" number ("]" | "}")

``[a TO b]`` includes its ends, ``{a TO b}`` excludes them (mixed brackets
mix).  A string value with a leading ``*`` matches the end of the field, a
trailing ``*`` its start (as the archive does); otherwise strings match
exactly and case-sensitively.  Booleans are ``true``/``false``.  A record
without the field never matches a term (``NOT`` of such a term does).
Unknown fields, values of the wrong type and syntax errors raise
:class:`~isicarchive.errors.QueryError` saying where.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import QueryError

__all__ = ["FIELDS", "Node", "Term", "field_value", "matches", "parse"]

STRING, NUMBER, BOOLEAN = "string", "number", "boolean"
FIELDS: dict[str, str] = {
    "isic_id": STRING, "public": BOOLEAN, "copyright_license": STRING, "attribution": STRING,
    "age_approx": NUMBER, "sex": STRING, "anatom_site_general": STRING, "anatom_site_special": STRING,
    "diagnosis_1": STRING, "diagnosis_2": STRING, "diagnosis_3": STRING, "diagnosis_4": STRING,
    "diagnosis_5": STRING, "diagnosis_confirm_type": STRING, "personal_hx_mm": BOOLEAN,
    "family_hx_mm": BOOLEAN, "clin_size_long_diam_mm": NUMBER, "melanocytic": BOOLEAN,
    "acquisition_day": NUMBER, "image_type": STRING, "dermoscopic_type": STRING, "nevus_type": STRING,
    "mel_class": STRING, "mel_mitotic_index": STRING, "mel_thick_mm": NUMBER, "mel_type": STRING,
    "mel_ulcer": BOOLEAN, "marker_pen": BOOLEAN, "hairy": BOOLEAN, "blurry": BOOLEAN, "color_tint": STRING,
}
_TOP_LEVEL = {"isic_id", "public", "copyright_license", "attribution"}
_TOKEN = re.compile(r'\s*(?:(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<punct>[():\[\]{}])|(?P<word>[^\s():\[\]{}"]+))')


@dataclass(frozen=True)
class Term:
    """``field:value``; ``kind`` is eq, prefix, suffix or range."""

    field: str
    kind: str
    value: Any
    low_inclusive: bool = True
    high_inclusive: bool = True


Node = Term | tuple  # ("and", [nodes]) | ("or", [nodes]) | ("not", node) | ("all",)


def _tokens(query: str) -> list[tuple[str, str, int]]:
    out = []
    position = 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            if query[position:].strip() == "":
                break
            raise QueryError(f"search query: unexpected character {query[position]!r} at position {position}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    return out


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _tokens(query)
        self.at = 0

    def error(self, message: str) -> QueryError:
        where = self.tokens[self.at][2] if self.at < len(self.tokens) else len(self.query)
        return QueryError(f"invalid search query {self.query!r}: {message} at position {where}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, text: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.error(f"expected {text!r}, found the end" if text else "unexpected end")
        if text is not None and token[1] != text:
            raise self.error(f"expected {text!r}, found {token[1]!r}")
        self.at += 1
        return token

    def is_word(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1] == text

    def parse(self) -> Node:
        if not self.tokens:
            return ("all",)
        node = self.or_expr()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.is_word("OR"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def and_expr(self) -> Node:
        parts = [self.not_expr()]
        while True:
            token = self.peek()
            if self.is_word("AND"):
                self.take()
                parts.append(self.not_expr())
            elif token is not None and not self.is_word("OR") and token[1] != ")":
                parts.append(self.not_expr())  # adjacent terms: implicit AND
            else:
                break
        return parts[0] if len(parts) == 1 else ("and", parts)

    def not_expr(self) -> Node:
        if self.is_word("NOT"):
            self.take()
            return ("not", self.not_expr())
        return self.primary()

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.error("expected a term")
        if token[1] == "(":
            self.take("(")
            node = self.or_expr()
            self.take(")")
            return node
        if token[0] != "word" or token[1] in ("AND", "OR", "TO"):
            raise self.error(f"expected field:value, found {token[1]!r}")
        field = self.take()[1]
        if field not in FIELDS:
            raise self.error(f"unknown search field {field!r} (searchable: {', '.join(sorted(FIELDS))})")
        self.take(":")
        return self.value(field, FIELDS[field])

    def value(self, field: str, kind: str) -> Term:
        token = self.peek()
        if token is None:
            raise self.error(f"{field}: expected a value")
        if token[1] in ("[", "{"):
            if kind != NUMBER:
                raise self.error(f"{field} is not numeric; ranges need a numeric field")
            low_inclusive = self.take()[1] == "["
            low = self.number(field)
            if not self.is_word("TO"):
                raise self.error("expected TO in a range")
            self.take()
            high = self.number(field)
            closing = self.take()
            if closing[1] not in ("]", "}"):
                raise self.error("expected ] or } to close the range")
            return Term(field, "range", (low, high), low_inclusive, closing[1] == "]")
        if token[0] == "quoted":
            text = re.sub(r"\\(.)", r"\1", self.take()[1][1:-1])
        elif token[0] == "word":
            text = self.take()[1]
        else:
            raise self.error(f"{field}: expected a value, found {token[1]!r}")
        if kind == BOOLEAN:
            if text not in ("true", "false"):
                raise self.error(f"{field} takes true or false, not {text!r}")
            return Term(field, "eq", text == "true")
        if kind == NUMBER:
            return Term(field, "eq", self._to_number(field, text))
        if text.startswith("*"):
            return Term(field, "suffix", text[1:])
        if text.endswith("*"):
            return Term(field, "prefix", text[:-1])
        return Term(field, "eq", text)

    def number(self, field: str) -> float:
        token = self.take()
        return self._to_number(field, token[1])

    def _to_number(self, field: str, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise self.error(f"{field} is numeric; {text!r} is not a number") from None


def parse(query: str) -> Node:
    """Parse a search query into a tree (raises QueryError)."""
    if not isinstance(query, str):
        raise QueryError(f"a search query is a string, not {type(query).__name__}")
    return _Parser(query).parse()


def field_value(record: dict, field: str) -> Any:
    """A v2 record's value for a search field (None when absent)."""
    if field in _TOP_LEVEL:
        return record.get(field)
    metadata = record.get("metadata") or {}
    for section in ("clinical", "acquisition"):
        values = metadata.get(section) or {}
        if field in values:
            return values[field]
    return None


def _term_matches(term: Term, value: Any) -> bool:
    if value is None:
        return False
    kind = FIELDS[term.field]
    if kind == BOOLEAN:
        return value is term.value
    if kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if term.kind == "range":
            low, high = term.value
            above = value >= low if term.low_inclusive else value > low
            below = value <= high if term.high_inclusive else value < high
            return above and below
        return value == term.value
    if not isinstance(value, str):
        return False
    if term.kind == "prefix":
        return value.startswith(term.value)
    if term.kind == "suffix":
        return value.endswith(term.value)
    return value == term.value


def matches(node: Node, record: dict) -> bool:
    """Whether a v2 record satisfies a parsed query."""
    if isinstance(node, Term):
        return _term_matches(node, field_value(record, node.field))
    op = node[0]
    if op == "all":
        return True
    if op == "not":
        return not matches(node[1], record)
    if op == "and":
        return all(matches(child, record) for child in node[1])
    return any(matches(child, record) for child in node[1])


def select(query: str, records: Iterable[dict]) -> list[dict]:
    """Records matching ``query``."""
    tree = parse(query)
    return [r for r in records if matches(tree, r)]
