"""OpenAI Images API for the GPT image models (https://platform.openai.com/docs/api-reference/images).

Generations are JSON; edits (the images a prompt edits: the current turn's, or a conversation's
last image) are multipart (``image[]``, ``mask`` and the scalar fields as text
parts), as the official SDK sends them. ``n`` is native: one call makes every image of its group.
Usage tokens are kept, shared out per image. Error answers are OpenAI's
(:mod:`worker.providers.openai_errors`: ``moderation_blocked`` is a content-policy error).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import UpstreamError
from core.generation import ProviderImage, Usage
from worker.providers.base import ProviderCall
from worker.providers.openai_errors import OpenAIErrors
from worker.providers.payload import decode_image, split_usage

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class TokensDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text_tokens: int = 0
    image_tokens: int = 0


class ImagesUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input_tokens: int = 0
    input_tokens_details: TokensDetails | None = None
    output_tokens: int = 0
    output_tokens_details: TokensDetails | None = None


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")
    created: int
    data: list[ImageItem] = []
    output_format: str | None = None
    usage: ImagesUsage | None = None


def _fields(call: ProviderCall) -> dict[str, Any]:
    applied = call.applied
    fields: dict[str, Any] = {"model": applied.upstream_model, "prompt": call.request.prompt, "n": call.count}
    if applied.upstream_size:
        fields["size"] = applied.upstream_size
    if applied.upstream_quality:
        fields["quality"] = applied.upstream_quality
    fields["output_format"] = applied.upstream_format
    if applied.output_compression is not None and applied.upstream_format in ("jpeg", "webp"):
        fields["output_compression"] = applied.output_compression
    if applied.background == "transparent":
        fields["background"] = "transparent"
    if call.request.moderation in ("low", "auto"):
        fields["moderation"] = call.request.moderation
    return fields


def build_generation_body(call: ProviderCall) -> dict[str, Any]:
    return _fields(call)


def build_edit_parts(call: ProviderCall) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    """Multipart text fields and files of an edit (``image[]`` repeated, ``mask``)."""
    fields = {k: str(v) for k, v in _fields(call).items()}
    if call.applied.input_fidelity:
        fields["input_fidelity"] = call.applied.input_fidelity
    files = [("image[]", (f"image-{i}.{_EXT.get(img.mime_type, 'png')}", img.data, img.mime_type))
             for i, img in enumerate(call.edit_inputs)]
    if call.mask is not None:
        files.append(("mask", ("mask.png", call.mask.data, call.mask.mime_type)))
    return fields, files


def parse_images(response: httpx.Response, call: ProviderCall, *, label: str) -> list[ProviderImage]:
    try:
        wire = ImagesResponse.model_validate_json(response.content)
    except ValidationError:
        raise UpstreamError(f"The {label} answered with a body that is not an ImagesResponse.",
                            code="upstream_bad_response", retryable=True) from None
    items = [d for d in wire.data if d.b64_json][: call.count]
    if not items:
        raise UpstreamError("The model returned no image.", code="no_images_generated", retryable=True)
    usage = wire.usage or ImagesUsage()
    total = Usage(
        input_tokens=usage.input_tokens,
        input_text_tokens=usage.input_tokens_details.text_tokens if usage.input_tokens_details else 0,
        input_image_tokens=usage.input_tokens_details.image_tokens if usage.input_tokens_details else 0,
        output_tokens=usage.output_tokens,
        output_text_tokens=usage.output_tokens_details.text_tokens if usage.output_tokens_details else 0,
        output_image_tokens=(usage.output_tokens_details.image_tokens if usage.output_tokens_details
                             else usage.output_tokens),
    )
    declared = f"image/{wire.output_format or call.applied.upstream_format}"
    return [decode_image(item.b64_json or "", declared_mime=declared, label=label, text=item.revised_prompt,
                         usage=share)
            # the call's usage is shared over the images it was asked for: an image it did not
            # deliver leaves its share unbilled rather than billed to the others
            for item, share in zip(items, split_usage(total, call.count)[:len(items)], strict=True)]


class OpenAIImagesAdapter(OpenAIErrors):
    label = "OpenAI Images API"

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        if call.edit_inputs:
            fields, files = build_edit_parts(call)
            return httpx.Request("POST", f"{base_url}/images/edits", headers=headers, data=fields, files=files)
        return httpx.Request("POST", f"{base_url}/images/generations", headers=headers,
                             json=build_generation_body(call))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        return parse_images(response, call, label=self.label)
