"""Regular expressions of select_images: RE2 over the column where it means what Python's ``re`` means.

Every answer is compared with ``re.search`` on each string, written out here
(not taken from the code under test); every pattern of the first list must
actually run on RE2, every one of the second must fall back to ``re``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isicarchive import selection
from isicarchive.regex import string_values, to_re2
from isicarchive.selection import ImageIndex

pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def re2_for_small_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """RE2 for the few values of these tests too (a field has to have 1,000 distinct values otherwise)."""
    monkeypatch.setattr(selection, "_RE2_MIN_VALUES", 0)

#: patterns RE2 takes for ASCII strings none of which ends with a newline
RE2_PATTERNS = [
    "5$", r"^ISIC_00[0-1]\d{4}$", r"^ISIC_00012", "12.4", "", "^$", r"\bnevus\b", r"\Bev", r"\s+", r"\S\s\S",
    r"[^\W\d]", r"\w+_\d", r"\D{3}", r"[\s\d]", r"[^\s]x", r"a.c", r"(ab|cd)+e?", r"x{2,3}", r"x{2,}y", r"\Aab",
    r"ab\Z", r"[a-f0-9-]{4}", r"colou?r", r"a*?b", r"(?:mel|bas)\w*",
    r"(?P<name>n)e", "[]]", r"[\]\\^-]", r"\.", r"[.]", r"\x41", r"[^a-z]$", r"(?x) a \s b  # a comment",
    r"^(mel|bas)", "torso", r"\t|\x0b|\x1c", r"[\x00-\x1f]", r"\d\W", r"(a|)+b", r"^.{0,3}$", "[^\n]+",
    # a literal narrows the strings before RE2 runs (or is the answer: 5$ is ends_with('5'))
    r"\d{3}7$", r"^ISIC_000\d2", r"ne.us$", r"^ab\Z", r"a\sn", r"ev(?:us|i)$", r"^ISIC_0000007$", "ab$",
]
#: patterns that stay on Python's re whatever the strings
RE_PATTERNS = [
    r"(a)\1", r"a(?=b)", r"(?<=a)b", r"(?!a)b", r"(?<!a)b", r"(?i)abc", r"(?m)^b", r"(?s)a.b", r"(?>ab)c",
    r"a*+b", r"a{1001}", r"(?a)\w", r"(a)?(?(1)b|c)", r"(?i:x)y", r"a{2,2000}",
]
#: patterns that run on RE2 for ASCII text only (Unicode digits, words and spaces, \b)
ASCII_ONLY = [r"\d", r"\w+", r"\s", r"\bx", r"[^\d]", r"\W"]

ALPHABET = ["a", "b", "c", "x", "y", "e", "n", "v", "s", "_", "5", "0", "1", " ", "\t", "\n", "\x0b", "\x1c",
            "-", ".", "]", "^", "\\", "A", "é", "١", "ß", "\u212a", "\u2028", "\x00"]


def python_answers(pattern: str, values: list[str]) -> list[bool]:
    return [re.search(pattern, value) is not None for value in values]


def column_answers(pattern: str, values: list[str], op: str = "match", index: ImageIndex | None = None) -> list[bool]:
    if index is None:
        index = ImageIndex({f"id{i}": {"name": value} for i, value in enumerate(values)})
    selected = set(index.select([["name", op, pattern]]))
    return [f"id{i}" in selected for i in range(len(values))]


def test_the_translatable_patterns_run_on_re2_and_the_rest_on_re() -> None:
    for pattern in RE2_PATTERNS + ASCII_ONLY:
        assert to_re2(pattern, ascii_only=True, newline_at_end=False) is not None, pattern
    for pattern in RE_PATTERNS:
        assert to_re2(pattern, ascii_only=True, newline_at_end=False) is None, pattern
    for pattern in ASCII_ONLY:
        assert to_re2(pattern, ascii_only=False, newline_at_end=False) is None, pattern
    assert to_re2("5$", ascii_only=True, newline_at_end=True) is None
    assert to_re2(r"5\Z", ascii_only=True, newline_at_end=True) is not None
    assert to_re2(re.compile("5$"), ascii_only=True, newline_at_end=False) is not None
    assert to_re2(re.compile("5$", re.IGNORECASE), ascii_only=True, newline_at_end=False) is None


NAMES = [f"ISIC_{i:07d}" for i in range(0, 30000, 37)] + [
    "nevus", "a nevus b", "nevi", "melanoma", "basal cell", "colour", "color", "colr", "ab", "cd", "abcde",
    "xxy", "xy", "a.c", "abc", "axc", "torso", "tab\there", "vt\x0bhere", "fs\x1chere", "", "x", "_5", "5",
    "]", "\\^-", "a\\b", "\x00", "ends in 5", "5 ", "b", "aab"]


@pytest.mark.parametrize("pattern", RE2_PATTERNS + ASCII_ONLY + RE_PATTERNS)
def test_ascii_names_get_pythons_answers(pattern: str) -> None:
    values = string_values(NAMES)
    assert values is not None and values.ascii_only and not values.newline_at_end
    expected = python_answers(pattern, NAMES)
    assert column_answers(pattern, NAMES) == expected
    assert column_answers(pattern, NAMES, "not match") == [not hit for hit in expected]
    on_re2 = values.search(pattern)
    if pattern in RE2_PATTERNS + ASCII_ONLY:
        assert on_re2 is not None and on_re2.tolist() == expected
    else:
        assert on_re2 is None


def test_unicode_and_newlines_fall_back_where_the_engines_differ() -> None:
    # Python's \d takes Arabic-Indic digits and $ a final newline; RE2's do not
    values = ["١٢٣", "12", "ab5\n", "ab5", "K", "straße", "x\u2028y"]
    column = string_values(values)
    assert column is not None and not column.ascii_only and column.newline_at_end
    for pattern in [r"\d", "5$", r"\w+e", r"\s", r"5\Z", "ß", "[a-z]+", "^.$", r"x.y", r"\bK"]:
        assert column_answers(pattern, values) == python_answers(pattern, values), pattern
    assert column.search(r"\d") is None and column.search("5$") is None
    assert column.search(r"5\Z") is not None and column.search("[a-z]+") is not None


def test_values_that_are_not_strings_match_neither_way() -> None:
    index = ImageIndex({"a": {"name": 5}, "b": {"name": None}, "c": {"name": "5"}, "d": {}})
    assert set(index.select([["name", "match", "5"]])) == {"c"}
    assert set(index.select([["name", "not match", "x"]])) == {"c"}
    assert set(index.select([["name", "~", re.compile(r"\d$")]])) == {"c"}


def test_a_lone_surrogate_keeps_the_column_on_re() -> None:
    values = ["a\ud800b", "ab", "b"]
    assert string_values(values) is None
    assert column_answers("a.b", values) == [True, False, False]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([ALPHABET, [c for c in ALPHABET if c.isascii() and c != "\n"]]).flatmap(
    lambda alphabet: st.lists(st.text(alphabet=st.sampled_from(alphabet), max_size=8), min_size=1, max_size=40)))
def test_generated_strings_get_pythons_answers(values: list[str]) -> None:
    # half of the examples ASCII without newlines, where every pattern of RE2_PATTERNS and ASCII_ONLY runs on RE2
    index = ImageIndex({f"id{i}": {"name": value} for i, value in enumerate(values)})
    for pattern in RE2_PATTERNS + ASCII_ONLY + RE_PATTERNS[:4]:
        assert column_answers(pattern, values, index=index) == python_answers(pattern, values), (pattern, values)
