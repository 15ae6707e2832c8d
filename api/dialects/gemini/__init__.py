"""Gemini native: ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent``,
``:predict`` and ``GET /v1beta/models``, as the Gemini API reference describes them
(https://ai.google.dev/api), with Google's error shape."""

from api.dialects import DialectPackage
from api.dialects.gemini import errors, translate
from api.dialects.gemini.router import router
from core.generation import Dialect

package = DialectPackage(dialect=Dialect.GEMINI, router=router, prefixes=("/v1beta/",),
                         render_error=errors.to_wire_error, wire_params=translate.GENERATE_PARAMS)
