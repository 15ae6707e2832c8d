"""Wire models of the Anthropic Messages API (anthropic-python 2.x ``types/message_create_params.py``,
``types/message.py``, ``types/model_info.py``; https://docs.anthropic.com/en/api/messages).

Requests ignore unknown fields (Claude Code sends ``tools``, ``thinking``, ``metadata``... and
unknown content block types such as ``tool_result``, which are accepted and skipped). Two
imagegate extensions ride along the standard body: ``n`` (how many images) and ``image_config``
(``aspect_ratio``, ``image_size``), named as the Gemini API names them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# -- request ---------------------------------------------------------------------------------


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class Base64ImageSource(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["base64"]
    media_type: str
    data: str


class URLImageSource(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["url"]
    url: str


class FileImageSource(BaseModel):
    """A Files API reference: parsed so the refusal can name it (imagegate has no Files API)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Base64ImageSource | URLImageSource | FileImageSource, Field(discriminator="type")]


def _as_text_blocks(value: Any) -> Any:
    """A plain string is shorthand for one text block."""
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class ContentBlock(BaseModel):
    """A content block: ``text`` (with ``text``), ``image`` (with ``source``), or any other type
    (``tool_use``, ``tool_result``, ``thinking``, ``document``...), accepted and skipped."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None
    source: ImageSource | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in ("text", "image"):
            return {"type": data.get("type")}
        return data

    @model_validator(mode="after")
    def _required_fields(self) -> ContentBlock:
        if self.type == "text" and self.text is None:
            raise ValueError("a 'text' block needs a 'text' string")
        if self.type == "image" and self.source is None:
            raise ValueError("an 'image' block needs a 'source'")
        return self


class MessageParam(BaseModel):
    """One turn; string content is one text block. ``role: "system"`` is accepted as CG-Image's clients send
    it: it adds to the system prompt."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant", "system"]
    content: Annotated[list[ContentBlock], BeforeValidator(_as_text_blocks)]


class ImageConfig(BaseModel):
    """imagegate extension: the picture's shape, as Gemini's ``imageConfig`` names it."""

    model_config = ConfigDict(extra="ignore")

    aspect_ratio: str | None = None
    image_size: str | None = None


class MessageCreateRequest(BaseModel):
    """``POST /v1/messages`` and ``/v1/messages/count_tokens``.

    ``max_tokens`` is required by Anthropic but means nothing for an image: accepted, never
    required (CG-Image's clients send it, other clients may not). ``model`` may be left out (the default
    model). Extensions: ``n`` (1-10 images, one markdown image each) and ``image_config``.
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[MessageParam]
    system: Annotated[list[TextBlock] | None, BeforeValidator(_as_text_blocks)] = None
    max_tokens: int | None = None
    stream: bool | None = None
    n: int = Field(1, ge=1, le=10)
    image_config: ImageConfig | None = None
    tools: list[dict[str, Any]] | None = None
    """Tool definitions: their presence marks a coding agent's request (its system prompt is its
    own, see api/conversation.py); never forwarded to an image model."""


# -- response --------------------------------------------------------------------------------


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class ImageAttachment(BaseModel):
    """One entry of CG-Image's ``_images`` array: ``data`` is a full data URL (or, with
    ``IMAGEGATE_ANTHROPIC_IMAGE_URLS``, the gateway URL of the image)."""

    model_config = ConfigDict(populate_by_name=True)

    mime_type: str = Field(alias="mimeType")
    data: str


class MessageResponse(BaseModel):
    """A Message plus CG-Image's non-standard top-level ``_images``; serialize with
    ``by_alias=True``."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextContent]
    stop_reason: str | None = "end_turn"
    stop_sequence: str | None = None
    usage: MessageUsage
    images: list[ImageAttachment] = Field(alias="_images")


class CountTokensResponse(BaseModel):
    input_tokens: int


# -- models list (https://docs.anthropic.com/en/api/models-list) -----------------------------------


class ModelInfo(BaseModel):
    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str
    lifecycle: Literal["active", "deprecated", "retired"] = "active"


class ModelsPage(BaseModel):
    data: list[ModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None


# -- errors (https://docs.anthropic.com/en/api/errors) ---------------------------------------------


class ErrorBody(BaseModel):
    type: str
    message: str
    job_id: str | None = None
    """imagegate extension: the job the error belongs to (poll ``GET /v1/jobs/{id}``)."""


class ErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorBody
