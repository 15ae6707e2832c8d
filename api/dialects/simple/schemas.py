"""Wire models of the CG-Image simple route: ``POST /generate`` takes a prompt and an
optional system prompt and answers with CG-Image's message shape, the one ``/v1/messages`` answers
with (:class:`~api.dialects.anthropic_messages.schemas.MessageResponse`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.dialects.anthropic_messages.schemas import ErrorResponse, MessageResponse


class GenerateRequest(BaseModel):
    """``{"prompt": ..., "system": ...}``; ``model`` (default model when left out) is an imagegate
    addition. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=32000)
    system: str | None = None
    model: str | None = None


__all__ = ["ErrorResponse", "GenerateRequest", "MessageResponse"]
