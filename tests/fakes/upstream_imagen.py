"""Imagen ``:predict`` on the Gemini API and Vertex AI (https://ai.google.dev/gemini-api/docs/imagen)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field
from pydantic.alias_generators import to_camel

from tests.fakes import upstream_images as img
from tests.fakes.upstream_common import Accepted, FakeRequest, FakeResponse, json_response, raw_json_response
from tests.fakes.upstream_google import GoogleModel, bad_request, check_auth, not_found, parse_body

if TYPE_CHECKING:
    from tests.fakes.upstream import FakeUpstream


class ImagenImage(GoogleModel):
    bytes_base64_encoded: str | None = None
    gcs_uri: str | None = None
    mime_type: str | None = None


class ImagenInstance(GoogleModel):
    prompt: str
    image: ImagenImage | None = None


class OutputOptions(GoogleModel):
    mime_type: Literal["image/png", "image/jpeg"] | None = None
    compression_quality: Annotated[int, Field(ge=0, le=100)] | None = None


class ImagenParameters(GoogleModel):
    sample_count: Annotated[int, Field(ge=1, le=4)] | None = None
    aspect_ratio: Literal["1:1", "3:4", "4:3", "9:16", "16:9"] | None = None
    sample_image_size: Literal["1K", "2K"] | None = None
    image_size: Literal["1K", "2K"] | None = None
    person_generation: (
        Literal["dont_allow", "allow_adult", "allow_all", "DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL"] | None
    ) = None
    output_options: OutputOptions | None = None
    safety_setting: (
        Literal[
            "block_low_and_above",
            "block_medium_and_above",
            "block_only_high",
            "block_none",
            "BLOCK_LOW_AND_ABOVE",
            "BLOCK_MEDIUM_AND_ABOVE",
            "BLOCK_ONLY_HIGH",
            "BLOCK_NONE",
        ]
        | None
    ) = None
    include_rai_reason: bool | None = None
    include_safety_attributes: bool | None = None
    language: str | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None  # Vertex only (checked below)
    seed: int | None = None
    add_watermark: bool | None = None
    enhance_prompt: bool | None = None
    storage_uri: str | None = None


class PredictRequest(GoogleModel):
    instances: Annotated[list[ImagenInstance], Field(min_length=1, max_length=1)]
    parameters: ImagenParameters | None = None


IMAGEN_VERTEX_ONLY = ("negative_prompt", "seed", "add_watermark", "enhance_prompt", "storage_uri")


def handle_predict(
    fake: FakeUpstream, req: FakeRequest, *, model: str, vertex: bool, project: str | None
) -> Accepted:
    check_auth(fake, req, vertex, project)
    if model not in img.IMAGEN_MODELS:
        raise not_found(model, "predict", violation=model not in img.GEMINI_SHUT_DOWN)
    body: PredictRequest = parse_body(req, PredictRequest)
    params = body.parameters or ImagenParameters()
    instance = body.instances[0]
    problems: list[str] = []
    if not instance.prompt.strip():
        problems.append("instances[0].prompt is empty")
    if instance.image is not None:
        if not vertex:
            problems.append("instances[0].image is only accepted on Vertex AI")
        elif instance.image.bytes_base64_encoded is not None:
            problems.extend(
                p
                for p in [
                    img.check_image(
                        instance.image.bytes_base64_encoded, instance.image.mime_type, "instances[0].image"
                    )[1]
                ]
                if p
            )
        elif instance.image.gcs_uri is None:
            problems.append("instances[0].image needs bytesBase64Encoded or gcsUri")
    ultra = model == "imagen-4.0-ultra-generate-001"
    count = params.sample_count or (1 if ultra else 4)
    if ultra and count != 1:
        problems.append(f"parameters.sampleCount must be 1 on {model}, got {count}")
    size = params.sample_image_size or params.image_size
    if params.sample_image_size and params.image_size and params.sample_image_size != params.image_size:
        problems.append("parameters.sampleImageSize and parameters.imageSize disagree")
    if size is not None and model == "imagen-4.0-fast-generate-001":
        problems.append(f"parameters.sampleImageSize is not supported by {model}")
    if not vertex:
        if (params.person_generation or "").lower() == "allow_all":
            problems.append("parameters.personGeneration allow_all is not allowed on the Gemini API")
        if (params.safety_setting or "").lower() == "block_none":
            problems.append("parameters.safetySetting block_none is Vertex only")
        for name in IMAGEN_VERTEX_ONLY:
            if getattr(params, name) is not None:
                problems.append(f"parameters.{to_camel(name)} is Vertex only")
    if problems:
        raise bad_request(problems)
    width, height = img.imagen_size(params.aspect_ratio or "1:1", size or "1K")
    options = params.output_options or OutputOptions()
    fmt = "jpeg" if options.mime_type == "image/jpeg" else "png"

    def build(kind: str | None) -> FakeResponse:
        if kind == "bad_json":
            return raw_json_response(200, '{"predictions": [')
        predictions: list[dict[str, Any]] = []
        for i in range(0 if kind == "no_image" else count):
            data = img.render(
                width, height, fmt, img.colour_for(instance.prompt) + i, quality=options.compression_quality
            )
            mime = img.MIME_BY_FORMAT[fmt]
            encoded = img.b64(data)
            if kind == "bad_base64":
                encoded = "!!!not base64!!!"
            elif kind == "wrong_mime":
                encoded, mime = img.b64(img.gif_bytes()), "image/png"
            prediction: dict[str, Any] = {"bytesBase64Encoded": encoded, "mimeType": mime}
            if params.storage_uri:
                prediction = {
                    "gcsUri": f"{params.storage_uri.rstrip('/')}/{int(time.time())}/sample_{i}.{fmt}",
                    "mimeType": mime,
                }
            if params.enhance_prompt:
                prediction["prompt"] = instance.prompt + ", highly detailed, studio lighting"
            if params.include_safety_attributes:
                prediction["safetyAttributes"] = {"categories": [], "scores": []}
                prediction["contentType"] = "image"
            predictions.append(prediction)
        out: dict[str, Any] = {"predictions": predictions}
        if params.include_safety_attributes:
            out["positivePromptSafetyAttributes"] = {
                "safetyAttributes": {"categories": [], "scores": []},
                "contentType": "Positive Prompt",
            }
        return json_response(200, out)

    return Accepted(model, instance.prompt, build)
