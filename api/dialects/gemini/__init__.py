"""Gemini native: ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent``,
``:predict`` and ``GET /v1beta/models``, as the Gemini API reference describes them
(https://ai.google.dev/api), with Google's error shape; the same under ``/v1/`` (google-genai
3.x sends ``/v1/...`` when given a ``base_url``), where this dialect also renders the errors of
the model list when a Google client asks for it."""

from starlette.requests import Request

from api.dialects import DialectPackage
from api.dialects.gemini import errors, translate
from api.dialects.gemini.models import is_google_client
from api.dialects.gemini.router import router
from core.generation import Dialect


def _claims(request: Request) -> bool:
    """``POST /v1/models/{model}:{method}`` is Gemini's alone; ``GET /v1/models[/{id}]`` is when a
    Google client sends it."""
    if not request.url.path.startswith("/v1/models"):
        return False
    return request.method == "POST" or is_google_client(request.headers)


package = DialectPackage(dialect=Dialect.GEMINI, router=router, prefixes=("/v1beta/",),
                         render_error=errors.to_wire_error, wire_params=translate.GENERATE_PARAMS, claims=_claims)
