"""Rules for the text callers send: which numbers imagegate parses, which characters it stores.

- A number in a query string is a few ASCII digits: ``str.isdigit()`` is also true for digits
  such as ``'²'`` that ``int()`` refuses, and ``int()`` refuses more than 4300 digits.
- Text that may reach the database holds neither NUL (U+0000: PostgreSQL's ``text`` and ``json``
  values cannot hold it, and psycopg refuses to send it) nor a lone surrogate (U+D800-U+DFFF:
  there is no UTF-8 for it, so no database driver can send it). Such text is refused, never
  altered: a prompt is the caller's own words, and a changed one would be a silent edit.
"""

from __future__ import annotations

import re

_REFUSED = re.compile("[\x00\ud800-\udfff]")


def ascii_int(value: str, *, max_digits: int = 18) -> int | None:
    """``value`` as a non-negative integer when it is 1 to ``max_digits`` ASCII digits; else ``None``."""
    if not (value.isascii() and value.isdigit()) or len(value) > max_digits:
        return None
    return int(value)


def refused_character(value: str) -> str | None:
    """The first character of ``value`` a database refuses, described for an error message
    (``'a NUL character (U+0000)'``); ``None`` when there is none."""
    if value.isascii() and "\x00" not in value:
        return None
    found = _REFUSED.search(value)
    if found is None:
        return None
    char = found.group()
    what = "a NUL character" if char == "\x00" else "a lone surrogate"
    return f"{what} (U+{ord(char):04X})"
