"""An OpenAI-compatible chat upstream with image output, as another gateway serves it
(OpenRouter's ``modalities`` / ``image_config`` / ``message.images``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from tests.fakes import upstream_images as img
from tests.fakes.upstream_common import (
    Accepted,
    FakeRequest,
    FakeResponse,
    json_response,
    load_json_object,
    new_id,
    prompt_words,
    raw_json_response,
)
from tests.fakes.upstream_openai import MODERATION, OpenAIModel, check_bearer, openai_fail, validate_body

if TYPE_CHECKING:
    from tests.fakes.upstream import Call, FakeUpstream


class ChatImageUrl(OpenAIModel):
    url: str
    detail: Literal["auto", "low", "high", "original"] | None = None


class ChatTextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatImagePart(OpenAIModel):
    type: Literal["image_url"]
    image_url: ChatImageUrl


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Annotated[ChatTextPart | ChatImagePart, Field(discriminator="type")]]


class ChatImageConfig(OpenAIModel):
    aspect_ratio: str | None = None
    image_size: Literal["0.5K", "512", "1K", "2K", "4K"] | None = None


class ChatRequest(OpenAIModel):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    modalities: list[Literal["text", "image", "audio"]] | None = None
    image_config: ChatImageConfig | None = None
    n: Annotated[int, Field(ge=1, le=10)] | None = None
    stream: bool | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    user: str | None = None


CHAT_RATIOS = img.BASE_RATIOS + img.EXTREME_RATIOS


def handle_chat(fake: FakeUpstream, req: FakeRequest, call: Call) -> Accepted:
    check_bearer(req, fake.chat_key, "chat")
    data, problem = load_json_object(req)
    if problem or data is None:
        raise openai_fail(400, "We could not parse the JSON body of your request.", [problem or "no body"])
    call.model = data.get("model") if isinstance(data.get("model"), str) else None
    body: ChatRequest = validate_body(ChatRequest, data)
    problems: list[str] = []
    if body.modalities is None or "image" not in body.modalities:
        problems.append(f"modalities must include 'image' (got {body.modalities})")
    if body.stream:
        problems.append("stream: true is not supported by this upstream (images are returned whole)")
    config = body.image_config or ChatImageConfig()
    if config.aspect_ratio is not None and config.aspect_ratio not in CHAT_RATIOS:
        problems.append(
            f"image_config.aspect_ratio {config.aspect_ratio!r} is not one of {', '.join(CHAT_RATIOS)}"
        )
    texts: list[str] = []
    n_images = 0
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            texts.append(message.content)
            continue
        for j, part in enumerate(message.content):
            if isinstance(part, ChatTextPart):
                texts.append(part.text)
                continue
            n_images += 1
            url = part.image_url.url
            if url.startswith(("https://", "http://")):
                continue
            parsed = img.parse_data_url(url)
            where = f"messages[{i}].content[{j}].image_url.url"
            if parsed is None:
                problems.append(f"{where} must be an http(s) URL or a base64 data URL")
            else:
                problems.extend(p for p in [img.check_image(parsed[1], parsed[0], where)[1]] if p)
    if not any(m.role == "user" for m in body.messages):
        problems.append("messages need at least one user message")
    if problems:
        raise openai_fail(400, problems[0], problems)
    tier = {"0.5K": "512"}.get(config.image_size or "1K", config.image_size or "1K")
    width, height = img.GEMINI3_GRID[config.aspect_ratio or "1:1"][("512", "1K", "2K", "4K").index(tier)]
    image_tokens = img.GEMINI_IMAGE_TOKENS["gemini-3.1-flash-image"][tier]
    prompt = "\n".join(texts)
    with_text = body.modalities != ["image"]
    count = body.n or 1
    model = body.model

    def build(kind: str | None) -> FakeResponse:
        if kind == "moderation":
            return json_response(400, {"error": MODERATION})
        if kind == "bad_json":
            return raw_json_response(200, '{"id": "chatcmpl-x", "choices": [')
        choices = []
        for i in range(count):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": f"Here is your image: {prompt[:40]}" if with_text else None,
            }
            if kind == "no_image":
                message["content"] = "I could not draw that, sorry."
            else:
                payload = img.b64(img.render(width, height, "png", img.colour_for(prompt) + i))
                if kind == "bad_base64":
                    payload = "!!!not base64!!!"
                elif kind == "wrong_mime":
                    payload = img.b64(img.gif_bytes())
                message["images"] = [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + payload}}
                ]
            choices.append({"index": i, "finish_reason": "stop", "message": message})
        text_tokens = sum(prompt_words(c["message"]["content"] or "") for c in choices)
        produced = 0 if kind == "no_image" else image_tokens * count
        prompt_tokens = max(1, prompt_words(prompt)) + 258 * n_images
        return json_response(
            200,
            {
                "id": new_id("chatcmpl-", 24),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": produced + text_tokens,
                    "total_tokens": prompt_tokens + produced + text_tokens,
                    "completion_tokens_details": {"image_tokens": produced, "reasoning_tokens": 0},
                },
            },
        )

    return Accepted(model, prompt, build)
