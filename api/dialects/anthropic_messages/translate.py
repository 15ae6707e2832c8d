"""Pure translation between the Anthropic Messages wire format and imagegate's canonical types.

Request: the system prompt is the top-level ``system`` (string or text blocks) followed by every
``role: "system"`` message (CG-Image's clients send it that way), left out for a coding agent's
request (one with ``tools``; see :mod:`api.conversation`). The conversation keeps its turns: the
prompt is the user's own text of the last user turn (client scaffolding such as
``<system-reminder>`` blocks cut out), earlier turns go with their texts and images in order,
image blocks (base64 or URL source) and the markdown images of earlier answers alike. The shared
flow loads those images (:class:`api.inputs.ImageRef` says where each one is).

Response: the Messages API has no image block, so (as CG-Image does) each image is a markdown image in the
one ``text`` block, and CG-Image's non-standard ``_images`` array repeats them. The image is a
``data:`` URL, or the gateway's signed URL when the router delivered URLs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.conversation import AgentSystemPrompt, ConversationBuilder, agent_system
from api.dialects import WireError
from api.dialects.anthropic_messages.schemas import (
    Base64ImageSource,
    ContentBlock,
    ErrorBody,
    ErrorResponse,
    FileImageSource,
    ImageAttachment,
    MessageCreateRequest,
    MessageResponse,
    MessageUsage,
    ModelInfo,
    ModelsPage,
    TextBlock,
    TextContent,
)
from api.inputs import ImageRef
from core.errors import ErrorKind, GatewayError, InvalidRequestError
from core.generation import DeliveredImage, GenerationRequest, Part, Turn
from core.ids import new_id
from core.routing import ModelSpec

CHARS_PER_TOKEN = 4
"""count_tokens estimate: about four characters of text per token (Anthropic's rule of thumb)."""
TOKENS_PER_IMAGE = 1600
"""count_tokens estimate: a fixed cost per input image (Anthropic's cost of a ~1.15 MP image)."""
DELTA_MAX_CHARS = 256 * 1024
"""A markdown image longer than this is split over several ``text_delta`` events."""
IMAGE_ALT = "Generated Image"

# ErrorKind -> (HTTP status, Anthropic error type), as the Anthropic API reference's errors page
# lists them (https://docs.anthropic.com/en/api/errors), chosen so that the anthropic SDK raises
# the matching exception class
ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.CONTENT_POLICY: (400, "invalid_request_error"),
    ErrorKind.AUTHENTICATION: (401, "authentication_error"),
    ErrorKind.PERMISSION: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.MODEL_NOT_FOUND: (404, "not_found_error"),
    ErrorKind.GONE: (410, "not_found_error"),
    ErrorKind.CONFLICT: (409, "invalid_request_error"),
    ErrorKind.PAYLOAD_TOO_LARGE: (413, "request_too_large"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorKind.INSUFFICIENT_QUOTA: (402, "billing_error"),
    ErrorKind.UPSTREAM: (500, "api_error"),
    ErrorKind.UPSTREAM_TIMEOUT: (504, "timeout_error"),
    ErrorKind.UNAVAILABLE: (529, "overloaded_error"),
    ErrorKind.JOB_TIMEOUT: (504, "timeout_error"),
    ErrorKind.INTERNAL: (500, "api_error"),
}


# -- wire -> canonical -----------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """What a Messages body asks for, before its images are loaded."""

    prompt: str
    system: str | None
    images: list[ImageRef]
    history: list[Turn] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _text_of(blocks: Sequence[TextBlock | ContentBlock]) -> str:
    return "\n".join(block.text for block in blocks if block.type == "text" and block.text is not None)


def _image_ref(block: ContentBlock, param: str) -> ImageRef:
    if isinstance(block.source, FileImageSource):
        raise InvalidRequestError(
            f"Invalid value for '{param}': image sources of type 'file' need the Files API, which "
            "this gateway does not offer; send the image as a 'base64' or 'url' source.",
            param=param, code="unsupported_value")
    source = block.source
    if isinstance(source, Base64ImageSource):
        return ImageRef(param=param, data=source.data, mime_type=source.media_type)
    assert source is not None
    return ImageRef(param=param, url=source.url)


def read_conversation(wire: MessageCreateRequest, *,
                      agent_system_prompt: AgentSystemPrompt = "drop") -> Conversation:
    """The prompt (the user's words in the last user turn), the system prompt (unless it is a
    coding agent's) and the conversation's turns, images in order."""
    system_parts = [] if wire.system is None else [_text_of(wire.system)]
    system_parts += [_text_of(m.content) for m in wire.messages if m.role == "system"]
    joined = "\n\n".join(p.strip() for p in system_parts if p.strip()) or None
    builder = ConversationBuilder()
    for i, message in enumerate(wire.messages):
        if message.role == "system":
            continue
        builder.start("user" if message.role == "user" else "model")
        for j, block in enumerate(message.content):
            param = f"messages[{i}].content[{j}]"
            if block.type == "text" and block.text is not None:
                builder.text(block.text, param=f"{param}.text")
            elif block.type == "image" and block.source is not None:
                builder.image(_image_ref(block, f"{param}.source"))
    found = builder.finish()
    if found is None:
        raise InvalidRequestError(
            "messages: the last user message must contain text; it is the image prompt.",
            param="messages", code="missing_required_parameter")
    history, parts = found
    system = agent_system(joined, has_tools=bool(wire.tools), rule=agent_system_prompt, ignored=builder.ignored)
    return Conversation(prompt=builder.prompt_of(parts), system=system, images=builder.images,
                        history=history, parts=parts, ignored=builder.ignored)


def to_generation(wire: MessageCreateRequest, conversation: Conversation, *, model: str | None = None,
                  adjusted: dict[str, str] | None = None) -> GenerationRequest:
    """The canonical request (the conversation's images are loaded by the shared flow); ``model``
    replaces the body's when the router chose another (an unknown id served by the default)."""
    config = wire.image_config
    return GenerationRequest(
        prompt=conversation.prompt,
        system=conversation.system,
        model=wire.model if model is None else model,
        n=wire.n,
        aspect_ratio=config.aspect_ratio if config else None,
        image_size=config.image_size if config else None,
        parts=conversation.parts,
        history=conversation.history,
        ignored=conversation.ignored,
        adjusted=adjusted or {},
    )


def estimate_input_tokens(conversation: Conversation) -> int:
    """``count_tokens``: ceil(characters of what is sent to the image model, the system prompt
    forwarded and the conversation's texts, / CHARS_PER_TOKEN) plus TOKENS_PER_IMAGE per image.
    An estimate: the upstream image models count differently."""
    texts = [conversation.system or "", *(p.text or "" for t in conversation.history for p in t.parts),
             *(p.text or "" for p in conversation.parts)]
    return math.ceil(sum(map(len, texts)) / CHARS_PER_TOKEN) + len(conversation.images) * TOKENS_PER_IMAGE


# -- canonical -> wire -----------------------------------------------------------------------


def request_id(job_id: str) -> str:
    """The ``request-id`` header of an answer about a job (Anthropic clients log it)."""
    return "req_" + job_id.removeprefix("job_")


def message_id(job_id: str) -> str:
    """The message id of a job: ``msg_`` and the job id's random part (so either finds the other)."""
    return "msg_" + job_id.removeprefix("job_")


def image_source(image: DeliveredImage) -> str:
    """A data URL of the image, or its gateway URL when it was delivered as one."""
    if image.url is not None:
        return image.url
    return f"data:{image.mime_type};base64,{image.b64_json or ''}"


def caption(count: int) -> str:
    return "Here's your image:" if count == 1 else f"Here are your {count} images:"


def text_parts(images: Sequence[DeliveredImage]) -> list[str]:
    """The text block in pieces: the caption, then per image its upstream text (revised prompt,
    model commentary) if any and its markdown image. Joined, they are the block's text."""
    parts = [caption(len(images))]
    for image in images:
        words = f"{image.text.strip()}\n\n" if image.text and image.text.strip() else ""
        parts.append(f"\n\n{words}![{IMAGE_ALT}]({image_source(image)})")
    return parts


def to_wire(*, message_id: str, model: str, images: Sequence[DeliveredImage]) -> MessageResponse:
    return MessageResponse(
        id=message_id,
        model=model,
        content=[TextContent(text="".join(text_parts(images)))],
        stop_reason="end_turn",
        stop_sequence=None,
        usage=MessageUsage(input_tokens=sum(i.usage.input_tokens for i in images),
                           output_tokens=sum(i.usage.output_tokens for i in images)),
        images=[ImageAttachment(mime_type=i.mime_type, data=image_source(i)) for i in images],
    )


def dump(response: MessageResponse) -> bytes:
    return response.model_dump_json(by_alias=True).encode()


# -- SSE (https://docs.anthropic.com/en/api/messages-streaming) ------------------------------------


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named SSE event; its name equals the JSON ``type``."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


PING = sse("ping", {"type": "ping"})


def message_start(*, message_id: str, model: str, input_tokens: int) -> bytes:
    """The first event: the Message with no content yet (sent before the image exists)."""
    return sse("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "content": [], "model": model,
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})


