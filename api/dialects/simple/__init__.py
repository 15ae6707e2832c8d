"""The CG-Image simple route, ``POST /generate``: a prompt in, the Anthropic Messages answer out
(CG-Image's ``/generate`` returns the very body its ``/v1/messages`` returns)."""

from api.dialects import DialectPackage
from api.dialects.simple import translate
from api.dialects.simple.router import router
from core.generation import Dialect

package = DialectPackage(dialect=Dialect.SIMPLE, router=router, prefixes=("/generate",),
                         render_error=translate.to_wire_error)
