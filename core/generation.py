"""Canonical types: the only shapes that cross from the API to the worker and back.

Ingress dialects translate their wire bodies into a :class:`GenerationRequest`; submit resolves it
against the model catalogue into :class:`AppliedParams` (what will actually be asked of the
upstream); providers turn both into upstream calls and return :class:`ProviderImage` results.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.text import refused_character

OutputFormat = Literal["png", "jpeg", "webp"]
Background = Literal["transparent", "opaque", "auto"]

MIME_BY_FORMAT: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_BY_MIME: dict[str, str] = {mime: fmt for fmt, mime in MIME_BY_FORMAT.items()}


class Dialect(enum.StrEnum):
    """The ingress wire format a job arrived in (its errors and results are rendered in it)."""

    OPENAI_IMAGES = "openai_images"
    OPENAI_CHAT = "openai_chat"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    GEMINI = "gemini"
    SIMPLE = "simple"
    JOBS = "jobs"


class InputImage(BaseModel):
    """An image the caller sent (edits): stored once in the image store, referenced by key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    object_key: str
    mime_type: str
    width: int | None = None
    height: int | None = None


class Part(BaseModel):
    """One piece of a conversation turn, in the order the caller sent it: a text, or an image
    (its index in :attr:`GenerationRequest.input_images`). ``thought_signature`` is the opaque
    signature Gemini attaches to the parts it made; sent back with them, it lets the model go on
    from its own reasoning (https://ai.google.dev/gemini-api/docs/thought-signatures)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str | None = None
    image: int | None = Field(None, ge=0)
    thought_signature: str | None = None


class Turn(BaseModel):
    """An earlier turn of a conversation: the caller's (``user``) or the image model's (``model``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["user", "model"]
    parts: list[Part]


class GenerationRequest(BaseModel):
    """What the caller asked for, independent of the wire format it came in.

    A conversation is ``history`` (the earlier turns, oldest first) and the current turn:
    ``parts``, the text and images of the caller's last turn in the order it sent them (empty: the
    prompt, then every image that no earlier turn holds). ``prompt`` is the current turn's text.
    Parts name images by their index in ``input_images``, which holds every image of the
    conversation once. How a route uses it (:meth:`images_for`): an upstream that takes turns
    (Gemini) gets them all; one that takes a single prompt (GPT image, the demo) edits the current
    turn's images or, when it has none, the last image of the conversation (the model's previous
    picture).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    system: str | None = None
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    """Resolution tier as Google names it: ``512``, ``1K``, ``2K``, ``4K``."""
    quality: str | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Background | None = None
    style: str | None = None
    moderation: str | None = None
    input_images: list[InputImage] = Field(default_factory=list)
    """Images to edit or take as references; an edit when not empty."""
    mask: InputImage | None = None
    input_fidelity: Literal["high", "low"] | None = None
    partial_images: int | None = Field(None, ge=1, le=3)
    """How many partial images (drafts drawn on the way to each final image) to stream to the
    caller from an upstream that makes them (GPT image); None: none. Upstreams that make none
    ignore it."""
    parts: list[Part] = Field(default_factory=list)
    history: list[Turn] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)
    """What the dialect left out of the request (a coding agent's system prompt, its tools),
    reported in the job's ``applied.ignored``."""
    adjusted: dict[str, str] = Field(default_factory=dict)
    """What the dialect changed (an unknown model id served by the default model), reported in
    the job's ``applied.adjusted``."""

    @model_validator(mode="after")
    def _storable(self) -> GenerationRequest:
        # a job's request is stored as it is: its text holds nothing a database refuses (the
        # dialects refuse such text first, naming the field as the caller wrote it)
        for name in type(self).model_fields:
            value = getattr(self, name)
            found = refused_character(value) if isinstance(value, str) else None
            if found:
                raise ValueError(f"{name} contains {found}")
        return self

    @property
    def is_edit(self) -> bool:
        return bool(self.input_images)

    def history_images(self) -> list[int]:
        """The images of the earlier turns, in conversation order."""
        return [p.image for turn in self.history for p in turn.parts if p.image is not None]

    def current_parts(self) -> list[Part]:
        """The current turn, in the caller's order."""
        if self.parts:
            return list(self.parts)
        earlier = set(self.history_images())
        return [Part(text=self.prompt), *(Part(image=i) for i in range(len(self.input_images)) if i not in earlier)]

    def current_images(self) -> list[int]:
        return [p.image for p in self.current_parts() if p.image is not None]

    def images_for(self, *, multi_turn: bool) -> list[int]:
        """The images a route sends upstream: every image of the conversation to a route that
        takes turns; otherwise the current turn's, or else the conversation's last image."""
        if multi_turn:
            return [*self.history_images(), *self.current_images()]
        current = self.current_images()
        if current:
            return current
        earlier = self.history_images()
        return earlier[-1:]

    def history_text(self) -> str:
        """Every text of the earlier turns (what a route that takes turns also reads)."""
        return "\n".join(p.text for turn in self.history for p in turn.parts if p.text)


class AppliedParams(BaseModel):
    """What imagegate will actually ask for, decided from the catalogue and recorded on the job.

    ``width``/``height`` are known in advance for most models; ``None`` means the upstream picks
    (``size: auto`` on GPT image models, no aspect ratio on Gemini). ``adjusted`` lists every value
    that differs from what the caller sent ("7:4 -> 16:9"), ``ignored`` the fields that change
    nothing for this model: nothing is coerced silently.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    provider: str
    upstream_model: str
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    """Google's resolution tier sent upstream (``512``/``1K``/``2K``/``4K``), if any."""
    upstream_size: str | None = None
    """OpenAI's ``size`` sent upstream (``1024x1024``, ``auto``...), if any."""
    quality: str
    upstream_quality: str | None = None
    output_format: OutputFormat
    output_compression: int | None = None
    upstream_format: OutputFormat = "png"
    """The format asked of the upstream; imagegate transcodes when it differs from output_format."""
    background: Literal["transparent", "opaque"] = "opaque"
    thinking_level: str | None = None
    n_per_call: int = 1
    input_fidelity: str | None = None
    multi_turn: bool = False
    """Whether this route sends the conversation's earlier turns upstream (Gemini-family
    upstreams), or only the current prompt and the images it edits."""
    ignored: list[str] = Field(default_factory=list)
    adjusted: dict[str, str] = Field(default_factory=dict)

    @property
    def size(self) -> str | None:
        return f"{self.width}x{self.height}" if self.width and self.height else None

    @property
    def mime_type(self) -> str:
        return MIME_BY_FORMAT[self.output_format]


class Usage(BaseModel):
    """Token usage reported by the upstream for one image (zeros where it reports none)."""

    input_tokens: int = 0
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    output_tokens: int = 0
    output_text_tokens: int = 0
    output_image_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ProviderImage(BaseModel):
    """One image as a provider delivered it, bytes already in the requested output format."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    data: bytes
    mime_type: str
    width: int
    height: int
    text: str | None = None
    usage: Usage = Field(default_factory=Usage)


class DeliveredImage(BaseModel):
    """A stored image as handed to a dialect's renderer: its bytes as base64 or a URL."""

    id: str
    index: int
    mime_type: str
    width: int
    height: int
    text: str | None = None
    usage: Usage = Field(default_factory=Usage)
    b64_json: str | None = None
    url: str | None = None
