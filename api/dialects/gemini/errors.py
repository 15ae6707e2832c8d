"""Errors in Google's shape, ``{"error": {"code", "message", "status", "details"}}``: the
google.rpc ``Status`` of https://cloud.google.com/apis/design/errors, with ``ErrorInfo``,
``BadRequest`` and ``RetryInfo`` details as Google's own APIs send them."""

from __future__ import annotations

import math
import re
from typing import Any

from api.dialects import WireError
from api.dialects.gemini.schemas import ErrorResponse, Status
from core.errors import ErrorKind, GatewayError

# ErrorKind -> (HTTP status = google.rpc code, google.rpc status name), by the google.rpc.Code
# mapping to HTTP (https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto)
STATUSES: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "INVALID_ARGUMENT"),
    ErrorKind.CONTENT_POLICY: (400, "INVALID_ARGUMENT"),
    ErrorKind.AUTHENTICATION: (400, "INVALID_ARGUMENT"),  # Google's answer to a bad key; a missing one is 401
    ErrorKind.PERMISSION: (403, "PERMISSION_DENIED"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND"),
    ErrorKind.MODEL_NOT_FOUND: (404, "NOT_FOUND"),
    ErrorKind.GONE: (404, "NOT_FOUND"),  # google.rpc has no 410: a deleted resource is NOT_FOUND
    ErrorKind.CONFLICT: (409, "ABORTED"),
    ErrorKind.PAYLOAD_TOO_LARGE: (400, "INVALID_ARGUMENT"),  # as Google: "Request payload size exceeds the limit"
    ErrorKind.RATE_LIMITED: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.INSUFFICIENT_QUOTA: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.UPSTREAM: (500, "INTERNAL"),
    ErrorKind.UPSTREAM_TIMEOUT: (504, "DEADLINE_EXCEEDED"),
    ErrorKind.UNAVAILABLE: (503, "UNAVAILABLE"),
    ErrorKind.JOB_TIMEOUT: (504, "DEADLINE_EXCEEDED"),
    ErrorKind.INTERNAL: (500, "INTERNAL"),
}
_TYPE = "type.googleapis.com/google.rpc."
_GOOGLE_AUTH = {"domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}


def retry_delay(seconds: float) -> str:
    """A protobuf Duration in JSON: ``"34s"``, ``"1.500s"``."""
    millis = math.ceil(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis / 1000:.3f}s"


def to_wire_error(error: GatewayError) -> WireError:
    """``{"error": {"code", "message", "status", "details"}}``; ``details`` carry an ErrorInfo (the
    gateway's error code as ``reason``), a BadRequest naming the field, and RetryInfo when a retry
    delay is known (never for an exhausted balance)."""
    code, status = STATUSES[error.kind]
    message = error.message
    details: list[dict[str, Any]] = []
    if error.kind is ErrorKind.AUTHENTICATION:
        if error.code == "missing_api_key":
            code, status = 401, "UNAUTHENTICATED"
            details.append({"@type": _TYPE + "ErrorInfo", "reason": "CREDENTIALS_MISSING", **_GOOGLE_AUTH})
        else:
            details.append({"@type": _TYPE + "ErrorInfo", "reason": "API_KEY_INVALID", **_GOOGLE_AUTH})
    elif error.code:
        info: dict[str, Any] = {"@type": _TYPE + "ErrorInfo", "reason": _reason(error.code), "domain": "imagegate"}
        if error.job_id:
            info["metadata"] = {"job_id": error.job_id}
        details.append(info)
    if error.param:
        details.append({"@type": _TYPE + "BadRequest",
                        "fieldViolations": [{"field": error.param, "description": message}]})
    if error.retry_after is not None and error.kind in (ErrorKind.RATE_LIMITED, ErrorKind.UNAVAILABLE):
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": retry_delay(error.retry_after)})
    if error.kind is ErrorKind.JOB_TIMEOUT and error.job_id:
        message = f"{message} Poll GET /v1/jobs/{error.job_id} for its result."
    body = ErrorResponse(error=Status(code=code, message=message, status=status, details=details or None))
    data: dict[str, Any] = body.model_dump(exclude_none=True)
    return WireError(status=code, body=data)


def _reason(code: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", code.upper()).strip("_")
