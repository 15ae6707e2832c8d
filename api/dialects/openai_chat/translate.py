"""Pure translation between OpenAI Chat Completions (with image output) and imagegate's canonical
types: no settings, no network, no database. The decisions this dialect makes are written in the
router's module docstring; the functions below implement them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from api.conversation import AgentSystemPrompt, ConversationBuilder, agent_system
from api.dialects import WireError
from api.dialects.openai_chat.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    ChunkDelta,
    CompletionTokensDetails,
    CompletionUsage,
    FinishReason,
    ImageOut,
    ImageUrlOut,
    ImageUrlPart,
    RefusalPart,
    TextPart,
)
from api.dialects.openai_images.translate import to_wire_error as _openai_error
from api.inputs import ImageRef
from core.errors import ContentPolicyError, GatewayError, InvalidRequestError, error_for_failed_job
from core.generation import DeliveredImage, GenerationRequest, Part, Turn

KEEP_ALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"

_SYSTEM_ROLES = ("system", "developer")
_TURN_ROLES = ("user", "assistant")

WIRE_PARAMS = {
    # canonical parameter names (core.planning's) -> where this dialect's caller set them
    "aspect_ratio": "image_config.aspect_ratio",
    "image_size": "image_config.image_size",
    "image": "messages",
    "prompt": "messages",
}


# -- wire -> canonical -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChatConversation:
    """A chat body's conversation, before its images are loaded (:func:`read_conversation`)."""

    history: list[Turn]
    parts: list[Part]
    prompt: str
    system: str | None
    images: list[ImageRef]
    ignored: list[str]


def read_conversation(wire: ChatCompletionRequest, *,
                      agent_system_prompt: AgentSystemPrompt = "drop") -> ChatConversation:
    """The conversation in order: user messages' texts and ``image_url`` parts, assistant
    messages' texts, markdown images and ``images``; the last user message is the current turn.
    ``system``/``developer`` messages make the system prompt (unless an agent's, see
    :mod:`api.conversation`); ``tool`` messages are left out; an image in a system message is
    refused rather than silently dropped."""
    builder = ConversationBuilder()
    system_texts = []
    for i, message in enumerate(wire.messages):
        if message.role in _SYSTEM_ROLES:
            for j, part in enumerate(message.content if isinstance(message.content, list) else ()):
                if isinstance(part, ImageUrlPart):
                    raise InvalidRequestError(
                        f"Invalid content in 'messages[{i}]': image_url parts are taken from user and assistant "
                        f"messages, not from a {message.role} message.", param=f"messages[{i}].content[{j}].image_url")
            if text := _text(message):
                system_texts.append(text)
            continue
        if message.role not in _TURN_ROLES:
            continue
        builder.start("user" if message.role == "user" else "model")
        content = message.content
        if isinstance(content, str):
            builder.text(content, param=f"messages[{i}].content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            param = f"messages[{i}].content[{j}]"
            if isinstance(part, TextPart):
                builder.text(part.text, param=f"{param}.text")
            elif isinstance(part, RefusalPart):
                builder.text(part.refusal, param=f"{param}.refusal")
            else:
                builder.image(ImageRef(url=part.image_url.url, param=f"{param}.image_url"))
        for k, image in enumerate(message.images or ()):
            builder.image(ImageRef(url=image.image_url.url, param=f"messages[{i}].images[{k}].image_url.url"))
    found = builder.finish()
    if found is None:
        last = max((i for i, m in enumerate(wire.messages) if m.role == "user"), default=None)
        if last is None:
            raise InvalidRequestError("Invalid value for 'messages': there is no user message; put the prompt in one.",
                                      param="messages")
        raise InvalidRequestError(
            f"Invalid value for 'messages[{last}]': the last user message has no text; say what to make.",
            param=f"messages[{last}].content")
    history, parts = found
    system = agent_system("\n\n".join(system_texts) or None, has_tools=bool(wire.tools), rule=agent_system_prompt,
                          ignored=builder.ignored)
    return ChatConversation(history=history, parts=parts, prompt=builder.prompt_of(parts), system=system,
                            images=builder.images, ignored=builder.ignored)


def to_generation(wire: ChatCompletionRequest, conversation: ChatConversation) -> GenerationRequest:
    """The canonical request (its images, ``conversation.images``, are loaded by the shared flow)."""
    _check_modalities(wire.modalities)
    config = wire.image_config
    return GenerationRequest(
        prompt=conversation.prompt,
        system=conversation.system,
        model=wire.model,
        n=wire.n,
        aspect_ratio=config.aspect_ratio if config else None,
        image_size=config.image_size if config else None,
        parts=conversation.parts,
        history=conversation.history,
        ignored=conversation.ignored,
    )


def _check_modalities(modalities: Sequence[str] | None) -> None:
    if modalities is None:
        return  # every model imagegate serves is an image model: ["image", "text"] is assumed
    if "image" not in modalities:
        raise InvalidRequestError(
            "Invalid value for 'modalities': imagegate serves image models only; include \"image\", "
            "e.g. [\"image\", \"text\"].", param="modalities")
    if "audio" in modalities:
        raise InvalidRequestError(
            "Invalid value for 'modalities': audio output is not offered; use [\"image\", \"text\"].",
            param="modalities", code="unsupported_value")


def _text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    texts = [p.text if isinstance(p, TextPart) else p.refusal for p in content
             if isinstance(p, TextPart | RefusalPart)]
    return "\n".join(t.strip() for t in texts if t.strip())


def wants_urls(wire: ChatCompletionRequest, header: str | None) -> bool:
    """Signed gateway URLs instead of data URLs: ``image_output: "url"`` in the body, or the
    ``X-Imagegate-Image-Output: url`` header (for clients whose body cannot be changed)."""
    if wire.image_output is not None:
        return wire.image_output == "url"
    return (header or "").strip().lower() == "url"


# -- canonical -> wire -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFailure:
    """An image of the job that was not delivered: its index, error code and message."""

    index: int
    code: str | None
    message: str | None


@dataclass(frozen=True)
class _Outcome:
    index: int
    finish_reason: FinishReason
    content: str | None
    images: list[ImageOut]


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def _image_out(image: DeliveredImage) -> ImageOut:
    url = f"data:{image.mime_type};base64,{image.b64_json}" if image.b64_json is not None else image.url
    if url is None:
        raise ValueError(f"image {image.id} has neither base64 nor a URL")
    return ImageOut(image_url=ImageUrlOut(url=url))


def is_blocked(failure: ImageFailure) -> bool:
    """Whether the upstream's safety system refused this image (rendered as ``content_filter``)."""
    return isinstance(error_for_failed_job(failure.code, failure.message, job_id=""), ContentPolicyError)


def _outcomes(images: Sequence[DeliveredImage], failures: Sequence[ImageFailure]) -> list[_Outcome]:
    """One choice per image of the job, by its index: a delivered image, or why there is none."""
    outcomes = [_Outcome(i.index, "stop", i.text, [_image_out(i)]) for i in images]
    for failure in failures:
        blocked = is_blocked(failure)
        message = failure.message or ("The image was blocked by the safety system." if blocked
                                      else "The model returned no image.")
        outcomes.append(_Outcome(failure.index, "content_filter" if blocked else "stop", message, []))
    return sorted(outcomes, key=lambda o: o.index)


def usage_of(images: Sequence[DeliveredImage]) -> CompletionUsage:
    prompt = sum(i.usage.input_tokens for i in images)
    completion = sum(i.usage.output_tokens for i in images)
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        completion_tokens_details=CompletionTokensDetails(
            image_tokens=sum(i.usage.output_image_tokens for i in images), reasoning_tokens=0),
    )


