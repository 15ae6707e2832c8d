"""Canonical types: the only shapes that cross from the API to the worker and back.

Ingress dialects translate their wire bodies into a :class:`GenerationRequest`; submit resolves it
against the model catalogue into :class:`AppliedParams` (what will actually be asked of the
upstream); providers turn both into upstream calls and return :class:`ProviderImage` results.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["png", "jpeg", "webp"]

MIME_BY_FORMAT: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_BY_MIME: dict[str, str] = {mime: fmt for fmt, mime in MIME_BY_FORMAT.items()}


class Dialect(enum.StrEnum):
    """The ingress wire format a job arrived in (its errors and results are rendered in it)."""

    OPENAI_IMAGES = "openai_images"
    JOBS = "jobs"


class GenerationRequest(BaseModel):
    """What the caller asked for, independent of the wire format it came in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    system: str | None = None
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    aspect_ratio: str | None = None
    quality: str | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    style: str | None = None
    moderation: str | None = None


class AppliedParams(BaseModel):
    """What imagegate will actually ask for, decided once at submit and recorded on the job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    provider: str
    upstream_model: str
    width: int
    height: int
    aspect_ratio: str
    quality: str
    output_format: OutputFormat
    output_compression: int | None = None
    background: Literal["transparent", "opaque"] = "opaque"
    ignored: list[str] = Field(default_factory=list)
    """Request fields that change nothing for this model, e.g. ``style`` (never result-changing)."""

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

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
