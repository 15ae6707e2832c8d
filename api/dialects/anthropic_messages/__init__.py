"""Anthropic Messages: ``POST /v1/messages`` (plain and streamed) and ``/v1/messages/count_tokens``,
as the Anthropic API reference describes them (https://docs.anthropic.com/en/api/messages); its
error shape also answers the Anthropic SDK's ``GET /v1/models`` (sent with ``anthropic-version``)."""

from starlette.requests import Request

from api.dialects import DialectPackage
from api.dialects.anthropic_messages import translate
from api.dialects.anthropic_messages.router import router
from core.generation import Dialect


def _is_anthropic_model_list(request: Request) -> bool:
    return request.url.path.startswith("/v1/models") and "anthropic-version" in request.headers


package = DialectPackage(dialect=Dialect.ANTHROPIC_MESSAGES, router=router, prefixes=("/v1/messages",),
                         render_error=translate.to_wire_error, claims=_is_anthropic_model_list)