def to_wire(*, id: str, created: int, model: str, images: Sequence[DeliveredImage],
            failures: Sequence[ImageFailure] = ()) -> ChatCompletion:
    """The ``chat.completion``: choice ``k`` holds image ``k`` of the job (``n`` choices)."""
    return ChatCompletion(
        id=id, created=created, model=model,
        choices=[
            Choice(index=o.index, finish_reason=o.finish_reason,
                   message=AssistantMessage(content=o.content, images=o.images))
            for o in _outcomes(images, failures)
        ],
        usage=usage_of(images),
    )


# -- streaming (https://platform.openai.com/docs/api-reference/chat-streaming) ---------------------


def sse(data: ChatCompletionChunk | dict[str, Any]) -> bytes:
    """One ``data:`` event."""
    if isinstance(data, ChatCompletionChunk):
        return b"data: " + data.model_dump_json().encode() + b"\n\n"
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def role_chunks(*, id: str, created: int, model: str, n: int) -> bytes:
    """The opening chunks, sent before the image is made: the assistant role of every choice."""
    return b"".join(
        sse(ChatCompletionChunk(id=id, created=created, model=model,
                                choices=[ChunkChoice(index=k, delta=ChunkDelta(role="assistant"))]))
        for k in range(n)
    )


def result_chunks(*, id: str, created: int, model: str, images: Sequence[DeliveredImage],
                  failures: Sequence[ImageFailure] = ()) -> bytes:
    """Everything after the wait: each choice's images (whole) and text, each choice's finish
    chunk, the usage chunk (``choices: []``), then ``[DONE]``."""
    outcomes = _outcomes(images, failures)

    def chunk(choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> bytes:
        return sse(ChatCompletionChunk(id=id, created=created, model=model, choices=choices, usage=usage))

    out = [
        chunk([ChunkChoice(index=o.index, delta=ChunkDelta(content=o.content, images=o.images or None))])
        for o in outcomes if o.content is not None or o.images
    ]
    out += [chunk([ChunkChoice(index=o.index, delta=ChunkDelta(), finish_reason=o.finish_reason)])
            for o in outcomes]
    out.append(chunk([], usage_of(images)))
    out.append(DONE)
    return b"".join(out)


def error_chunk(error: GatewayError) -> bytes:
    """A failure after the stream began: the OpenAI error object as an event, then ``[DONE]``
    (the openai SDK raises ``APIError`` on it)."""
    return sse(to_wire_error(error).body) + DONE


def to_wire_error(error: GatewayError) -> WireError:
    """Errors on ``/v1/chat/completions`` are OpenAI error objects, as for images."""
    return _openai_error(error)
