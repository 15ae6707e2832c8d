"""Pure translation between the Gemini wire format (generateContent, Imagen ``:predict``, the model
list) and imagegate's canonical types. No I/O: images in ``contents`` are only *located* here
(:func:`input_refs`); the router fetches or decodes them and passes them back as ``inputs``."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from api.dialects.gemini.schemas import (
    Candidate,
    ErrorResponse,
    GeminiModel,
    GenerateContentRequest,
    GenerateContentResponse,
    ListModelsResponse,
    ModalityTokenCount,
    OutBlob,
    OutContent,
    OutPart,
    Prediction,
    PredictRequest,
    PredictResponse,
    PromptFeedback,
    Status,
    UsageMetadata,
)
from core.errors import GatewayError, InvalidRequestError, NotFoundError
from core.generation import FORMAT_BY_MIME, DeliveredImage, GenerationRequest, InputImage, OutputFormat
from core.routing import ModelSpec

ACTIONS = ("generateContent", "streamGenerateContent", "predict")
MODALITIES = ("TEXT", "IMAGE")  # also the default (seed 004: no responseModalities means both)

SSE_KEEPALIVE = b"\r\n"
"""Sent while a streamed job runs. A blank line is a no-op for every SSE parser; an SSE comment
(``: keep-alive``) is not: google-genai 3.4 takes any line not starting with ``data: `` for raw
JSON and raises ``UnknownApiResponseError`` on it."""

# canonical field names (core.planning's errors) -> the Gemini request's
GENERATE_PARAMS = {
    "n": "generationConfig.candidateCount",
    "aspect_ratio": "generationConfig.imageConfig.aspectRatio",
    "image_size": "generationConfig.imageConfig.imageSize",
    "output_format": "generationConfig.imageConfig.imageOutputOptions.mimeType",
    "output_compression": "generationConfig.imageConfig.imageOutputOptions.compressionQuality",
    "image": "contents",
}
PREDICT_PARAMS = {
    "n": "parameters.sampleCount",
    "aspect_ratio": "parameters.aspectRatio",
    "image_size": "parameters.sampleImageSize",
    "output_format": "parameters.outputOptions.mimeType",
    "output_compression": "parameters.outputOptions.compressionQuality",
    "image": "instances",
}


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid value for '{param}': {message}", param=param)


def split_model_action(model_action: str) -> tuple[str, str]:
    """``google/gemini-3-pro-image:generateContent`` -> (model, action); the id may hold ``/`` and
    ``:``, so the action is what follows the last ``:``."""
    model, sep, action = model_action.rpartition(":")
    if not sep or not model:
        raise NotFoundError(f"models/{model_action} is not a method of this API: use "
                            f"models/{{model}}:{{{'|'.join(ACTIONS)}}}.", code="unknown_method")
    if action not in ACTIONS:
        raise NotFoundError(f"Method '{action}' is not supported for models/{model}; this gateway serves "
                            + ", ".join(ACTIONS) + ".", code="unknown_method")
    return model, action


# -- request -> canonical -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """An image of the request, still to be decoded (``data``) or fetched (``uri``)."""

    param: str
    mime_type: str | None
    data: str | None = None
    uri: str | None = None


def _last_user_turn(wire: GenerateContentRequest) -> int:
    last = None
    for i, content in enumerate(wire.contents):
        role = (content.role or "user").strip().lower()
        if role not in ("user", "model"):
            raise _invalid(f"contents[{i}].role", f"{content.role!r}. Please use a valid role: user, model.")
        if role == "user":
            last = i
    if last is None:
        raise InvalidRequestError("'contents' must hold a user turn with the prompt.", param="contents")
    return last


def _turn_refs(wire: GenerateContentRequest, turn: int) -> list[ImageRef]:
    refs = []
    for k, part in enumerate(wire.contents[turn].parts):
        if part.thought:
            continue
        param = f"contents[{turn}].parts[{k}]"
        if part.inline_data is not None:
            refs.append(ImageRef(f"{param}.inlineData.data", part.inline_data.mime_type,
                                 data=standard_base64(part.inline_data.data)))
        elif part.file_data is not None:
            uri = part.file_data.file_uri.strip()
            if not uri.lower().startswith(("http://", "https://", "data:")):
                raise _invalid(f"{param}.fileData.fileUri",
                               "only http(s) and data: URLs are fetched here (no Files API or gs:// URIs); "
                               "send the bytes as inlineData instead.")
            refs.append(ImageRef(f"{param}.fileData.fileUri", part.file_data.mime_type, uri=uri))
    return refs


def standard_base64(data: str) -> str:
    """Proto3 JSON takes standard or URL-safe base64, padded or not (google-genai sends URL-safe);
    imagegate's decoder wants standard, padded."""
    compact = "".join(data.split()).replace("-", "+").replace("_", "/")
    return compact + "=" * (-len(compact) % 4)


