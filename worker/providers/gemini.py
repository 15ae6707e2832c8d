"""Google Gemini ``generateContent`` for the Gemini image models
(https://ai.google.dev/api/generate-content, https://ai.google.dev/gemini-api/docs/image-generation).

One image per call (``n`` images are ``n`` calls). Thought parts are skipped; text parts become
the image's text; ``usageMetadata`` is kept. A blocked prompt (``promptFeedback.blockReason``, or
no image with a safety finish reason) is a content-policy error, never retried. The same adapter
serves Vertex AI (:mod:`worker.providers.vertex`): only the URL, auth and a few options differ.
Error answers are Google's (:mod:`worker.providers.google_errors`).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from core.errors import ContentPolicyError, UpstreamError
from core.generation import Part as RequestPart
from core.generation import ProviderImage, Usage
from worker.providers.base import InputBytes, ProviderCall
from worker.providers.google_errors import GoogleErrors
from worker.providers.payload import b64_text, decode_image

SAFETY_FINISH = frozenset({"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
                           "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION"})


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class InlineData(_Wire):
    mime_type: str | None = None
    data: str


class Part(_Wire):
    text: str | None = None
    inline_data: InlineData | None = None
    thought: bool | None = None


class Content(_Wire):
    role: str | None = None
    parts: list[Part] = []


class Candidate(_Wire):
    content: Content | None = None
    finish_reason: str | None = None


class PromptFeedback(_Wire):
    block_reason: str | None = None
    block_reason_message: str | None = None


class ModalityTokens(_Wire):
    modality: str | None = None
    token_count: int = 0


class UsageMetadata(_Wire):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int = 0
    prompt_tokens_details: list[ModalityTokens] = []
    candidates_tokens_details: list[ModalityTokens] = []


class GenerateContentResponse(_Wire):
    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None


def _inline(image: InputBytes) -> dict[str, Any]:
    return {"inlineData": {"mimeType": image.mime_type, "data": b64_text(image.data)}}


def _wire_part(part: RequestPart, call: ProviderCall) -> dict[str, Any]:
    out = {"text": part.text} if part.image is None else _inline(call.inputs[part.image])
    if part.thought_signature:
        out["thoughtSignature"] = part.thought_signature
    return out


def build_contents(call: ProviderCall) -> list[dict[str, Any]]:
    """``contents``: a route that takes turns gets the conversation as the caller sent it (the
    model's earlier images as ``model`` turns, with their thought signatures), parts in the
    caller's order; otherwise one user turn, the prompt and the images it edits."""
    request = call.request
    if not call.applied.multi_turn:
        return [{"role": "user", "parts": [{"text": request.prompt}, *map(_inline, call.edit_inputs)]}]
    contents = [{"role": turn.role, "parts": [_wire_part(p, call) for p in turn.parts]}
                for turn in request.history if turn.parts]
    contents.append({"role": "user", "parts": [_wire_part(p, call) for p in request.current_parts()]})
    return contents


def build_body(call: ProviderCall, *, vertex: bool = False) -> dict[str, Any]:
    """The generateContent body for one image of ``call`` (pure)."""
    applied = call.applied
    image_config: dict[str, Any] = {}
    if applied.aspect_ratio:
        image_config["aspectRatio"] = applied.aspect_ratio
    if applied.image_size:
        image_config["imageSize"] = applied.image_size
    if vertex and applied.upstream_format == "jpeg":
        output: dict[str, Any] = {"mimeType": "image/jpeg"}
        if applied.output_compression is not None:
            output["compressionQuality"] = applied.output_compression
        image_config["imageOutputOptions"] = output
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    if applied.thinking_level:
        config["thinkingConfig"] = {"thinkingLevel": applied.thinking_level}
    body: dict[str, Any] = {"contents": build_contents(call), "generationConfig": config}
    if call.request.system:
        body["systemInstruction"] = {"parts": [{"text": call.request.system}]}
    return body


def usage_from(metadata: UsageMetadata | None) -> Usage:
    if metadata is None:
        return Usage()
    input_image = sum(d.token_count for d in metadata.prompt_tokens_details if d.modality == "IMAGE")
    output_image = sum(d.token_count for d in metadata.candidates_tokens_details if d.modality == "IMAGE")
    output = metadata.candidates_token_count + metadata.thoughts_token_count
    return Usage(
        input_tokens=metadata.prompt_token_count,
        input_image_tokens=input_image,
        input_text_tokens=max(0, metadata.prompt_token_count - input_image),
        output_tokens=output,
        output_image_tokens=output_image,
        output_text_tokens=max(0, output - output_image),
    )


def parse_generate_content(response: httpx.Response, call: ProviderCall, *, label: str) -> list[ProviderImage]:
    try:
        wire = GenerateContentResponse.model_validate_json(response.content)
    except ValidationError:
        raise UpstreamError(f"The {label} answered with a body that is not a GenerateContentResponse.",
                            code="upstream_bad_response", retryable=True) from None
    if wire.prompt_feedback and wire.prompt_feedback.block_reason:
        raise ContentPolicyError(
            f"The prompt was blocked by the upstream's safety system ({wire.prompt_feedback.block_reason}).",
            code="moderation_blocked")
    candidate = wire.candidates[0] if wire.candidates else None
    parts = [p for p in (candidate.content.parts if candidate and candidate.content else []) if not p.thought]
    text = "".join(p.text for p in parts if p.text) or None
    usage = usage_from(wire.usage_metadata)
    images = [
        decode_image(p.inline_data.data, declared_mime=p.inline_data.mime_type, label=label, text=text,
                     usage=usage)
        for p in parts if p.inline_data is not None
    ][: call.count]
    if images:
        return images
    reason = candidate.finish_reason if candidate else None
    if reason in SAFETY_FINISH:
        raise ContentPolicyError(f"The image was blocked by the upstream's safety system ({reason}).",
                                 code="moderation_blocked")
    raise UpstreamError(f"The model returned no image (finish reason {reason or 'none'}).",
                        code="no_images_generated", retryable=True)


class GeminiAdapter(GoogleErrors):
    """The Gemini API: ``{base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``."""

    label = "Gemini API"

    def url(self, base_url: str, model: str) -> str:
        return f"{base_url}/v1beta/models/{model}:generateContent"

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        return httpx.Request("POST", self.url(base_url, call.applied.upstream_model),
                             headers=headers, json=build_body(call, vertex=False))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        return parse_generate_content(response, call, label=self.label)
