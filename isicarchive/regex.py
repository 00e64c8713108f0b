"""Regular expressions over a column of strings: RE2 (pyarrow) where its answer is Python's, ``re`` otherwise.

``select_images`` answers ``match``/``~`` with ``re.search(pattern, value)``.
Over a near-unique field of 400,000 records that is 400,000 calls into
Python's engine (a third of a second or more).  pyarrow's
``match_substring_regex`` runs Google's RE2 over the whole column at once,
but RE2 is a different dialect: ``$`` ignores a final newline, ``\\d`` and
``\\w`` are ASCII in RE2 and Unicode in Python, ``\\s`` differs even in
ASCII, and RE2 has no backreferences or lookarounds.

So the pattern is not handed to RE2 as written.  Python's own parser
(``re._parser``) reads it, and a new RE2 pattern is written from the parse
tree, node by node, with each node's Python meaning spelled out in RE2's
syntax.  Anything outside a short list of node kinds whose translation is
exact returns None, and the caller uses ``re`` (the documented fallback):

- backreferences, conditionals, lookahead and lookbehind, atomic groups and
  possessive repeats (RE2 has none of them);
- any flag (inline ``(?i)``, ``(?m)``, ``(?s)``, ``(?x)`` is fine as it only
  changes parsing; ``re.ASCII``, ``re.LOCALE``…), as case folding and line
  modes differ in small ways;
- ``\\d \\w \\s \\b \\B`` and their negations unless every string of the
  column is ASCII: there the class is written as the exact set of ASCII
  characters Python's ``re`` itself matches with it;
- ``$`` (end, or before a final newline) unless no string of the column ends
  with a newline: there it is RE2's ``\\z``;
- repeat counts above 1000 (RE2's limit) and patterns RE2 refuses to compile
  (its program size limit).

A compiled ``re.Pattern`` is read the same way (its flags must be the
default).  Without pyarrow everything runs on ``re``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see ._lazy)


try:  # the parser of Python's own engine: the tree gives each construct's exact meaning
    import re._constants as _sre  # type: ignore[import-not-found,unused-ignore]
    import re._parser as _sre_parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - Python 3.10 and earlier named them sre_*
    _sre = None
    _sre_parse = None

#: RE2's limit on a counted repeat
_RE2_MAX_REPEAT = 1000
_ASCII = [chr(c) for c in range(128)]


class _Untranslatable(Exception):
    """The pattern uses something RE2 lacks or means differently."""


def _char(code: int) -> str:
    """One code point as an RE2 escape (valid inside and outside a class)."""
    return f"\\x{{{code:x}}}"


def _ascii_set(chars: list[str]) -> str:
    """An RE2 class of exactly these characters (one that matches nothing when empty)."""
    if not chars:
        return r"[^\x00-\x{10ffff}]"
    return "[" + "".join(_char(ord(c)) for c in chars) + "]"


@lru_cache(maxsize=64)
def _python_ascii_members(node_text: str) -> tuple[str, ...]:
    """The ASCII characters Python's ``re`` matches with a one-character pattern."""
    one = re.compile(node_text)
    return tuple(c for c in _ASCII if one.fullmatch(c))