def finish_events(images: Sequence[DeliveredImage], *, max_delta_chars: int = DELTA_MAX_CHARS) -> list[bytes]:
    """Everything after ``message_start`` for a finished job: the text block (caption, then each
    markdown image, long ones split), ``message_delta`` with the stop reason and usage,
    ``message_stop``."""
    events = [sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})]
    for part in text_parts(images):
        for start in range(0, len(part), max_delta_chars):
            events.append(sse("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": part[start:start + max_delta_chars]}}))
    events.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(sse("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": sum(i.usage.input_tokens for i in images),
                  "output_tokens": sum(i.usage.output_tokens for i in images)}}))
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


def error_event(error: GatewayError) -> bytes:
    """An error after the 200 status line: ``event: error`` with the error body."""
    return sse("error", to_wire_error(error).body)


# -- errors (https://docs.anthropic.com/en/api/errors) ---------------------------------------------


def to_wire_error(error: GatewayError) -> WireError:
    """``{"type": "error", "error": {"type", "message"}}`` with a ``request-id`` header, which
    Anthropic clients log with every error."""
    status, kind = ERRORS[error.kind]
    message = error.message
    if error.job_id and error.kind is ErrorKind.JOB_TIMEOUT:
        message = f"{message} Poll GET /v1/jobs/{error.job_id} for its result."
    body = ErrorResponse(error=ErrorBody(type=kind, message=message, job_id=error.job_id))
    rid = request_id(error.job_id) if error.job_id else new_id("req")
    return WireError(status=status, body=body.model_dump(exclude_none=True), headers={"request-id": rid})