def input_refs(wire: GenerateContentRequest) -> list[ImageRef]:
    """The images to edit: those of the last user turn; when it has none, those of the latest turn
    that has some (the model's previous image in a conversational edit)."""
    last = _last_user_turn(wire)
    for turn in (last, *(i for i in reversed(range(len(wire.contents))) if i != last)):
        refs = _turn_refs(wire, turn)
        if refs:
            return refs
    return []


def response_modalities(wire: GenerateContentRequest) -> tuple[str, ...]:
    config = wire.generation_config
    asked = tuple(config.response_modalities) if config and config.response_modalities else MODALITIES
    param = "generationConfig.responseModalities"
    for value in asked:
        if value not in MODALITIES:
            raise _invalid(param, f"{value!r}. Image models answer with TEXT and IMAGE.")
    if "IMAGE" not in asked:
        raise _invalid(param, f"{list(asked)}. This is an image model: include IMAGE.")
    return asked


def _output_format(mime: str | None, param: str) -> OutputFormat | None:
    if mime is None:
        return None
    fmt = FORMAT_BY_MIME.get(mime.strip().lower())
    if fmt is None:
        raise _invalid(param, f"{mime!r}. Supported values are image/png, image/jpeg and image/webp.")
    return fmt  # type: ignore[return-value]


def to_generation(wire: GenerateContentRequest, *, model: str, inputs: list[InputImage]) -> GenerationRequest:
    """The canonical request: the prompt is the text of the last user turn."""
    response_modalities(wire)
    last = _last_user_turn(wire)
    prompt = "\n".join(p.text for p in wire.contents[last].parts if p.text and not p.thought).strip()
    if not prompt:
        raise InvalidRequestError(f"'contents[{last}]' (the last user turn) has no text to use as the prompt.",
                                  param=f"contents[{last}].parts")
    system = None
    if wire.system_instruction is not None:
        system = "\n".join(p.text for p in wire.system_instruction.parts if p.text).strip() or None
    config = wire.generation_config
    image = config.image_config if config else None
    options = image.image_output_options if image else None
    fmt_param = "generationConfig.imageConfig.imageOutputOptions.mimeType"
    output_format = _output_format(options.mime_type if options else None, fmt_param)
    if output_format is None and image is not None:
        output_format = _output_format(image.output_mime_type, "generationConfig.imageConfig.outputMimeType")
    compression = options.compression_quality if options else None
    if compression is None and image is not None:
        compression = image.output_compression_quality
    return GenerationRequest(
        prompt=prompt, system=system, model=model, n=(config.candidate_count if config else None) or 1,
        aspect_ratio=image.aspect_ratio if image else None, image_size=image.image_size if image else None,
        output_format=output_format, output_compression=compression, input_images=inputs,
    )


def predict_to_generation(wire: PredictRequest, *, model: str) -> GenerationRequest:
    """Imagen's ``instances``/``parameters``. ``sampleCount`` defaults to 1 (the REST docs say 4;
    one image is the cheaper surprise)."""
    if len(wire.instances) > 1:
        raise _invalid("instances", "Imagen takes exactly one instance per request.")
    params = wire.parameters
    options = params.output_options if params else None
    return GenerationRequest(
        prompt=wire.instances[0].prompt, model=model, n=(params.sample_count if params else None) or 1,
        aspect_ratio=params.aspect_ratio if params else None,
        image_size=(params.sample_image_size or params.image_size) if params else None,
        output_format=_output_format(options.mime_type if options else None, "parameters.outputOptions.mimeType"),
        output_compression=options.compression_quality if options else None,
    )


def rename_params(error: GatewayError, names: dict[str, str]) -> GatewayError:
    """Say a canonical field (``aspect_ratio``) by its name in this request
    (``generationConfig.imageConfig.aspectRatio``)."""
    if error.param in names:
        wire_name = names[error.param]
        error.message = error.message.replace(f"'{error.param}'", f"'{wire_name}'")
        error.param = wire_name
        error.args = (error.message,)
    return error


