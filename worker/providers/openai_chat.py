"""An OpenAI-compatible chat upstream with image output: ``modalities``, ``image_config`` and
``message.images`` as OpenRouter defines them
(https://openrouter.ai/docs/features/multimodal/image-generation), so that imagegate can front
another gateway. Error answers are OpenAI's (:mod:`worker.providers.openai_errors`)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ContentPolicyError, UpstreamError
from core.generation import Part, ProviderImage, Usage
from worker.providers.base import ProviderCall
from worker.providers.openai_errors import OpenAIErrors
from worker.providers.payload import data_url, decode_image

_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str


class MessageImage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str | None = None
    image_url: ImageUrl


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None
    images: list[MessageImage] | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: Message
    finish_reason: str | None = None


class CompletionDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image_tokens: int = 0
    reasoning_tokens: int = 0


class ChatUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_details: CompletionDetails | None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    choices: list[Choice] = []
    usage: ChatUsage | None = None


def _content(parts: list[Part], call: ProviderCall) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if part.image is not None:
            image = call.inputs[part.image]
            out.append({"type": "image_url", "image_url": {"url": data_url(image.data, image.mime_type)}})
        elif part.text:
            out.append({"type": "text", "text": part.text})
    return out


def build_messages(call: ProviderCall) -> list[dict[str, Any]]:
    """The system prompt, then the conversation: earlier turns as user and assistant messages
    (the model's images as image parts), the current turn in the caller's order; a route that
    takes no turns gets the prompt and the images it edits."""
    request = call.request
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    if not call.applied.multi_turn:
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        content += [{"type": "image_url", "image_url": {"url": data_url(img.data, img.mime_type)}}
                    for img in call.edit_inputs]
        return [*messages, {"role": "user", "content": content}]
    for turn in request.history:
        content = _content(turn.parts, call)
        if content:
            messages.append({"role": "assistant" if turn.role == "model" else "user", "content": content})
    messages.append({"role": "user", "content": _content(request.current_parts(), call)})
    return messages


def build_body(call: ProviderCall) -> dict[str, Any]:
    applied = call.applied
    messages = build_messages(call)
    body: dict[str, Any] = {"model": applied.upstream_model, "messages": messages,
                            "modalities": ["image", "text"]}
    image_config: dict[str, Any] = {}
    if applied.aspect_ratio:
        image_config["aspect_ratio"] = applied.aspect_ratio
    if applied.image_size:
        # OpenAI-compatible gateways (OpenRouter) spell Google's 512 px tier "0.5K"
        image_config["image_size"] = "0.5K" if applied.image_size == "512" else applied.image_size
    if image_config:
        body["image_config"] = image_config
    return body


def parse_completion(response: httpx.Response, call: ProviderCall, *, label: str) -> list[ProviderImage]:
    try:
        wire = ChatCompletion.model_validate_json(response.content)
    except ValidationError:
        raise UpstreamError(f"The {label} answered with a body that is not a chat completion.",
                            code="upstream_bad_response", retryable=True) from None
    choice = wire.choices[0] if wire.choices else None
    usage = Usage()
    if wire.usage:
        details = wire.usage.completion_tokens_details
        image_tokens = details.image_tokens if details else 0
        usage = Usage(input_tokens=wire.usage.prompt_tokens, input_text_tokens=wire.usage.prompt_tokens,
                      output_tokens=wire.usage.completion_tokens, output_image_tokens=image_tokens,
                      output_text_tokens=max(0, wire.usage.completion_tokens - image_tokens))
    images: list[ProviderImage] = []
    for item in (choice.message.images or []) if choice else []:
        match = _DATA_URL.match(item.image_url.url)
        if match is None:
            raise UpstreamError(f"The {label} returned an image that is not a base64 data URL.",
                                code="upstream_bad_image", retryable=True)
        images.append(decode_image(match.group("data"), declared_mime=match.group("mime"), label=label,
                                   text=choice.message.content if choice else None, usage=usage))
    if images:
        return images[: call.count]
    if choice and choice.finish_reason == "content_filter":
        raise ContentPolicyError("The upstream's safety system blocked the image.", code="moderation_blocked")
    raise UpstreamError("The model returned no image.", code="no_images_generated", retryable=True)


class OpenAIChatAdapter(OpenAIErrors):
    label = "chat upstream"

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        return httpx.Request("POST", f"{base_url}/chat/completions", headers=headers, json=build_body(call))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        return parse_completion(response, call, label=self.label)
