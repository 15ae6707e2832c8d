"""Wire models of the Gemini API (google-genai ``types.py``; https://ai.google.dev/api/generate-content).

Google's JSON parser takes both lowerCamelCase and snake_case field names (proto3 JSON mapping),
and so do these models; they always emit lowerCamelCase. Unknown request fields are ignored:
``tools``, ``toolConfig``, ``cachedContent``, sampling knobs and the like change nothing for an
image model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class _Wire(BaseModel):
    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
        serialize_by_alias=True,
    )


# -- request parts -----------------------------------------------------------------------------


class Blob(_Wire):
    """``inlineData``: base64 bytes and their declared type."""

    mime_type: str | None = None
    data: str


class FileData(_Wire):
    """``fileData``: an image by URI (imagegate fetches http(s) URLs)."""

    mime_type: str | None = None
    file_uri: str


class Part(_Wire):
    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class Content(_Wire):
    role: str | None = None
    parts: list[Part] = Field(default_factory=list)


class ImageOutputOptions(_Wire):
    mime_type: str | None = None
    compression_quality: int | None = Field(None, ge=0, le=100)


class ImageConfig(_Wire):
    aspect_ratio: str | None = None
    image_size: str | None = None
    image_output_options: ImageOutputOptions | None = None
    # the SDK's flat spellings of imageOutputOptions (it nests them itself on Vertex)
    output_mime_type: str | None = None
    output_compression_quality: int | None = Field(None, ge=0, le=100)


class GenerationConfig(_Wire):
    response_modalities: list[str] | None = None
    candidate_count: int | None = Field(None, ge=1, le=10)
    image_config: ImageConfig | None = None
    thinking_config: dict[str, Any] | None = None
    """Accepted and ignored: the catalogue decides the thinking level of each model."""

    @field_validator("response_modalities")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        # clients send "Image" or "image"; Google's enum names are upper-case
        return [v.strip().upper() for v in value] if value is not None else None


class SafetySetting(_Wire):
    category: str | None = None
    threshold: str | None = None


class GenerateContentRequest(_Wire):
    """``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``."""

    contents: list[Content] = Field(min_length=1)
    system_instruction: Content | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    """Accepted; imagegate's upstreams apply their own safety defaults."""

    @field_validator("system_instruction", mode="before")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        # a bare string is a common shortcut of the SDKs' users for {"parts": [{"text": ...}]}
        return {"parts": [{"text": value}]} if isinstance(value, str) else value


# -- Imagen :predict -------------------------------------------------------------------------


class PredictInstance(_Wire):
    prompt: str = Field(min_length=1)


class PredictOutputOptions(_Wire):
    mime_type: str | None = None
    compression_quality: int | None = Field(None, ge=0, le=100)


class PredictParameters(_Wire):
    sample_count: int | None = Field(None, ge=1, le=10)
    aspect_ratio: str | None = None
    sample_image_size: str | None = None
    image_size: str | None = None
    output_options: PredictOutputOptions | None = None
    include_rai_reason: bool | None = None
    person_generation: str | None = None
    safety_setting: str | None = None


class PredictRequest(_Wire):
    """``POST /v1beta/models/{model}:predict`` (the Imagen request shape, https://ai.google.dev/gemini-api/docs/imagen)."""

    instances: list[PredictInstance] = Field(min_length=1)
    parameters: PredictParameters | None = None

    @field_validator("instances", mode="before")
    @classmethod
    def _one_instance(cls, value: Any) -> Any:
        # Open WebUI's Gemini engine sends {"instances": {"prompt": ...}}: one instance, not in a list
        return [value] if isinstance(value, dict) else value


class Prediction(_Wire):
    bytes_base64_encoded: str | None = None
    mime_type: str | None = None
    rai_filtered_reason: str | None = None


class PredictResponse(_Wire):
    predictions: list[Prediction] | None = None


# -- response --------------------------------------------------------------------------------


class OutBlob(_Wire):
    mime_type: str
    data: str


class OutPart(_Wire):
    text: str | None = None
    inline_data: OutBlob | None = None


class OutContent(_Wire):
    role: str = "model"
    parts: list[OutPart]


class Candidate(_Wire):
    content: OutContent | None = None
    finish_reason: str | None = None
    index: int


class ModalityTokenCount(_Wire):
    modality: str
    token_count: int


class UsageMetadata(_Wire):
    prompt_token_count: int
    candidates_token_count: int | None = None
    total_token_count: int
    prompt_tokens_details: list[ModalityTokenCount] | None = None
    candidates_tokens_details: list[ModalityTokenCount] | None = None


class PromptFeedback(_Wire):
    block_reason: str
    block_reason_message: str | None = None


class GenerateContentResponse(_Wire):
    candidates: list[Candidate] | None = None
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None


# -- errors ------------------------------------------------------------------------------------


class Status(BaseModel):
    """``google.rpc.Status`` as JSON: ``code`` equals the HTTP status."""

    code: int
    message: str
    status: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: Status


# -- GET /v1beta/models ----------------------------------------------------------------------


class GeminiModel(_Wire):
    name: str
    base_model_id: str
    version: str
    display_name: str
    description: str
    input_token_limit: int
    output_token_limit: int
    supported_generation_methods: list[str]


class ListModelsResponse(_Wire):
    models: list[GeminiModel]
    next_page_token: str
