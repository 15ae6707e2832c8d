"""Exception handlers: every failure is answered in the caller's own dialect, never as a bare 500.

The renderer of a request is the first dialect package that renders it (by its path prefixes, or
by its own test such as the Anthropic SDK's model list); imagegate's own routes (jobs, files,
models, usage, admin, health) answer in the OpenAI error shape. The registry is built from the
dialect packages the application is made of (``api/main.py``) and kept on ``app.state``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dialects import DialectPackage, ErrorRenderer
from core.db import DATABASE_UNAVAILABLE
from core.errors import AuthenticationError, GatewayError, InvalidRequestError, NotFoundError, ServiceUnavailableError

log = logging.getLogger(__name__)


class ErrorRenderers:
    """Which dialect renders the errors of a request."""

    def __init__(self, packages: Sequence[DialectPackage], *, default: ErrorRenderer) -> None:
        self.packages = list(packages)
        self.default = default

    def for_request(self, request: Request) -> ErrorRenderer:
        for package in self.packages:
            if package.renders(request):
                return package.render_error
        return self.default


def error_response(request: Request, error: GatewayError) -> JSONResponse:
    renderers: ErrorRenderers = request.app.state.error_renderers
    wire = renderers.for_request(request)(error)
    headers: dict[str, str] = {**error.headers, **wire.headers}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(int(error.retry_after * 1000))
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if error.job_id:
        # the job exists and goes on (or has ended): trying the request again would only make
        # another one; the openai and anthropic SDKs obey this header
        headers["x-imagegate-job-id"] = error.job_id
        headers["x-should-retry"] = "false"
    return JSONResponse(wire.body, status_code=wire.status, headers=headers)


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
        return error_response(request, NotFoundError(f"Unknown request URL: {request.method} {request.url.path}.",
                                                     code="unknown_url"))
    renderers: ErrorRenderers = request.app.state.error_renderers
    if exc.status_code == 405:
        error = InvalidRequestError(f"Method {request.method} is not allowed on {request.url.path}.",
                                    code="method_not_allowed")
    else:
        error = InvalidRequestError(str(exc.detail), code=None)
    wire = renderers.for_request(request)(error)
    body = wire.body
    inner = body.get("error")
    if isinstance(inner, dict) and isinstance(inner.get("code"), int):
        inner["code"] = exc.status_code  # Google's shape repeats the HTTP status in the body
    return JSONResponse(body, status_code=exc.status_code, headers={**wire.headers, **dict(exc.headers or {})})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DATABASE_UNAVAILABLE):
        log.warning("the database cannot be reached on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return error_response(request, ServiceUnavailableError(
            "The gateway's database cannot be reached; retry shortly.", code="database_unavailable",
            retry_after=5))
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, GatewayError("The server had an error while processing your request."))


class UnexpectedErrors:
    """ASGI middleware: an exception no handler took becomes the dialect's 500 (or 503 while the
    database is away). It sits inside the CORS middleware (Starlette answers an exception handled
    for ``Exception`` in its outermost layer, past every middleware, so a browser would see a 500
    without CORS headers as a network error). An exception after the answer has started is
    logged and re-raised: nothing can be said any more."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            response = await _unexpected_error(Request(scope, receive), exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI, packages: Sequence[DialectPackage], *, default: ErrorRenderer) -> None:
    """The handlers of every error; the caller adds :class:`UnexpectedErrors` as the innermost
    middleware."""
    app.state.error_renderers = ErrorRenderers(packages, default=default)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
