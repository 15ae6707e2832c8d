"""Exception handlers: every failure is answered in the caller's own dialect, never as a bare 500.

The dialect is chosen by the request path (each dialect owns its routes); imagegate's own routes
(jobs, files, models, health) answer in the OpenAI error shape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.dialects.anthropic_messages import translate as anthropic_messages
from api.dialects.gemini import translate as gemini
from api.dialects.openai_images import translate as openai_images
from api.dialects.simple import translate as simple
from core.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
)
from core.ids import new_id

log = logging.getLogger(__name__)

Renderer = Callable[[GatewayError], tuple[int, dict[str, Any]]]

# (path prefix, renderer), first match wins; dialects with their own error shapes add rows here
RENDERERS: list[tuple[str, Renderer]] = [
    ("/v1/messages", anthropic_messages.to_wire_error),
    ("/v1beta/", gemini.to_wire_error),
    ("/generate", simple.to_wire_error),
]
DEFAULT_RENDERER: Renderer = openai_images.to_wire_error


def renderer_for(request: Request) -> Renderer:
    path = request.url.path
    if path.startswith("/v1/models") and "anthropic-version" in request.headers:
        return anthropic_messages.to_wire_error  # the Anthropic SDK's model list
    for prefix, renderer in RENDERERS:
        if path.startswith(prefix):
            return renderer
    return DEFAULT_RENDERER


def error_response(request: Request, error: GatewayError) -> JSONResponse:
    status, body = renderer_for(request)(error)
    headers: dict[str, str] = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(int(error.retry_after * 1000))
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if error.job_id:
        headers["x-imagegate-job-id"] = error.job_id
    if request.url.path.startswith(("/v1/messages", "/generate")):
        headers["request-id"] = new_id("req")  # Anthropic clients log it with every error
    return JSONResponse(body, status_code=status, headers=headers)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}." if param else "Invalid request."
    return error_response(request, InvalidRequestError(message, param=param))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error: GatewayError = NotFoundError(
            f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url"
        )
    elif exc.status_code == 405:
        error = InvalidRequestError(
            f"Method {request.method} is not allowed on {request.url.path}.", code="method_not_allowed"
        )
        _, body = renderer_for(request)(error)
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("code"), int):
            inner["code"] = 405  # Google's shape repeats the HTTP status in the body
        return JSONResponse(body, status_code=405, headers=dict(exc.headers or {}))
    else:
        error = InvalidRequestError(str(exc.detail), code=None)
        _, body = renderer_for(request)(error)
        return JSONResponse(body, status_code=exc.status_code)
    return error_response(request, error)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = GatewayError("The server had an error while processing your request.")
    return error_response(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