# -- canonical -> response ------------------------------------------------------------------------


def usage_metadata(images: list[DeliveredImage]) -> UsageMetadata:
    """The images' usage summed (each image was its own upstream call)."""
    def total(field: str) -> int:
        return sum(getattr(i.usage, field) for i in images)

    def count(modality: str, field: str) -> ModalityTokenCount:
        return ModalityTokenCount(modality=modality, token_count=total(field))

    prompt, candidates = total("input_tokens"), total("output_tokens")
    return UsageMetadata(
        prompt_token_count=prompt, candidates_token_count=candidates, total_token_count=prompt + candidates,
        prompt_tokens_details=[count("TEXT", "input_text_tokens")]
        + ([count("IMAGE", "input_image_tokens")] if total("input_image_tokens") else []),
        candidates_tokens_details=([count("TEXT", "output_text_tokens")] if total("output_text_tokens") else [])
        + [count("IMAGE", "output_image_tokens")],
    )


def _candidate(image: DeliveredImage, index: int, *, include_text: bool) -> Candidate:
    parts = [OutPart(text=image.text)] if include_text and image.text else []
    parts.append(OutPart(inline_data=OutBlob(mime_type=image.mime_type, data=image.b64_json or "")))
    return Candidate(content=OutContent(parts=parts), finish_reason="STOP", index=index)


def to_wire(images: list[DeliveredImage], *, model_version: str, response_id: str,
            include_text: bool) -> GenerateContentResponse:
    """One candidate per delivered image (``index`` 0..n-1); text parts only when TEXT was asked."""
    return GenerateContentResponse(
        candidates=[_candidate(image, k, include_text=include_text) for k, image in enumerate(images)],
        usage_metadata=usage_metadata(images),
        model_version=model_version,
        response_id=response_id,
    )


def to_stream_chunks(images: list[DeliveredImage], *, model_version: str, response_id: str,
                     include_text: bool) -> list[GenerateContentResponse]:
    """One chunk per image, each a finished candidate; the usage rides on the last chunk."""
    return [
        GenerateContentResponse(
            candidates=[_candidate(image, k, include_text=include_text)],
            usage_metadata=usage_metadata(images) if k == len(images) - 1 else None,
            model_version=model_version,
            response_id=response_id,
        )
        for k, image in enumerate(images)
    ]


def blocked(message: str, *, model_version: str, response_id: str) -> GenerateContentResponse:
    """A prompt the safety system refused: Google answers 200 with ``promptFeedback``, no candidates."""
    return GenerateContentResponse(
        prompt_feedback=PromptFeedback(block_reason="SAFETY", block_reason_message=message),
        usage_metadata=UsageMetadata(prompt_token_count=0, total_token_count=0),
        model_version=model_version,
        response_id=response_id,
    )


def to_predict_wire(images: list[DeliveredImage]) -> PredictResponse:
    return PredictResponse(predictions=[Prediction(bytes_base64_encoded=i.b64_json or "", mime_type=i.mime_type)
                                        for i in images])


def predict_blocked(message: str, *, include_rai_reason: bool) -> PredictResponse:
    """Imagen drops filtered images; with ``includeRaiReason`` it says why instead."""
    return PredictResponse(predictions=[Prediction(rai_filtered_reason=message)] if include_rai_reason else None)


def dump(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude_none=True)


def sse_event(data: dict[str, Any]) -> bytes:
    """One ``data:`` event; Google separates events with CRLF CRLF."""
    return b"data: " + _json(data) + b"\r\n\r\n"


def json_array_item(data: dict[str, Any], *, first: bool) -> bytes:
    """An element of the streamed JSON array (``[{...},\\r\\n{...}]``, no ``alt=sse``)."""
    return (b"" if first else b",\r\n") + _json(data)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# -- errors ---------------------------------------------------------------------------------------

