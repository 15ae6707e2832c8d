"""Pure translation between the OpenAI Images wire format and imagegate's canonical types."""

from __future__ import annotations

from typing import Any

from api.dialects.openai_images.schemas import (
    ErrorBody,
    ErrorResponse,
    ImageData,
    ImageEditRequest,
    ImageGenerateRequest,
    ImagesResponse,
    ImagesUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from core.errors import GatewayError, InvalidRequestError
from core.generation import AppliedParams, DeliveredImage, GenerationRequest, InputImage

# GatewayError.kind -> OpenAI error ``type`` (wire-formats §1.6 and §9.4)
_ERROR_TYPES: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "content_policy": "image_generation_user_error",
    "authentication": "invalid_request_error",
    "permission": "invalid_request_error",
    "not_found": "invalid_request_error",
    "model_not_found": "invalid_request_error",
    "conflict": "invalid_request_error",
    "payload_too_large": "invalid_request_error",
    "rate_limited": "requests",
    "insufficient_quota": "insufficient_quota",
    "upstream": "server_error",
    "upstream_timeout": "server_error",
    "unavailable": "server_error",
    "job_timeout": "server_error",
    "internal": "server_error",
}


def to_generation(
    wire: ImageGenerateRequest | ImageEditRequest, *, inputs: list[InputImage] | None = None,
    mask: InputImage | None = None,
) -> GenerationRequest:
    """The canonical request; ``inputs``/``mask`` are the edit's images, already stored by key."""
    if wire.stream:
        raise InvalidRequestError(
            "Invalid value for 'stream': streaming image generation is not offered by this "
            "gateway; omit 'stream' or send false.",
            param="stream",
            code="unsupported_value",
        )
    return GenerationRequest(
        prompt=wire.prompt,
        model=wire.model,
        n=wire.n,
        size=wire.size,
        aspect_ratio=wire.aspect_ratio,
        quality=wire.quality,
        output_format=wire.output_format,
        output_compression=wire.output_compression,
        background=wire.background,
        style=getattr(wire, "style", None),
        moderation=wire.moderation,
        input_images=list(inputs or []),
        mask=mask,
        input_fidelity=getattr(wire, "input_fidelity", None),
    )


def to_wire(
    *, created: int, applied: AppliedParams, images: list[DeliveredImage]
) -> ImagesResponse:
    """The images delivered, in the OpenAI shape (``data[]`` holds only delivered images)."""
    input_text = sum(i.usage.input_text_tokens for i in images)
    input_image = sum(i.usage.input_image_tokens for i in images)
    output_text = sum(i.usage.output_text_tokens for i in images)
    output_image = sum(i.usage.output_image_tokens for i in images)
    input_tokens = sum(i.usage.input_tokens for i in images)
    output_tokens = sum(i.usage.output_tokens for i in images)
    return ImagesResponse(
        created=created,
        data=[ImageData(b64_json=i.b64_json, url=i.url, revised_prompt=i.text) for i in images],
        background=applied.background,
        output_format=applied.output_format,
        size=applied.size or (f"{images[0].width}x{images[0].height}" if images else None),
        quality=_wire_quality(applied.quality),
        usage=ImagesUsage(
            input_tokens=input_tokens,
            input_tokens_details=InputTokensDetails(text_tokens=input_text, image_tokens=input_image),
            output_tokens=output_tokens,
            output_tokens_details=OutputTokensDetails(text_tokens=output_text, image_tokens=output_image),
            total_tokens=input_tokens + output_tokens,
        ),
    )


def _wire_quality(quality: str) -> str | None:
    return {"standard": "medium", "hd": "high"}.get(quality, quality)


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    message = error.message
    if error.job_id and error.kind == "job_timeout":
        message = f"{message} Poll GET /v1/jobs/{error.job_id} for its result."
    body = ErrorResponse(
        error=ErrorBody(
            message=message,
            type=_ERROR_TYPES.get(error.kind, "server_error"),
            param=error.param,
            code=error.code,
        )
    )
    data = body.model_dump()
    if error.job_id:
        data["error"]["job_id"] = error.job_id
    return error.status, data
