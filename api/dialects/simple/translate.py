"""Pure translation for ``POST /generate``.

The answer and the errors are the Anthropic Messages ones: CG-Image is a Claude gateway
whose ``/generate`` returns the very body its ``/v1/messages`` returns, so its clients already
parse the Anthropic shapes (``{"type": "error", "error": {"type", "message"}}`` included).
"""

from __future__ import annotations

from collections.abc import Sequence

from api.dialects import WireError
from api.dialects.anthropic_messages import translate as anthropic
from api.dialects.simple.schemas import GenerateRequest, MessageResponse
from core.errors import GatewayError
from core.generation import DeliveredImage, GenerationRequest


def to_generation(wire: GenerateRequest) -> GenerationRequest:
    system = wire.system.strip() if wire.system else None
    return GenerationRequest(prompt=wire.prompt, system=system or None, model=wire.model)


def message_id(job_id: str) -> str:
    """``img-`` and the job id's random part, as CG-Image numbered its answers."""
    return "img-" + job_id.removeprefix("job_")


def to_wire(*, message_id: str, model: str, images: Sequence[DeliveredImage]) -> MessageResponse:
    return anthropic.to_wire(message_id=message_id, model=model, images=images)


def dump(response: MessageResponse) -> bytes:
    return anthropic.dump(response)


def to_wire_error(error: GatewayError) -> WireError:
    return anthropic.to_wire_error(error)
