"""OpenAI Images: ``POST /v1/images/generations`` and ``POST /v1/images/edits``, answered as the
OpenAI API reference describes them (https://platform.openai.com/docs/api-reference/images).
Its error shape is also imagegate's own, for the routes no other dialect claims."""

from api.dialects import DialectPackage
from api.dialects.openai_images import translate
from api.dialects.openai_images.router import router
from core.generation import Dialect

package = DialectPackage(dialect=Dialect.OPENAI_IMAGES, router=router, prefixes=("/v1/images",),
                         render_error=translate.to_wire_error)
