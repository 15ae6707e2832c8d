"""core.text: which query numbers imagegate parses, which characters it refuses to store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.text import ascii_int, refused_character


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("42", 42), ("000123", 123), ("9" * 18, int("9" * 18)),
    ("", None), ("-1", None), ("+1", None), ("1.5", None), (" 1", None), ("\u00b2", None), ("\u0661", None),
    ("9" * 19, None), ("9" * 5000, None),
])
def test_ascii_int(value: str, expected: int | None) -> None:
    assert ascii_int(value) == expected


def test_ascii_int_max_digits() -> None:
    assert ascii_int("123456789012", max_digits=12) == 123456789012
    assert ascii_int("1234567890123", max_digits=12) is None


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text())
def test_ascii_int_never_raises(value: str) -> None:
    parsed = ascii_int(value)
    assert parsed is None or (parsed >= 0 and str(parsed) == value.lstrip("0").rjust(1, "0"))


@pytest.mark.parametrize(("value", "found"), [
    ("a\x00b", "a NUL character (U+0000)"), ("\ud800", "a lone surrogate (U+D800)"),
    ("ok \udfff", "a lone surrogate (U+DFFF)"), ("\x00\ud800", "a NUL character (U+0000)"),
])
def test_refused_characters(value: str, found: str) -> None:
    assert refused_character(value) == found


@pytest.mark.parametrize("value", ["", "plain", "tabs\tand\nnewlines\r", "\x01\x1f\x7f", "é中文🦊", "\ufffd"])
def test_text_a_database_stores_is_not_refused(value: str) -> None:
    assert refused_character(value) is None
