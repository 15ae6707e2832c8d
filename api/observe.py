"""Request ids and request metrics, for every HTTP request (pure ASGI: no body is touched).

A request's id is the caller's ``x-request-id`` when it is a plausible id (up to 128 visible
ASCII characters), else a new one; it is echoed in the answer's ``x-request-id``, set in the log
context for every line the request writes (``core/logcontext.py``) and carried to the workers in
the tasks' headers. Each answer is counted by dialect, route template and status
(``imagegate_http_requests_total``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logcontext, metrics

_ACCEPTED_ID = re.compile(rb"[!-~]{1,128}")
UNMATCHED = "unmatched"
"""The route label of a request no route took (a 404): never its path, whose values are unbounded."""


class Observe:
    def __init__(self, app: ASGIApp, *, dialects: Mapping[str, str]) -> None:
        """``dialects``: route path template -> the dialect it belongs to (others: ``imagegate``)."""
        self.app = app
        self._dialects = dict(dialects)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        request_id = given.decode() if given is not None and _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex
        header = (b"x-request-id", request_id.encode())
        status = 500

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        tokens = logcontext.bind(request_id=request_id)
        try:
            await self.app(scope, receive, answer)
        finally:
            logcontext.unbind(tokens)
            route = scope.get("route")
            path = getattr(route, "path", None) or UNMATCHED
            metrics.REQUESTS(self._dialects.get(path, "imagegate"), path, str(status)).inc()