# GatewayError.kind -> (HTTP status = google.rpc code, google.rpc status name); wire-formats §4.6, §9.4
_STATUSES: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "INVALID_ARGUMENT"),
    "content_policy": (400, "INVALID_ARGUMENT"),
    "authentication": (400, "INVALID_ARGUMENT"),  # Google's answer to a bad key; a missing one is 401
    "permission": (403, "PERMISSION_DENIED"),
    "not_found": (404, "NOT_FOUND"),
    "model_not_found": (404, "NOT_FOUND"),
    "conflict": (409, "ABORTED"),
    "payload_too_large": (400, "INVALID_ARGUMENT"),  # as Google: "Request payload size exceeds the limit"
    "rate_limited": (429, "RESOURCE_EXHAUSTED"),
    "insufficient_quota": (429, "RESOURCE_EXHAUSTED"),
    "upstream": (500, "INTERNAL"),
    "upstream_timeout": (504, "DEADLINE_EXCEEDED"),
    "unavailable": (503, "UNAVAILABLE"),
    "job_timeout": (504, "DEADLINE_EXCEEDED"),
    "internal": (500, "INTERNAL"),
}
_TYPE = "type.googleapis.com/google.rpc."
_GOOGLE_AUTH = {"domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}


def retry_delay(seconds: float) -> str:
    """A protobuf Duration in JSON: ``"34s"``, ``"1.500s"``."""
    millis = math.ceil(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis / 1000:.3f}s"


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """``{"error": {"code", "message", "status", "details"}}``; ``details`` carry an ErrorInfo (the
    gateway's error code as ``reason``), a BadRequest naming the field, and RetryInfo when a retry
    delay is known (never for an exhausted balance)."""
    code, status = _STATUSES.get(error.kind, (500, "INTERNAL"))
    message = error.message
    details: list[dict[str, Any]] = []
    if error.kind == "authentication":
        if error.code == "missing_api_key":
            code, status = 401, "UNAUTHENTICATED"
            details.append({"@type": _TYPE + "ErrorInfo", "reason": "CREDENTIALS_MISSING", **_GOOGLE_AUTH})
        else:
            details.append({"@type": _TYPE + "ErrorInfo", "reason": "API_KEY_INVALID", **_GOOGLE_AUTH})
    elif error.code:
        info: dict[str, Any] = {"@type": _TYPE + "ErrorInfo", "reason": _reason(error.code), "domain": "imagegate"}
        if error.job_id:
            info["metadata"] = {"job_id": error.job_id}
        details.append(info)
    if error.param:
        details.append({"@type": _TYPE + "BadRequest",
                        "fieldViolations": [{"field": error.param, "description": message}]})
    if error.retry_after is not None and error.kind in ("rate_limited", "unavailable"):
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": retry_delay(error.retry_after)})
    if error.kind == "job_timeout" and error.job_id:
        message = f"{message} Poll GET /v1/jobs/{error.job_id} for its result."
    body = ErrorResponse(error=Status(code=code, message=message, status=status, details=details or None))
    return code, body.model_dump(exclude_none=True)


def _reason(code: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", code.upper()).strip("_")


# -- GET /v1beta/models ---------------------------------------------------------------------------

INPUT_TOKEN_LIMIT = 65536
OUTPUT_TOKEN_LIMIT = 32768
_VERSION = re.compile(r"(\d+(?:\.\d+)?)")


def model_resource(spec: ModelSpec) -> GeminiModel:
    head = spec.description.split(":")[0].strip()
    version = _VERSION.search(spec.id)
    return GeminiModel(
        name=f"models/{spec.id}",
        base_model_id=spec.id,
        version=version.group(1) if version else "1.0",
        display_name=head if head and head != spec.description and len(head) <= 60 else spec.id,
        description=spec.description,
        input_token_limit=INPUT_TOKEN_LIMIT,
        output_token_limit=OUTPUT_TOKEN_LIMIT,
        supported_generation_methods=list(ACTIONS),
    )


def list_models(specs: list[ModelSpec], *, page_size: int | None, page_token: str | None) -> ListModelsResponse:
    """A page of the catalogue; ``pageSize`` defaults to 50 and is capped at 1000 (as Google), the
    page token is the offset of the next page."""
    size = 50 if not page_size or page_size < 1 else min(page_size, 1000)
    start = 0
    if page_token:
        if not page_token.isdigit() or int(page_token) > len(specs):
            raise _invalid("pageToken", "not a token this API returned.")
        start = int(page_token)
    end = start + size
    return ListModelsResponse(
        models=[model_resource(s) for s in specs[start:end]],
        next_page_token=str(end) if end < len(specs) else "",
    )
