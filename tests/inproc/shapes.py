"""Which error shape each route answers in, and a check that an answer is one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

OPENAI, ANTHROPIC, GOOGLE = "openai", "anthropic", "google"


def dialect_of(method: str, path: str, headers: Mapping[str, str]) -> str:
    """The dialect whose error shape a request's errors come in (see api/errors.py)."""
    if path.startswith(("/v1/messages", "/generate")):
        return ANTHROPIC
    if path.startswith("/v1beta"):
        return GOOGLE
    names = {k.lower() for k in headers}
    if path.startswith("/v1/models"):
        if "anthropic-version" in names:
            return GOOGLE if method == "POST" else ANTHROPIC
        # POST /v1/models/{model}:{method} is Gemini's; a Google client's model list is too
        if method == "POST" or names & {"x-goog-api-client", "x-goog-api-key"}:
            return GOOGLE
    return OPENAI


def error_of(dialect: str, status: int, text: str) -> tuple[str, str | None]:
    """The error's message and (OpenAI) param, after checking it has ``dialect``'s shape exactly."""
    body: Any = json.loads(text)
    assert isinstance(body, dict), text
    if dialect == ANTHROPIC:
        assert body.get("type") == "error", text
        error = body["error"]
        assert isinstance(error.get("type"), str) and isinstance(error.get("message"), str), text
        return error["message"], None
    error = body.get("error")
    assert isinstance(error, dict), text
    assert isinstance(error.get("message"), str), text
    if dialect == GOOGLE:
        assert error.get("code") == status and isinstance(error.get("status"), str), text
        return error["message"], None
    assert {"message", "type", "param", "code"} <= set(error), text
    return error["message"], error["param"]


def assert_dialect_error(dialect: str, response_status: int, text: str, *, param: str | None = None) -> None:
    """A 4xx in ``dialect``'s shape; naming ``param`` when given (OpenAI's shape has a ``param``
    field, the others say it in the message)."""
    assert 400 <= response_status < 500, (response_status, text)
    message, named = error_of(dialect, response_status, text)
    if param is not None and dialect == OPENAI:
        assert named == param, (param, named, message)
    elif param is not None:
        assert param in message, (param, message)
