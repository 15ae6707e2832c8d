"""What a request's URL may hold: no NUL character in its path or its query parameters.

Path segments and query parameters become database parameters (a job's or a file's id, a key's
name, a status filter), and PostgreSQL refuses NUL in text. A URL that holds one (``%00``) is
refused at the door, in the caller's dialect, before any route sees it. (Percent-decoding never
yields a lone surrogate: undecodable bytes become U+FFFD.)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from core.errors import InvalidRequestError


class RefuseNulInUrl:
    """ASGI middleware: a 400 for a path or query parameter holding NUL (U+0000)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            error = _nul_in(request)
            if error is not None:
                await error_response(request, error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(request: Request) -> InvalidRequestError | None:
    if "\x00" in request.url.path:
        return InvalidRequestError("The request path may not hold NUL characters (%00).", code="invalid_url")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            param = name.replace("\x00", "")
            return InvalidRequestError(f"Invalid value for '{param}': query parameters may not hold NUL characters.",
                                       param=param, code="invalid_value")
    return None
