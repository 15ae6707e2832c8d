"""The dialect contract: how an ingress wire format plugs into imagegate.

Every dialect package (``openai_images``, ``openai_chat``, ``anthropic_messages``, ``gemini``,
``simple``) has the same three files — ``schemas.py`` (the wire models), ``translate.py`` (pure
wire <-> canonical functions) and ``router.py`` (its routes) — and its ``__init__`` exports one
:class:`DialectPackage` named ``package``. A route parses its body into the wire model, translates
it into a :class:`api.flow.Submission`, and hands it to :func:`api.flow.respond` with the
dialect's renderer; ``respond`` does everything else the same way for every dialect (checks,
loading images, submit, ``Prefer: respond-async``, waiting or streaming, the job's headers).

To add a dialect: write the three files, export ``package``, list it in ``api/main.py``'s
``DIALECTS``. Its routes, its error shape and its parameter names are then in force.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fastapi import APIRouter
from starlette.requests import Request

from core.errors import GatewayError
from core.generation import Dialect


@dataclass(frozen=True)
class WireError:
    """An error as one dialect answers it: the HTTP status, the JSON body, extra headers."""

    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)


ErrorRenderer = Callable[[GatewayError], WireError]


@dataclass(frozen=True)
class DialectPackage:
    """What a dialect package gives the application."""

    dialect: Dialect
    router: APIRouter
    prefixes: tuple[str, ...]
    """Request paths (prefixes) whose errors this dialect renders."""
    render_error: ErrorRenderer
    wire_params: Mapping[str, str] = field(default_factory=dict)
    """Canonical parameter names (as :mod:`core.planning` names them in errors) -> this dialect's."""
    claims: Callable[[Request], bool] | None = None
    """Requests outside ``prefixes`` whose errors this dialect renders all the same (the Anthropic
    SDK's ``GET /v1/models``, recognised by its ``anthropic-version`` header)."""

    def renders(self, request: Request) -> bool:
        if self.claims is not None and self.claims(request):
            return True
        return request.url.path.startswith(self.prefixes)
