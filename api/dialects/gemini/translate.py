"""Pure translation between Gemini's ``generateContent`` (https://ai.google.dev/api/generate-content)
and imagegate's canonical types. No I/O: images in ``contents`` are only *located* here
(:func:`input_refs`); the shared flow loads them. The other concepts of this dialect have modules
of their own: :mod:`.predict` (Imagen's ``:predict``), :mod:`.stream`, :mod:`.errors`,
:mod:`.models` (the model list)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from api.dialects.gemini.schemas import (
    Candidate,
    GenerateContentRequest,
    GenerateContentResponse,
    ModalityTokenCount,
    OutBlob,
    OutContent,
    OutPart,
    PromptFeedback,
    UsageMetadata,
)
from api.dialects.gemini.schemas import Part as WirePart
from api.inputs import ImageRef
from core.errors import InvalidRequestError, NotFoundError
from core.generation import FORMAT_BY_MIME, DeliveredImage, GenerationRequest, OutputFormat, Part, Turn

ACTIONS = ("generateContent", "streamGenerateContent", "predict")
MODALITIES = ("TEXT", "IMAGE")  # also the default: no responseModalities means both

# canonical field names (core.planning's errors) -> the Gemini request's
GENERATE_PARAMS = {
    "n": "generationConfig.candidateCount",
    "aspect_ratio": "generationConfig.imageConfig.aspectRatio",
    "image_size": "generationConfig.imageConfig.imageSize",
    "output_format": "generationConfig.imageConfig.imageOutputOptions.mimeType",
    "output_compression": "generationConfig.imageConfig.imageOutputOptions.compressionQuality",
    "image": "contents",
}


def invalid(param: str, message: str) -> InvalidRequestError:
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


def _last_user_turn(wire: GenerateContentRequest) -> int:
    last = None
    for i, content in enumerate(wire.contents):
        role = (content.role or "user").strip().lower()
        if role not in ("user", "model"):
            raise invalid(f"contents[{i}].role", f"{content.role!r}. Please use a valid role: user, model.")
        if role == "user":
            last = i
    if last is None:
        raise InvalidRequestError("'contents' must hold a user turn with the prompt.", param="contents")
    return last


def _part_ref(part: WirePart, param: str) -> ImageRef | None:
    if part.inline_data is not None:
        return ImageRef(param=f"{param}.inlineData.data", data=part.inline_data.data,
                        mime_type=part.inline_data.mime_type)
    if part.file_data is not None:
        uri = part.file_data.file_uri.strip()
        if not uri.lower().startswith(("http://", "https://", "data:")):
            raise invalid(f"{param}.fileData.fileUri",
                          "only http(s) and data: URLs are fetched here (no Files API or gs:// URIs); "
                          "send the bytes as inlineData instead.")
        return ImageRef(param=f"{param}.fileData.fileUri", url=uri)
    return None


@dataclass(frozen=True)
class Conversation:
    """``contents`` as the canonical request holds it: the earlier turns, the last user turn's
    parts in the caller's order, and every image of them (the parts name images by index)."""

    history: list[Turn]
    parts: list[Part]
    prompt: str
    images: list[ImageRef]


def read_conversation(wire: GenerateContentRequest) -> Conversation:
    """Every turn up to the last user turn, parts kept in order (a reference image sent before the
    text stays before it); thoughts are left out, thought signatures kept."""
    last = _last_user_turn(wire)
    images: list[ImageRef] = []
    turns: list[Turn] = []
    for i, content in enumerate(wire.contents[: last + 1]):
        parts: list[Part] = []
        for k, part in enumerate(content.parts):
            if part.thought:
                continue
            ref = _part_ref(part, f"contents[{i}].parts[{k}]")
            if ref is not None:
                parts.append(Part(image=len(images), thought_signature=part.thought_signature))
                images.append(ref)
            elif part.text and part.text.strip():
                parts.append(Part(text=part.text, thought_signature=part.thought_signature))
        role = "model" if (content.role or "user").strip().lower() == "model" else "user"
        turns.append(Turn(role=role, parts=parts))
    current = turns.pop()
    prompt = "\n".join(p.text for p in current.parts if p.text).strip()
    if not prompt:
        raise InvalidRequestError(f"'contents[{last}]' (the last user turn) has no text to use as the prompt.",
                                  param=f"contents[{last}].parts")
    return Conversation(history=turns, parts=list(current.parts), prompt=prompt, images=images)


def input_refs(wire: GenerateContentRequest) -> list[ImageRef]:
    """Every image of the conversation, in order (the parts of :func:`to_generation` name them)."""
    return read_conversation(wire).images


def response_modalities(wire: GenerateContentRequest) -> tuple[str, ...]:
    config = wire.generation_config
    asked = tuple(config.response_modalities) if config and config.response_modalities else MODALITIES
    param = "generationConfig.responseModalities"
    for value in asked:
        if value not in MODALITIES:
            raise invalid(param, f"{value!r}. Image models answer with TEXT and IMAGE.")
    if "IMAGE" not in asked:
        raise invalid(param, f"{list(asked)}. This is an image model: include IMAGE.")
    return asked


def output_format(mime: str | None, param: str) -> OutputFormat | None:
    if mime is None:
        return None
    fmt = FORMAT_BY_MIME.get(mime.strip().lower())
    if fmt is None:
        raise invalid(param, f"{mime!r}. Supported values are image/png, image/jpeg and image/webp.")
    return fmt  # type: ignore[return-value]


def to_generation(wire: GenerateContentRequest, *, model: str) -> GenerationRequest:
    """The canonical request: the conversation (:func:`read_conversation`; its images are loaded
    by the shared flow), the prompt being the text of the last user turn."""
    response_modalities(wire)
    conversation = read_conversation(wire)
    system = None
    if wire.system_instruction is not None:
        system = "\n".join(p.text for p in wire.system_instruction.parts if p.text).strip() or None
    config = wire.generation_config
    image = config.image_config if config else None
    options = image.image_output_options if image else None
    fmt_param = "generationConfig.imageConfig.imageOutputOptions.mimeType"
    fmt = output_format(options.mime_type if options else None, fmt_param)
    if fmt is None and image is not None:
        fmt = output_format(image.output_mime_type, "generationConfig.imageConfig.outputMimeType")
    compression = options.compression_quality if options else None
    if compression is None and image is not None:
        compression = image.output_compression_quality
    return GenerationRequest(
        prompt=conversation.prompt, system=system, model=model, n=(config.candidate_count if config else None) or 1,
        parts=conversation.parts, history=conversation.history,
        aspect_ratio=image.aspect_ratio if image else None, image_size=image.image_size if image else None,
        output_format=fmt, output_compression=compression,
    )


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


def dump(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude_none=True)