class _Writer:
    """Writes an RE2 pattern from a Python parse tree (raises :class:`_Untranslatable`)."""

    def __init__(self, ascii_only: bool, newline_at_end: bool) -> None:
        self.ascii_only = ascii_only
        self.newline_at_end = newline_at_end
        self.c = _sre

    def sequence(self, items: Any) -> str:
        return "".join(self.node(op, av) for op, av in items)

    def node(self, op: Any, av: Any) -> str:
        c = self.c
        if op is c.LITERAL:
            return _char(av)
        if op is c.NOT_LITERAL:
            return f"[^{_char(av)}]"
        if op is c.ANY:  # without DOTALL (flags are refused): anything but a newline, in both engines
            return r"[^\n]"
        if op is c.IN:
            return self.char_class(av)
        if op is c.BRANCH:
            _, alternatives = av
            return "(?:" + "|".join(self.sequence(alt) for alt in alternatives) + ")"
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, items = av
            if add_flags or del_flags:
                raise _Untranslatable("scoped flags")
            return "(?:" + self.sequence(items) + ")"
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            low, high, items = av
            if low > _RE2_MAX_REPEAT or (high != c.MAXREPEAT and high > _RE2_MAX_REPEAT):
                raise _Untranslatable("repeat count above RE2's limit")
            body = "(?:" + self.sequence(items) + ")"
            # greedy or lazy: whether some match exists does not depend on it
            return body + (f"{{{low},}}" if high == c.MAXREPEAT else f"{{{low},{high}}}")
        if op is c.AT:
            return self.anchor(av)
        raise _Untranslatable(str(op))

    def anchor(self, where: Any) -> str:
        c = self.c
        if where in (c.AT_BEGINNING, c.AT_BEGINNING_STRING):  # no MULTILINE: both are the string's start
            return r"\A"
        if where is c.AT_END_STRING:
            return r"\z"
        if where is c.AT_END:
            if self.newline_at_end:
                raise _Untranslatable("$ before a final newline")
            return r"\z"
        if where in (c.AT_BOUNDARY, c.AT_NON_BOUNDARY) and self.ascii_only:
            # both engines: a boundary between a word character and anything else, and on ASCII
            # text both have word = [0-9A-Za-z_]
            return r"\b" if where is c.AT_BOUNDARY else r"\B"
        raise _Untranslatable(str(where))

    def char_class(self, items: Any) -> str:
        c = self.c
        kinds = {op for op, _ in items}
        if kinds <= {c.LITERAL, c.RANGE, c.NEGATE}:
            negate = "^" if items and items[0][0] is c.NEGATE else ""
            parts = []
            for op, av in items:
                if op is c.LITERAL:
                    parts.append(_char(av))
                elif op is c.RANGE:
                    parts.append(f"{_char(av[0])}-{_char(av[1])}")
            if not parts:
                raise _Untranslatable("empty class")
            return f"[{negate}{''.join(parts)}]"
        if not self.ascii_only or not kinds <= {c.LITERAL, c.RANGE, c.NEGATE, c.CATEGORY}:
            raise _Untranslatable("a class with Unicode categories")
        # every string is ASCII: the class is the set of ASCII characters Python's engine matches with it
        return _ascii_set(list(_python_ascii_members(_class_text(items, c))))


def _class_text(items: Any, c: Any) -> str:
    """A Python pattern of one class equal to the parsed one."""
    categories = {c.CATEGORY_DIGIT: r"\d", c.CATEGORY_NOT_DIGIT: r"\D", c.CATEGORY_SPACE: r"\s",
                  c.CATEGORY_NOT_SPACE: r"\S", c.CATEGORY_WORD: r"\w", c.CATEGORY_NOT_WORD: r"\W"}
    text = ""
    for op, av in items:
        if op is c.NEGATE:
            text += "^"
        elif op is c.LITERAL:
            text += _py_char(av)
        elif op is c.RANGE:
            text += f"{_py_char(av[0])}-{_py_char(av[1])}"
        elif op is c.CATEGORY:
            if av not in categories:
                raise _Untranslatable(str(av))
            text += categories[av]
    return f"[{text}]"


def _py_char(code: int) -> str:
    """One code point as a Python escape (valid inside a class)."""
    return f"\\U{code:08x}"


def to_re2(pattern: str | re.Pattern, ascii_only: bool, newline_at_end: bool) -> str | None:
    """An RE2 pattern whose ``search`` answer is Python's on every string of a column, or None.

    Parameters
    ----------
    pattern : str or re.Pattern
        The Python pattern (a compiled one only with the default flags).
    ascii_only : bool
        Every string the pattern will be applied to is ASCII (allows
        ``\\d \\w \\s \\b`` and their negations).
    newline_at_end : bool
        Some string ends with a newline (then ``$`` is refused).
    """
    plan = _plan(pattern, ascii_only, newline_at_end)
    return plan.re2 if plan is not None else None


class _Plan:
    """How to answer one pattern on RE2: the translation, and a literal every match must contain.

    ``hint`` is (kind, text): kind ``prefix``, ``suffix`` or ``substring``.
    A hint narrows the strings cheaply (``starts_with``, ``ends_with``,
    ``match_substring`` run at a few ns a string, RE2's unanchored search at
    ~100 ns) before RE2 looks at the rest; ``exact`` says the hint alone is
    the answer (``5$`` is ``ends_with('5')``).
    """

    __slots__ = ("exact", "hint", "re2")

    def __init__(self, re2: str, hint: tuple[str, str] | None, exact: bool) -> None:
        self.re2, self.hint, self.exact = re2, hint, exact


