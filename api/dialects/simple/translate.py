"""Pure translation for this dialect (being written)."""

from typing import Any

from api.dialects.openai_images.translate import to_wire_error as _openai_error
from core.errors import GatewayError


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    return _openai_error(error)
