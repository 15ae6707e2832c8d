"""Pure translation between the OpenAI Images wire format and imagegate's canonical types."""

from __future__ import annotations

from typing import Any

from api.dialects import WireError
from api.dialects.openai_images.schemas import (
    ErrorBody,
    ErrorResponse,
    ImageCompletedEvent,
    ImageData,
    ImageEditRequest,
    ImageGenerateRequest,
    ImageInputReference,
    ImagePartialEvent,
    ImagesResponse,
    ImagesUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from api.inputs import ImageRef
from core.errors import ErrorKind, GatewayError, InvalidRequestError
from core.events import PartialImage
from core.generation import AppliedParams, DeliveredImage, GenerationRequest

# ErrorKind -> the OpenAI error ``type``, as the OpenAI API reference's error codes and the
# openai SDK's exception classes (chosen by HTTP status) expect them
ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.CONTENT_POLICY: "image_generation_user_error",
    ErrorKind.AUTHENTICATION: "invalid_request_error",
    ErrorKind.PERMISSION: "invalid_request_error",
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.MODEL_NOT_FOUND: "invalid_request_error",
    ErrorKind.GONE: "invalid_request_error",
    ErrorKind.CONFLICT: "invalid_request_error",
    ErrorKind.PAYLOAD_TOO_LARGE: "invalid_request_error",
    ErrorKind.RATE_LIMITED: "requests",
    ErrorKind.INSUFFICIENT_QUOTA: "insufficient_quota",
    ErrorKind.UPSTREAM: "server_error",
    ErrorKind.UPSTREAM_TIMEOUT: "server_error",
    ErrorKind.UNAVAILABLE: "server_error",
    ErrorKind.JOB_TIMEOUT: "server_error",
    ErrorKind.INTERNAL: "server_error",
}


def _image_ref(item: ImageInputReference, param: str) -> ImageRef:
    if item.file_id is not None or not item.image_url:
        raise InvalidRequestError(
            f"Invalid value for '{param}': send an image_url (https or data URL); file_id is not supported here.",
            param=param, code="invalid_value")
    return ImageRef(param=param, url=item.image_url)


def json_image_refs(wire: ImageEditRequest) -> tuple[list[ImageRef], ImageRef | None]:
    """Where a JSON edit's images and mask are (``images[].image_url``, ``mask.image_url``)."""
    images = [_image_ref(item, f"images[{i}]") for i, item in enumerate(wire.images)]
    return images, _image_ref(wire.mask, "mask") if wire.mask else None


def to_generation(wire: ImageGenerateRequest | ImageEditRequest, *, partials: bool = True) -> GenerationRequest:
    """The canonical request (an edit's images are loaded by the shared flow). A streamed
    request asks for its ``partial_images``, unless ``partials`` is off (nobody will watch them:
    an asynchronous submission)."""
    if wire.partial_images is not None and not wire.stream:
        raise InvalidRequestError("Invalid value for 'partial_images': it is only valid with 'stream': true.",
                                  param="partial_images", code="invalid_value")
    if wire.stream and wire.response_format == "url":
        raise InvalidRequestError(
            "Invalid value for 'response_format': a streamed answer carries its images as b64_json; "
            "omit 'response_format' or send 'b64_json'.", param="response_format", code="invalid_value")
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
        input_fidelity=getattr(wire, "input_fidelity", None),
        partial_images=(wire.partial_images or None) if wire.stream and partials else None,
    )


def usage_of(images: list[DeliveredImage]) -> ImagesUsage:
    """The token usage of ``images``, summed."""
    input_text = sum(i.usage.input_text_tokens for i in images)
    input_image = sum(i.usage.input_image_tokens for i in images)
    output_text = sum(i.usage.output_text_tokens for i in images)
    output_image = sum(i.usage.output_image_tokens for i in images)
    input_tokens = sum(i.usage.input_tokens for i in images)
    output_tokens = sum(i.usage.output_tokens for i in images)
    return ImagesUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(text_tokens=input_text, image_tokens=input_image),
        output_tokens=output_tokens,
        output_tokens_details=OutputTokensDetails(text_tokens=output_text, image_tokens=output_image),
        total_tokens=input_tokens + output_tokens,
    )


def to_wire(
    *, created: int, applied: AppliedParams, images: list[DeliveredImage]
) -> ImagesResponse:
    """The images delivered, in the OpenAI shape (``data[]`` holds only delivered images)."""
    return ImagesResponse(
        created=created,
        data=[ImageData(b64_json=i.b64_json, url=i.url, revised_prompt=i.text) for i in images],
        background=applied.background,
        output_format=applied.output_format,
        size=applied.size or (f"{images[0].width}x{images[0].height}" if images else None),
        quality=_wire_quality(applied.quality),
        usage=usage_of(images),
    )


STREAM_QUALITIES = frozenset({"low", "medium", "high", "xhigh", "max", "auto"})
"""The ``quality`` values of the stream events' types."""


def partial_event(*, edit: bool, partial: PartialImage, b64_json: str, created_at: int) -> ImagePartialEvent:
    """A draft, as the upstream described it."""
    return ImagePartialEvent(
        type="image_edit.partial_image" if edit else "image_generation.partial_image", b64_json=b64_json,
        partial_image_index=partial.partial_index, created_at=created_at, size=partial.size,
        quality=_stream_quality(partial.quality), background=partial.background,
        output_format=partial.output_format)


def completed_event(*, edit: bool, applied: AppliedParams, image: DeliveredImage,
                    created_at: int) -> ImageCompletedEvent:
    """A delivered image with its own usage."""
    return ImageCompletedEvent(
        type="image_edit.completed" if edit else "image_generation.completed", b64_json=image.b64_json or "",
        created_at=created_at, size=f"{image.width}x{image.height}",
        quality=_stream_quality(applied.quality), background=applied.background,
        output_format=applied.output_format, usage=usage_of([image]))


def _wire_quality(quality: str) -> str | None:
    return {"standard": "medium", "hd": "high"}.get(quality, quality)


def _stream_quality(quality: str) -> str:
    wire = _wire_quality(quality)
    return wire if wire in STREAM_QUALITIES else "auto"


def to_wire_error(error: GatewayError) -> WireError:
    """``{"error": {"message", "type", "param", "code"}}`` with the error's own status; the job's
    id rides along when the error is about a job."""
    message = error.message
    if error.job_id and error.kind is ErrorKind.JOB_TIMEOUT:
        message = f"{message} Poll GET /v1/jobs/{error.job_id} for its result."
    body = ErrorResponse(error=ErrorBody(message=message, type=ERROR_TYPES[error.kind], param=error.param,
                                         code=error.code))
    data: dict[str, Any] = body.model_dump()
    if error.job_id:
        data["error"]["job_id"] = error.job_id
    return WireError(status=error.status, body=data)
