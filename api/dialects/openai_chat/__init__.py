"""OpenAI Chat Completions with image output: ``POST /v1/chat/completions`` with ``modalities``,
``image_config`` and ``message.images``, the image-output convention OpenRouter documents
(https://openrouter.ai/docs/features/multimodal/image-generation)."""

from api.dialects import DialectPackage
from api.dialects.openai_chat import translate
from api.dialects.openai_chat.router import router
from core.generation import Dialect

package = DialectPackage(dialect=Dialect.OPENAI_CHAT, router=router, prefixes=("/v1/chat/",),
                         render_error=translate.to_wire_error, wire_params=translate.WIRE_PARAMS)