def _plan(pattern: str | re.Pattern, ascii_only: bool, newline_at_end: bool) -> _Plan | None:
    if _sre_parse is None:
        return None
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str) or pattern.flags != re.UNICODE:
            return None
        pattern = pattern.pattern
    if not isinstance(pattern, str):
        return None
    try:
        parsed = _sre_parse.parse(pattern)
        if parsed.state.flags & ~(re.UNICODE | re.VERBOSE):  # (?x) only changes how the text is read
            return None
        re2 = _Writer(ascii_only, newline_at_end).sequence(parsed)
        return _Plan(re2, *_literal_hint(list(parsed)))
    except (_Untranslatable, re.error, RecursionError, AttributeError, TypeError, ValueError):
        # AttributeError/TypeError/ValueError: a parse tree of a Python whose internals differ
        return None


def _literal_hint(items: list[Any]) -> tuple[tuple[str, str] | None, bool]:
    """A literal every match contains, read off the top level of the (already translated) tree."""
    c = _sre
    starts = bool(items) and items[0][0] is c.AT and items[0][1] in (c.AT_BEGINNING, c.AT_BEGINNING_STRING)
    # $ reaches here only where no string ends with a newline (the writer refused it otherwise)
    ends = bool(items) and items[-1][0] is c.AT and items[-1][1] in (c.AT_END, c.AT_END_STRING)
    body = items[int(starts): len(items) - int(ends)]
    runs: list[tuple[int, str]] = []  # (position in body, text) of each run of plain characters
    for position, (op, av) in enumerate(body):
        if op is c.LITERAL:
            if runs and runs[-1][0] + len(runs[-1][1]) == position:
                runs[-1] = (runs[-1][0], runs[-1][1] + chr(av))
            else:
                runs.append((position, chr(av)))
    if not runs:
        return None, False
    whole = len(runs) == 1 and len(runs[0][1]) == len(body)
    if ends and runs[-1][0] + len(runs[-1][1]) == len(body):
        return ("suffix", runs[-1][1]), whole and not starts
    if starts and runs[0][0] == 0:
        return ("prefix", runs[0][1]), whole and not ends
    return ("substring", max(runs, key=lambda run: len(run[1]))[1]), whole and not starts and not ends


class StringValues:
    """The distinct string values of a column, with what decides how a pattern may run on them."""

    __slots__ = ("_array", "ascii_only", "newline_at_end")

    def __init__(self, values: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self._array = pa.array(values, pa.string())  # raises on a lone surrogate: the caller uses re
        self.ascii_only = bool(pc.all(pc.string_is_ascii(self._array)).as_py() is not False)
        self.newline_at_end = bool(pc.any(pc.ends_with(self._array, "\n")).as_py())

    def search(self, pattern: str | re.Pattern) -> np.ndarray | None:
        """``re.search(pattern, value) is not None`` for every value, or None where RE2 cannot say."""
        import pyarrow as pa
        import pyarrow.compute as pc

        plan = _plan(pattern, self.ascii_only, self.newline_at_end)
        if plan is None:
            return None
        values = self._array
        candidates = None
        if plan.hint is not None:
            kind, text = plan.hint
            narrow = {"prefix": pc.starts_with, "suffix": pc.ends_with, "substring": pc.match_substring}[kind]
            hinted = np.asarray(narrow(values, text).to_numpy(zero_copy_only=False), bool)
            if plan.exact:
                return hinted
            candidates = np.flatnonzero(hinted)
            if candidates.size == len(values):
                candidates = None
            else:
                values = values.take(pa.array(candidates))
        try:
            found = np.asarray(pc.match_substring_regex(values, plan.re2).to_numpy(zero_copy_only=False), bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. beyond RE2's program size
            return None
        if candidates is None:
            return found
        out = np.zeros(len(self._array), bool)
        out[candidates[found]] = True
        return out


def string_values(values: list[str]) -> StringValues | None:
    """A :class:`StringValues` of ``values``, or None without pyarrow or for strings Arrow cannot hold."""
    try:
        return StringValues(values)
    except (ImportError, UnicodeEncodeError):
        return None
    except Exception as exc:  # pyarrow's own errors on unencodable text
        if type(exc).__module__.startswith("pyarrow"):
            return None
        raise
