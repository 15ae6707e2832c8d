"""Streamed answers of ``:streamGenerateContent``: server-sent events (``?alt=sse``) or one JSON
array sent a piece at a time (without ``alt``), as https://ai.google.dev/api/generate-content
describes."""

from __future__ import annotations

import json
from typing import Any

SSE_KEEPALIVE = b"\r\n"
"""Sent while a streamed job runs. A blank line is a no-op for every SSE parser; an SSE comment
(``: keep-alive``) is not: google-genai 3.4 takes any line not starting with ``data: `` for raw
JSON and raises ``UnknownApiResponseError`` on it."""


def sse_event(data: dict[str, Any]) -> bytes:
    """One ``data:`` event; Google separates events with CRLF CRLF."""
    return b"data: " + _json(data) + b"\r\n\r\n"


def json_array_item(data: dict[str, Any], *, first: bool) -> bytes:
    """An element of the streamed JSON array (``[{...},\\r\\n{...}]``, no ``alt=sse``)."""
    return (b"" if first else b",\r\n") + _json(data)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
