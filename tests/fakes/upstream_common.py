"""Transport-neutral request/response objects, provider error shapes and body parsing shared by the
fake upstream's handlers (https://platform.openai.com/docs/guides/error-codes, https://ai.google.dev/gemini-api/docs/troubleshooting)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError


@dataclass
class FakeRequest:
    """What a handler sees: method, path (no query), query, lower-case headers, raw body."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass
class FakeResponse:
    """What a handler answers; ``delay_s`` is slept by the adapter before sending (faults).

    A streamed answer (server-sent events) has ``chunks``: each ``(pause_s, bytes)`` is sent
    ``pause_s`` after the one before it, as a real upstream streams while it works; ``body`` then
    holds them all (what a client that reads the whole answer gets)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    delay_s: float = 0.0
    chunks: list[tuple[float, bytes]] | None = None


def event_stream(chunks: list[tuple[float, bytes]], headers: dict[str, str] | None = None) -> FakeResponse:
    """A 200 ``text/event-stream`` answer sent a chunk at a time."""
    return FakeResponse(200, b"".join(c for _, c in chunks),
                        {"content-type": "text/event-stream", "cache-control": "no-cache", **(headers or {})},
                        chunks=chunks)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> FakeResponse:
    return FakeResponse(
        status,
        json.dumps(payload, separators=(",", ":")).encode(),
        {"content-type": "application/json", **(headers or {})},
    )


def raw_json_response(status: int, text: str) -> FakeResponse:
    return FakeResponse(status, text.encode(), {"content-type": "application/json"})


class Reject(Exception):
    """A handler's refusal: the response to send and the violations to record (may be none)."""

    def __init__(self, response: FakeResponse, violations: list[str] | None = None) -> None:
        super().__init__(response.status)
        self.response = response
        self.violations = violations or []


# --- Provider error shapes ----------------------------------------------------------------------

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GOOGLE_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}


def google_error(
    code: int,
    message: str | None = None,
    status: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": code,
        "message": message or GOOGLE_MESSAGES.get(code, f"HTTP {code}"),
        "status": status or GOOGLE_STATUS.get(code, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


OPENAI_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_value", "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("server_error", None, "Request timed out."),
    409: ("server_error", None, "Conflict, please retry."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for images per min. Please try again."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def openai_error(
    status: int,
    message: str | None = None,
    type_: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    default_type, default_code, default_message = OPENAI_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
    )
    return {
        "error": {
            "message": message or default_message,
            "type": type_ or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def oauth_error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description}


# --- Body parsing -------------------------------------------------------------------------------


def load_json_object(req: FakeRequest) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, violation)."""
    if req.content_type != "application/json":
        return None, f"Content-Type must be application/json, got {req.content_type or 'none'!r}"
    try:
        data = json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"body is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "body must be a JSON object"
    return data, None


def try_json(req: FakeRequest) -> dict[str, Any] | None:
    if req.content_type != "application/json":
        return None
    try:
        data = json.loads(req.body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Multipart:
    form: dict[str, list[str]]
    files: dict[str, list[tuple[str, str, bytes]]]


def parse_multipart(req: FakeRequest) -> Multipart:
    """Parse multipart/form-data with the stdlib email parser. Parts with a filename are files."""
    content_type = req.headers.get("content-type", "")
    if "boundary=" not in content_type:
        raise ValueError("multipart/form-data without a boundary")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + req.body
    )
    if not message.is_multipart():
        raise ValueError("body is not multipart")
    form: dict[str, list[str]] = {}
    files: dict[str, list[tuple[str, str, bytes]]] = {}
    for part in message.iter_parts():
        if part.get_content_disposition() != "form-data":
            raise ValueError("a part lacks Content-Disposition: form-data")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a part has no name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            charset = part.get_content_charset() or "utf-8"
            form.setdefault(name, []).append(data.decode(charset))
        else:
            files.setdefault(name, []).append((filename, part.get_content_type(), data))
    return Multipart(form, files)


def parse_urlencoded(req: FakeRequest) -> dict[str, list[str]]:
    return parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)


def pydantic_messages(exc: ValidationError) -> list[tuple[str, str, str]]:
    """[(dotted location, message, pydantic error type)] from a ValidationError."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        kind = err["type"]
        message = "unknown field" if kind == "extra_forbidden" else err["msg"]
        if kind == "missing":
            message = "required field missing"
        out.append((loc, message, kind))
    return out


def new_id(prefix: str = "", n: int = 16) -> str:
    return prefix + secrets.token_urlsafe(n).replace("-", "x").replace("_", "y")[:n]


def prompt_words(text: str) -> int:
    return len(text.split())


@dataclass
class Accepted:
    """A request that passed validation: its model, its prompt text (for ``prompt_contains``) and
    a builder of the answer for a fault kind (``None`` = the normal answer)."""

    model: str | None
    prompt: str
    build: Callable[[str | None], FakeResponse]
