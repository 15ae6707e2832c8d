"""Wire models of OpenAI Chat Completions with image output (openai-python
``types/chat/completion_create_params.py``, ``chat_completion.py``, ``chat_completion_chunk.py``)
plus the image-output extension OpenRouter defined
(https://openrouter.ai/docs/features/multimodal/image-generation): ``modalities`` with
``"image"``, top-level ``image_config`` and ``message.images``.

Unknown request fields are ignored (clients send extras); the portable tuning knobs
(``max_tokens``, ``temperature``...) are declared, so they are type-checked like OpenAI does, and
then ignored: they change nothing about an image.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer
from pydantic_core import PydanticCustomError

# -- request ---------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageUrl(_Wire):
    url: str = Field(min_length=1)
    detail: str | None = None
    """``auto``, ``low``, ``high``, ``original``: accepted and ignored (the image is sent as it is)."""


class ImageUrlPart(_Wire):
    type: Literal["image_url"]
    image_url: ImageUrl


class RefusalPart(_Wire):
    """Assistant messages sent back as history may carry refusals."""

    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImageUrlPart | RefusalPart, Field(discriminator="type")]


_PART_FIELDS = {"text": "text", "image_url": "image_url.url", "refusal": "refusal"}


class MessageImageUrl(_Wire):
    url: str


class MessageImage(_Wire):
    """An image of an earlier answer, sent back in the history (``message.images``)."""

    type: Literal["image_url"] = "image_url"
    image_url: MessageImageUrl


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    images: list[MessageImage] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _plain_errors(cls, value: Any) -> Any:
        # the union's own errors would name its branches ("content.list[tagged-union[...]]");
        # check the shape first and say what is wrong in the caller's terms
        if value is not None and not isinstance(value, str | list):
            raise PydanticCustomError("content_type", "content must be a string or an array of content parts")
        for k, part in enumerate(value if isinstance(value, list) else ()):
            kind = part.get("type") if isinstance(part, dict) else None
            if not isinstance(kind, str) or kind not in _PART_FIELDS:  # a list or an object is no type
                raise PydanticCustomError(
                    "content_part", "content[{k}].type {kind} is not supported; use 'text' or 'image_url'",
                    {"k": k, "kind": repr(kind)})
            inner = part.get(kind)
            if kind == "image_url":
                inner = inner.get("url") if isinstance(inner, dict) else None
            if not isinstance(inner, str):
                raise PydanticCustomError("content_part", "content[{k}].{field} must be a string",
                                          {"k": k, "field": _PART_FIELDS[kind]})
        return value


class ImageConfig(_Wire):
    aspect_ratio: str | None = None
    image_size: str | None = None
    """``512``/``0.5K``, ``1K``, ``2K``, ``4K`` (both spellings of the 512 px tier are accepted)."""

    @field_validator("image_size", mode="before")
    @classmethod
    def _number_is_a_tier(cls, value: Any) -> Any:
        # ``"image_size": 512`` is the 512 px tier, as ``"512"`` is
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class StreamOptions(_Wire):
    include_usage: bool | None = None


class ChatCompletionRequest(_Wire):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: list[Literal["text", "image", "audio"]] | None = None
    image_config: ImageConfig | None = None
    n: int = Field(1, ge=1, le=10)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    image_output: Literal["data_url", "url"] | None = None
    """imagegate extension: ``url`` answers signed gateway URLs instead of data URLs."""
    tools: list[dict[str, Any]] | None = None
    """Tool definitions: their presence marks an agent's request (see api/conversation.py)."""
    # accepted and ignored
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    seed: int | None = None


# -- response --------------------------------------------------------------------------------


class _Sparse(BaseModel):
    """Omits its ``None`` fields when serialized (chunk deltas carry only what changed)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class ImageUrlOut(BaseModel):
    url: str


class ImageOut(BaseModel):
    type: Literal["image_url"] = "image_url"
    image_url: ImageUrlOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    images: list[ImageOut]


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(BaseModel):
    index: int
    finish_reason: FinishReason
    message: AssistantMessage


class CompletionTokensDetails(BaseModel):
    image_tokens: int
    reasoning_tokens: int


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ChunkDelta(_Sparse):
    role: Literal["assistant"] | None = None
    content: str | None = None
    images: list[ImageOut] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Sparse):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
