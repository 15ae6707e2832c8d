"""Imagen ``:predict`` (https://ai.google.dev/gemini-api/docs/imagen).

Imagen is shut down upstream (2026-08-17); the shipped catalogue maps its ids to Gemini
successors. This adapter stays for deployments that still reach an Imagen endpoint (an operator
models file routes ids to ``provider = "imagen"`` or ``"vertex_imagen"``). Up to 4 images a call.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from core.errors import ContentPolicyError, UpstreamError
from core.generation import ProviderImage
from worker.providers.base import ProviderCall
from worker.providers.google_errors import GoogleErrors
from worker.providers.payload import decode_image


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Prediction(_Wire):
    bytes_base64_encoded: str | None = None
    mime_type: str | None = None
    rai_filtered_reason: str | None = None


class PredictResponse(_Wire):
    predictions: list[Prediction] = []


def build_body(call: ProviderCall) -> dict[str, Any]:
    applied = call.applied
    parameters: dict[str, Any] = {"sampleCount": call.count}
    if applied.aspect_ratio:
        parameters["aspectRatio"] = applied.aspect_ratio
    if applied.image_size:
        parameters["sampleImageSize"] = applied.image_size
    if applied.upstream_format == "jpeg":
        output: dict[str, Any] = {"mimeType": "image/jpeg"}
        if applied.output_compression is not None:
            output["compressionQuality"] = applied.output_compression
        parameters["outputOptions"] = output
    return {"instances": [{"prompt": call.request.prompt}], "parameters": parameters}


def parse_predict(response: httpx.Response, call: ProviderCall, *, label: str) -> list[ProviderImage]:
    try:
        wire = PredictResponse.model_validate_json(response.content)
    except ValidationError:
        raise UpstreamError(f"The {label} answered with a body that is not a predict response.",
                            code="upstream_bad_response", retryable=True) from None
    images = [decode_image(p.bytes_base64_encoded, declared_mime=p.mime_type, label=label)
              for p in wire.predictions if p.bytes_base64_encoded]
    if images:
        return images[: call.count]
    filtered = [p.rai_filtered_reason for p in wire.predictions if p.rai_filtered_reason]
    if filtered:
        raise ContentPolicyError(f"The upstream's safety filter removed every image ({filtered[0]}).",
                                 code="moderation_blocked")
    raise UpstreamError("The model returned no image.", code="no_images_generated", retryable=True)


class ImagenAdapter(GoogleErrors):
    label = "Imagen API"

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        url = f"{base_url}/v1beta/models/{call.applied.upstream_model}:predict"
        return httpx.Request("POST", url, headers=headers, json=build_body(call))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        return parse_predict(response, call, label=self.label)
