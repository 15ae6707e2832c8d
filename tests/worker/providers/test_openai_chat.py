"""The chat upstream adapter: another OpenAI-compatible gateway asked for images with
``modalities`` and ``image_config``, answering in ``message.images`` as data URLs
(https://openrouter.ai/docs/features/multimodal/image-generation)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from core.errors import ContentPolicyError, UpstreamError, UpstreamOverloadedError
from core.generation import Part, Turn
from tests.worker.providers.canned import NO_SECRETS, b64, error_response, image_bytes, json_body, make_call, ok
from worker.providers.base import InputBytes
from worker.providers.openai_chat import OpenAIChatAdapter, build_body

BASE = "https://gateway.test/api/v1"
adapter = OpenAIChatAdapter()


def test_request_url_headers_and_body() -> None:
    call = make_call("gateway/gemini-3-pro-image", aspect_ratio="16:9", quality="high")
    request = adapter.build_request(call, base_url=BASE, headers={"Authorization": "Bearer gw-key"})
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/chat/completions")
    assert request.headers["authorization"] == "Bearer gw-key"
    assert json_body(request) == {
        "model": "google/gemini-3-pro-image",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a lighthouse at dusk"}]}],
        "modalities": ["image", "text"],
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
    }


def test_system_message_and_input_images_as_data_urls() -> None:
    first, second = image_bytes("png"), image_bytes("jpeg")
    call = make_call("gateway/gemini-3.1-flash-image", system="Be brief.", prompt="Combine these",
                     inputs=[InputBytes(first, "image/png"), InputBytes(second, "image/jpeg")], aspect_ratio="4:1",
                     quality="low")
    body = build_body(call)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Combine these"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(first)}"}},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(second)}"}},
        ]},
    ]
    assert body["image_config"] == {"aspect_ratio": "4:1", "image_size": "0.5K"}  # OpenRouter spelling
    assert body["model"] == "google/gemini-3.1-flash-image"


def test_a_conversation_goes_as_user_and_assistant_messages() -> None:
    earlier = image_bytes("png")
    call = make_call("gateway/gemini-3-pro-image", prompt="now make it blue", inputs=[InputBytes(earlier, "image/png")],
                     history=[Turn(role="user", parts=[Part(text="a red fox")]),
                              Turn(role="model", parts=[Part(text="Here it is"), Part(image=0)])],
                     parts=[Part(text="now make it blue")])
    assert build_body(call)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a red fox"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Here it is"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(earlier)}"}}]},
        {"role": "user", "content": [{"type": "text", "text": "now make it blue"}]},
    ]


def test_no_aspect_ratio_sends_only_the_size() -> None:
    assert build_body(make_call("gateway/gemini-3-pro-image"))["image_config"] == {"image_size": "1K"}


def completion(images: list[str], content: str | None = "Here it is.", finish: str = "stop",
               usage: dict[str, Any] | None = None) -> httpx.Response:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if images:
        message["images"] = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    body: dict[str, Any] = {"id": "gen-1", "object": "chat.completion", "created": 1,
                            "model": "google/gemini-3-pro-image",
                            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return ok(body)


def test_image_caption_and_usage_are_read() -> None:
    picture = image_bytes("png", 50, 25)
    usage = {"prompt_tokens": 30, "completion_tokens": 1400, "total_tokens": 1430,
             "completion_tokens_details": {"image_tokens": 1290, "reasoning_tokens": 0}}
    [image] = adapter.parse_response(completion([f"data:image/png;base64,{b64(picture)}"], usage=usage),
                                     make_call("gateway/gemini-3-pro-image"))
    assert image.data == picture
    assert (image.mime_type, image.width, image.height, image.text) == ("image/png", 50, 25, "Here it is.")
    assert image.usage.model_dump() == {"input_tokens": 30, "input_text_tokens": 30, "input_image_tokens": 0,
                                        "output_tokens": 1400, "output_text_tokens": 110, "output_image_tokens": 1290}


def test_jpeg_data_url() -> None:
    [image] = adapter.parse_response(completion([f"data:image/jpeg;base64,{b64(image_bytes('jpeg'))}"], content=None),
                                     make_call("gateway/gemini-3-pro-image"))
    assert (image.mime_type, image.text) == ("image/jpeg", None)


def test_images_beyond_the_call_count_are_dropped() -> None:
    urls = [f"data:image/png;base64,{b64(image_bytes(color=(i, 0, 0)))}" for i in range(2)]
    assert len(adapter.parse_response(completion(urls), make_call("gateway/gemini-3-pro-image"))) == 1


def test_an_image_url_that_is_not_a_data_url_is_a_bad_image() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(completion(["https://cdn.test/image.png"]), make_call("gateway/gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_image", True)


@pytest.mark.parametrize("url", ["data:image/png;base64,@@@", f"data:image/jpeg;base64,{b64(image_bytes('png'))}"])
def test_a_broken_data_url_is_a_bad_image(url: str) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(completion([url]), make_call("gateway/gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_image", True)


def test_content_filter_without_image_is_a_content_policy_error() -> None:
    with pytest.raises(ContentPolicyError) as info:
        adapter.parse_response(completion([], content=None, finish="content_filter"),
                               make_call("gateway/gemini-3-pro-image"))
    assert info.value.code == "moderation_blocked"


@pytest.mark.parametrize("response", [completion([], content="I cannot draw today."),
                                      ok({"choices": []})])
def test_no_image_is_retryable(response: httpx.Response) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(response, make_call("gateway/gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("no_images_generated", True)


@pytest.mark.parametrize("body", [b"data: {}", b'{"choices": [{"message": "hi"}]}'])
def test_a_body_that_is_not_a_completion_is_retryable(body: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(ok(body), make_call("gateway/gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_response", True)


def test_errors_are_openai_errors_labelled_for_the_chat_upstream() -> None:
    error = adapter.parse_error(error_response(429, {"error": {"message": "Rate limit", "code": 429}}),
                                retryable=False, redact=NO_SECRETS)
    assert isinstance(error, UpstreamOverloadedError)
    assert "chat upstream" in error.message
    gone = adapter.parse_error(error_response(404, {"error": {"message": "No endpoints found", "code": 404}}),
                               retryable=False, redact=NO_SECRETS)
    assert isinstance(gone, UpstreamError)
    assert (gone.code, gone.route_failed) == ("upstream_model_not_found", True)