# -- models list (https://docs.anthropic.com/en/api/models-list) -----------------------------------

_WORDS = {"gpt": "GPT", "chatgpt": "ChatGPT"}


def display_name(model_id: str) -> str:
    """``gemini-3-pro-image`` -> ``Gemini 3 Pro Image``; ``gpt-image-2`` -> ``GPT Image 2``."""
    words = model_id.replace("/", " ").replace("-", " ").split()
    return " ".join(_WORDS.get(w, w[:1].upper() + w[1:]) for w in words)


def model_info(spec: ModelSpec) -> ModelInfo:
    created = datetime.fromtimestamp(spec.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ModelInfo(id=spec.id, display_name=display_name(spec.id), created_at=created)


def models_page(
    specs: Sequence[ModelSpec], *, limit: int = 20, after_id: str | None = None, before_id: str | None = None,
    lifecycle: Sequence[str] = (),
) -> ModelsPage:
    """One page of the offered models (all ``active``), paged by ``after_id``/``before_id``; an
    unknown cursor gives an empty page."""
    ids = [] if lifecycle and "active" not in lifecycle else [s.id for s in specs]
    by_id = {s.id: s for s in specs}
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        window, has_more = ids[start:start + limit], start + limit < len(ids)
    elif before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        window, has_more = ids[max(0, end - limit):end], end - limit > 0
    else:
        window, has_more = ids[:limit], limit < len(ids)
    return ModelsPage(data=[model_info(by_id[i]) for i in window], has_more=has_more,
                      first_id=window[0] if window else None, last_id=window[-1] if window else None)
