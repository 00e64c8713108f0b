"""The v2 archive's search language: one parser (pyparsing, as the archive's own) and its evaluator.

The archive parses queries with pyparsing (``isic/core/dsl.py`` in
``ImageMarkup/isic``); this module builds the same grammar with the same
library, so a query the archive refuses is refused here and one it accepts
means the same thing.  The local archive answers searches with it, and the
client uses it to check queries and to search records offline.

Grammar::

    query  := expr                         (empty or blank: every image)
    expr   := terms (("AND" | "OR") terms)*  with AND binding tighter than OR,
              and "(" expr ")" anywhere a term may stand
    terms  := term+                        (adjacent terms are ANDed)
    term   := ["-"] field ":" value        (a leading "-" negates the term)
    value  := string | number | boolean    (by the field's type)
    string := word | '"' text '"'          (word: letters, digits, "*", "_", "-")
    number := a number | "*" | range
    range  := ("[" | "{") (number | "*") "TO" (number | "*") ("]" | "}")
    boolean:= "true" | "false" | "*"

Meaning, as the archive's database query:

- ``*`` alone: the field has a value; ``-field:*``: it has none.
- Strings: exact and case-sensitive; ``abc*`` starts with, ``*abc`` ends
  with.  ``image_type:clinical`` means ``"clinical: close-up"`` and
  ``image_type:overview`` ``"clinical: overview"``.
- Ranges: ``[`` and ``]`` include their end, ``{`` and ``}`` exclude it; an
  end of ``*`` is open; ``[* TO *]`` is "has a value".
- A negated term also matches records without the field.  (``-field:*abc``
  means "does not start with abc", as the archive's database query has it.)
- ``AND``, ``OR`` and ``TO`` are upper case; there is no ``NOT`` (negate with
  ``-``).  ``isic_id:(A OR B)`` is not a query: write ``isic_id:A OR
  isic_id:B``.

Fields are the archive's reserved ones (``isic_id``, ``public``,
``age_approx``, ``copyright_license``) and the searchable fields of the
metadata registry (``isic-metadata``); :data:`FIELDS` lists them with their
types.  Anything else raises :class:`~isicarchive.errors.QueryError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .errors import QueryError

if TYPE_CHECKING:  # pyparsing is imported when the first query is parsed: `import isicarchive` stays quick
    import pyparsing as pp

__all__ = ["DECIMAL_FIELDS", "FIELDS", "Node", "Term", "as_number", "column_mask", "compile_query", "decimal_text",
           "field_value", "matches", "parse", "select"]

STRING, NUMBER, BOOLEAN = "string", "number", "boolean"

#: every searchable field → its type: the reserved fields, then isic-metadata's registry (6.x)
FIELDS: dict[str, str] = {
    "isic_id": STRING, "public": BOOLEAN, "age_approx": NUMBER, "copyright_license": STRING,
    # isic-metadata 6.1 (tests/test_metadata_schema.py checks this list against the installed package)
    **dict.fromkeys(["personal_hx_mm", "family_hx_mm", "melanocytic", "mel_ulcer", "concomitant_biopsy"], BOOLEAN),
    **dict.fromkeys(["sex", "diagnosis_confirm_type", "image_type", "dermoscopic_type", "tbp_tile_type",
                     "mel_mitotic_index", "anatom_site_special", "patient_id", "lesion_id", "rcm_case_id",
                     "image_manipulation", "fitzpatrick_skin_type"], STRING),
    **dict.fromkeys([f"diagnosis_{n}" for n in range(1, 6)], STRING),
    **dict.fromkeys([f"anatom_site_{n}" for n in range(1, 6)], STRING),
    "clin_size_long_diam_mm": NUMBER, "mel_thick_mm": NUMBER,
}
#: the number fields the archive keeps as decimals (``DecimalField(max_digits=5, decimal_places=2)`` in
#: isic/ingest/models/accession.py) and sends as JSON strings such as ``"24.10"``
DECIMAL_FIELDS = frozenset({"clin_size_long_diam_mm", "mel_thick_mm"})
#: fields of the image itself; the rest live in its metadata
TOP_LEVEL = frozenset({"isic_id", "public", "copyright_license"})
#: the archive reads these short image types as the full ones
IMAGE_TYPE_ALIASES = {"clinical": "clinical: close-up", "overview": "clinical: overview"}
#: the body of the archive's answer to any query it cannot parse (HTTP 400)
PARSE_ERROR_BODY = {"message": "Could not parse search query."}


@dataclass(frozen=True)
class Term:
    """``[-]field:value``.

    ``kind`` is ``eq``, ``prefix``, ``suffix``, ``range`` (``value`` is
    ``(low, high)``, None for an open end) or ``exists``.
    """

    field: str
    kind: str
    value: Any = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    negated: bool = False


Node = Term | tuple  # ("and", [nodes]) | ("or", [nodes]) | ("all",)


# ------------------------------------------------------------------ grammar
def _string_term(field: str, negated: bool, text: str) -> Term:
    if field == "image_type":
        text = IMAGE_TYPE_ALIASES.get(text, text)
    if text == "*":
        return Term(field, "exists", negated=negated)
    if text.startswith("*"):
        return Term(field, "suffix", text[1:], negated=negated)
    if text.endswith("*"):
        return Term(field, "prefix", text[:-1], negated=negated)
    return Term(field, "eq", text, negated=negated)


def _number_term(field: str, negated: bool, tokens: list) -> Term:
    if len(tokens) == 1:
        value = tokens[0]
        return Term(field, "exists", negated=negated) if value == "*" else Term(field, "eq", value, negated=negated)
    opening, low, high, closing = tokens
    low = None if low == "*" else low
    high = None if high == "*" else high
    if low is None and high is None:
        return Term(field, "exists", negated=negated)
    return Term(field, "range", (low, high), opening == "[", closing == "]", negated)


def _boolean_term(field: str, negated: bool, text: str) -> Term:
    if text == "*":
        return Term(field, "exists", negated=negated)
    return Term(field, "eq", text == "true", negated=negated)


@dataclass(frozen=True)
class _Op:
    """AND/OR while parsing (pyparsing would splice a returned tuple or list into its tokens)."""

    op: str
    children: tuple


def _and(tokens: pp.ParseResults) -> Any:
    import pyparsing as pp

    parts = list(tokens[0]) if isinstance(tokens[0], pp.ParseResults) else list(tokens)
    return parts[0] if len(parts) == 1 else _Op("and", tuple(parts))


def _or(tokens: pp.ParseResults) -> Any:
    return _Op("or", tuple(tokens[0]))


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z0-9*_-]+")


#: characters of the longest number a query may hold
_LONGEST_NUMBER = 64


def _number(text: str, loc: int, source: str) -> Any:
    import pyparsing as pp

    if text == "*":
        return "*"
    if not _NUMBER.fullmatch(text):
        raise pp.ParseException(source, loc, f"not a number: {text!r}")
    if len(text) > _LONGEST_NUMBER:
        # Python refuses to read integers of over 4,300 digits (a ValueError); no field holds such a number
        raise pp.ParseFatalException(source, loc, f"a number of {len(text)} characters is longer than any field holds")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _term(source: str, loc: int, tokens: pp.ParseResults) -> Term:
    """``[-]field:value`` → Term, refusing a value of the wrong kind for the field (as the archive's grammar)."""
    import pyparsing as pp

    negated = bool(tokens.get("negated"))
    field = tokens["field"]
    kind = FIELDS[field]
    value = tokens["value"]
    if "range" in value:
        opening, low, high, closing = value["range"]
        if kind != NUMBER:
            raise pp.ParseException(source, loc, f"{field} takes no range")
        return _number_term(field, negated, [opening, _number(low, loc, source), _number(high, loc, source), closing])
    quoted = "quoted" in value
    text = value["quoted"] if quoted else value["word"]
    if kind == STRING:
        if not quoted and not _WORD.fullmatch(text):
            raise pp.ParseException(source, loc, f"{field} takes a word or a quoted value")
        return _string_term(field, negated, text)
    if quoted:
        raise pp.ParseException(source, loc, f"{field} takes no quoted value")
    if kind == NUMBER:
        return _number_term(field, negated, [_number(text, loc, source)])
    if text not in ("true", "false", "*"):
        raise pp.ParseException(source, loc, f"{field} takes true, false or *")
    return _boolean_term(field, negated, text)


@lru_cache(maxsize=1)
def _grammar() -> pp.ParserElement:
    """The archive's grammar (``make_parser`` in isic/core/dsl.py), with one term rule for all fields.

    The archive builds a rule per field and lets ``Or`` try each of them; here
    the field name is read once and the value's kind checked against it,
    which accepts and refuses the same queries about twenty times faster (a
    search for 100 ids is parsed in milliseconds, not a tenth of a second).
    """
    import pyparsing as pp

    pp.ParserElement.enable_packrat(cache_size_limit=2_000)
    # a value token wide enough for every kind (numbers have '.', '+', 'e'); its kind is checked in _term
    bound = pp.Word(pp.alphanums + "*_-.+")
    number_range = pp.Group(pp.one_of("[ {") + bound + pp.Suppress(pp.Literal("TO")) + bound + pp.one_of("] }"))
    value = pp.Group(number_range("range") | pp.QuotedString('"')("quoted") | bound("word"))
    field = pp.one_of(list(FIELDS), as_keyword=True)
    term = (pp.Opt("-")("negated") + field("field") + pp.Suppress(":") + value("value")).set_parse_action(_term)
    terms = pp.OneOrMore(term).set_parse_action(_and)
    return pp.infix_notation(terms, [(pp.Suppress(pp.Keyword("AND")), 2, pp.OpAssoc.LEFT, _and),
                                     (pp.Suppress(pp.Keyword("OR")), 2, pp.OpAssoc.LEFT, _or)])


def parse(query: str) -> Node:
    """Parse a search query into a tree.

    Raises
    ------
    QueryError
        The archive would answer 400 ("Could not parse search query."); the
        message says what is wrong and where.
    """
    if not isinstance(query, str):
        raise QueryError(f"a search query is a string, not {type(query).__name__}")
    text = query.strip()
    if not text:
        return ("all",)
    return _parse_cached(text)


@lru_cache(maxsize=1_000)
def _parse_cached(text: str) -> Node:
    import pyparsing as pp

    try:
        return _flatten(_grammar().parse_string(text, parse_all=True)[0])
    except pp.ParseBaseException as exc:
        raise QueryError(_explain(text, exc)) from None
    except RecursionError:
        raise QueryError(f"search query {text[:60]!r}…: nested too deeply") from None


def _flatten(node: Any) -> Node:
    """The parse as plain tuples, nested ANDs and ORs merged (``a AND (b AND c)`` is one AND of three)."""
    if isinstance(node, Term):
        return node
    merged: list[Node] = []
    for child in map(_flatten, node.children):
        if isinstance(child, tuple) and child[0] == node.op:
            merged.extend(child[1])
        else:
            merged.append(child)
    return merged[0] if len(merged) == 1 else (node.op, merged)


_FIELD_NAME = re.compile(r'"[^"]*"|(?:^|(?<=[\s(]))-?([A-Za-z_][A-Za-z0-9_]*)\s*:')
_TERM_TEXT = re.compile(r'(?:^|(?<=[\s(]))-?([A-Za-z_][A-Za-z0-9_]*)\s*:\s*("[^"]*"|[\[{][^\]}]*[\]}]?|[^\s()]*)')
_NUMBER_TEXT = r"(\*|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)"
_VALUE_SHAPES = {
    NUMBER: (re.compile(rf"{_NUMBER_TEXT}|[\[{{]\s*{_NUMBER_TEXT}\s+TO\s+{_NUMBER_TEXT}\s*[\]}}]"),
             "takes a number, '*' or a range such as [50 TO *]"),
    BOOLEAN: (re.compile(r"true|false|\*"), "takes true, false or '*'"),
    STRING: (re.compile(r'[A-Za-z0-9*_-]+|"[^"]*"'),
             "takes a word of letters, digits, '*', '_' and '-', or a \"quoted value\""),
}


def _explain(text: str, exc: pp.ParseBaseException) -> str:
    """One line saying what in ``text`` the grammar refused (pyparsing's own message lists every field)."""
    head = f"invalid search query {text!r}"
    for match in _FIELD_NAME.finditer(text):
        name = match.group(1)
        if name and name not in FIELDS:
            return f"{head}: {name!r} is not a searchable field (searchable: {', '.join(sorted(FIELDS))})"
    if re.search(r"(^|[\s(])NOT(?=[\s(])", text):
        return f"{head}: there is no NOT; negate a term with a leading '-' (for example -sex:male)"
    if re.search(r"(^|[\s(])(and|or)(?=[\s(])|\sto\s", text):
        return f"{head}: AND, OR and TO are written in upper case"
    if text.count('"') % 2:
        return f"{head}: a quoted value is not closed"
    if re.search(r":\s*\(", text):
        return f"{head}: a value cannot be a list in parentheses; write isic_id:A OR isic_id:B"
    for match in _TERM_TEXT.finditer(text):
        name, value = match.groups()
        shape, needs = _VALUE_SHAPES[FIELDS[name]]
        if not shape.fullmatch(value):
            return f"{head}: {name} {needs}, not {value!r}"
    detail = exc.msg if len(exc.msg) < 60 else "unexpected text"
    return f"{head}: cannot read it at position {exc.loc} ({detail}); terms are field:value, joined by AND, OR"


# --------------------------------------------------------------- evaluation
def field_value(record: dict, field: str) -> Any:
    """A v2 record's value for a search field (None when absent)."""
    if field in TOP_LEVEL:
        return record.get(field)
    metadata = record.get("metadata") or {}
    for section in ("clinical", "acquisition"):
        values = metadata.get(section) or {}
        if field in values:
            return values[field]
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def decimal_text(value: Any) -> str | None:
    """A decimal field's value as the archive writes it: two places, ``24.1`` → ``"24.10"`` (``str`` of the
    ``Decimal`` its database column gives back); None for what is no number."""
    from decimal import Decimal

    number = as_number(value)
    if number is None:
        return None
    return str(Decimal(str(number)).quantize(Decimal("0.01")))


def as_number(value: Any) -> int | float | None:
    """A number field's value as a number, or None.

    The archive keeps ``clin_size_long_diam_mm`` and ``mel_thick_mm`` in
    decimal columns and sends them as JSON strings (``"24.10"``); its search
    compares them as numbers, and so does this module.  Other text is no
    number (None), nor is a boolean.
    """
    if _is_number(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return None


def _positive_test(term: Term) -> Callable[[Any], bool]:
    """The term's test of a present value (a missing value never passes it)."""
    kind, wanted = term.kind, term.value
    if kind == "exists":
        return lambda value: True
    if kind == "range":
        low, high = wanted
        lo_ok: Callable[[Any], bool] = (
            (lambda v: True) if low is None else (lambda v: v >= low) if term.low_inclusive else (lambda v: v > low))
        hi_ok: Callable[[Any], bool] = (
            (lambda v: True) if high is None else (lambda v: v <= high) if term.high_inclusive
            else (lambda v: v < high))
        return lambda value: (number := as_number(value)) is not None and lo_ok(number) and hi_ok(number)
    if kind == "prefix":
        return lambda value: isinstance(value, str) and value.startswith(wanted)
    if kind == "suffix":
        return lambda value: isinstance(value, str) and value.endswith(wanted)
    if FIELDS[term.field] == BOOLEAN:
        return lambda value: value is wanted
    if FIELDS[term.field] == NUMBER:
        return lambda value: (number := as_number(value)) is not None and number == wanted
    return lambda value: value == wanted


def _term_predicate(term: Term) -> Callable[[dict], bool]:
    field = term.field
    if not term.negated:
        test = _positive_test(term)
        return lambda record: (value := field_value(record, field)) is not None and test(value)
    if term.kind == "suffix":
        # the archive's database query negates "ends with" as "does not start with"
        term = Term(term.field, "prefix", term.value)
    test = _positive_test(term)
    if term.kind == "exists":
        return lambda record: field_value(record, field) is None
    return lambda record: (value := field_value(record, field)) is None or not test(value)


def _membership(terms: list[Term]) -> Callable[[dict], bool] | None:
    """``f:a OR f:b OR …`` (plain equalities on one string field) as one set look-up."""
    field = terms[0].field
    if FIELDS[field] != STRING or any(t.field != field or t.kind != "eq" or t.negated for t in terms):
        return None
    wanted = frozenset(t.value for t in terms)
    return lambda record: field_value(record, field) in wanted


def compile_query(node: Node) -> Callable[[dict], bool]:
    """A parsed query as a function of a v2 record (evaluate many records with one compile)."""
    if isinstance(node, Term):
        return _term_predicate(node)
    op = node[0]
    if op == "all":
        return lambda record: True
    children = node[1]
    if op == "or" and all(isinstance(c, Term) for c in children):
        fast = _membership(children)
        if fast is not None:
            return fast
    predicates = [compile_query(child) for child in children]
    if op == "and":
        return lambda record: all(p(record) for p in predicates)
    return lambda record: any(p(record) for p in predicates)


def matches(node: Node, record: dict) -> bool:
    """Whether a v2 record satisfies a parsed query (compile once for many records)."""
    return compile_query(node)(record)


def select(query: str, records: Iterable[dict]) -> list[dict]:
    """Records matching ``query``."""
    predicate = compile_query(parse(query))
    return [r for r in records if predicate(r)]


# ------------------------------------------------------ columnar evaluation
def column_mask(node: Node, column: Callable[[str], Any], length: int) -> Any:
    """Which rows of a columnar table a parsed query selects: a ``pyarrow`` boolean array.

    ``column(field)`` gives the field's ``pyarrow`` array (None when the table
    has no such column).  The meaning is :func:`compile_query`'s, term for
    term — a missing value never passes a test, and a negated term also
    selects rows without the field — evaluated a column at a time, so a query
    over hundreds of thousands of rows takes milliseconds.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    def visit(item: Node) -> Any:
        if isinstance(item, Term):
            return _term_mask(item, column(item.field), length, pa, pc)
        if item[0] == "all":
            return pa.repeat(True, length)
        masks = [visit(child) for child in item[1]]
        combine = pc.and_ if item[0] == "and" else pc.or_
        out = masks[0]
        for mask in masks[1:]:
            out = combine(out, mask)
        return out

    return visit(node)


def _term_mask(term: Term, values: Any, length: int, pa: Any, pc: Any) -> Any:
    if values is None:
        values = pa.nulls(length)
    if term.negated:
        if term.kind == "exists":
            return pc.is_null(values)
        positive = Term(term.field, "prefix" if term.kind == "suffix" else term.kind, term.value,
                        term.low_inclusive, term.high_inclusive)
        return pc.invert(_positive_mask(positive, values, length, pa, pc))
    return _positive_mask(term, values, length, pa, pc)


def _positive_mask(term: Term, values: Any, length: int, pa: Any, pc: Any) -> Any:
    """Rows with a value that passes the term (never a null)."""
    kind, wanted, dtype = term.kind, term.value, values.type
    numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
    text = pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    if text and FIELDS[term.field] == NUMBER and kind != "exists":
        # decimals as the archive sends them ("24.10"): compared as numbers, as its search does
        try:
            values = pc.cast(pc.utf8_trim_whitespace(values), pa.float64())
            dtype, numeric, text = values.type, True, False
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    if kind == "exists":
        mask = pc.is_valid(values)
    elif kind == "range":
        if not numeric:
            return pa.repeat(False, length)
        low, high = wanted
        mask = pc.is_valid(values)
        if low is not None:
            mask = pc.and_(mask, (pc.greater_equal if term.low_inclusive else pc.greater)(values, low))
        if high is not None:
            mask = pc.and_(mask, (pc.less_equal if term.high_inclusive else pc.less)(values, high))
    elif kind in ("prefix", "suffix"):
        if not text:
            return pa.repeat(False, length)
        mask = (pc.starts_with if kind == "prefix" else pc.ends_with)(values, wanted)
    elif FIELDS[term.field] == BOOLEAN:
        if not pa.types.is_boolean(dtype):
            return pa.repeat(False, length)
        mask = pc.equal(values, wanted)
    elif FIELDS[term.field] == NUMBER:
        if not numeric:
            return pa.repeat(False, length)
        mask = pc.equal(values, wanted)
    else:
        if not text:
            return pa.repeat(False, length)
        mask = pc.equal(values, wanted)
    return pc.fill_null(mask, False)
