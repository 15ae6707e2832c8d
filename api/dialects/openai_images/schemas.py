"""Wire models of the OpenAI Images API (openai-python ``types/image_generate_params.py``,
``types/images_response.py``). Unknown request fields are ignored, as the real API's clients
send extras."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.generation import Background


class ImageGenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=32000)
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    aspect_ratio: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Background | None = None
    moderation: Literal["low", "auto"] | None = None
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class InputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class OutputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class ImagesUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    background: Literal["transparent", "opaque"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    size: str | None = None
    quality: str | None = None
    usage: ImagesUsage | None = None


class _ImageStreamEvent(BaseModel):
    """What every image event of a stream says of its image."""

    b64_json: str
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str


class ImagePartialEvent(_ImageStreamEvent):
    """``image_generation.partial_image`` / ``image_edit.partial_image`` (openai-python
    ``types/image_gen_partial_image_event.py``, ``types/image_edit_partial_image_event.py``)."""

    type: Literal["image_generation.partial_image", "image_edit.partial_image"]
    partial_image_index: int


class ImageCompletedEvent(_ImageStreamEvent):
    """``image_generation.completed`` / ``image_edit.completed`` (openai-python
    ``types/image_gen_completed_event.py``, ``types/image_edit_completed_event.py``)."""

    type: Literal["image_generation.completed", "image_edit.completed"]
    usage: ImagesUsage


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ImageInputReference(BaseModel):
    """An input image of a JSON edit: exactly one of ``image_url`` (https or data URL) or ``file_id``."""

    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(None, max_length=20_971_520)
    file_id: str | None = None


class ImageEditRequest(BaseModel):
    """``POST /v1/images/edits`` as JSON (openai-python ``EditImageBodyJsonParam``), or the text
    fields of the multipart form (values arrive as strings there and are coerced)."""

    model_config = ConfigDict(extra="ignore")

    images: list[ImageInputReference] = Field(default_factory=list, max_length=16)
    prompt: str = Field(min_length=1, max_length=32000)
    model: str | None = None
    mask: ImageInputReference | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    aspect_ratio: str | None = None
    quality: str | None = None
    input_fidelity: Literal["high", "low"] | None = None
    background: Background | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    moderation: Literal["low", "auto"] | None = None
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
