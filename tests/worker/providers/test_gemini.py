"""The Gemini API adapter (https://ai.google.dev/api/generate-content): the generateContent body
per model, and how answers are read: thought parts skipped, captions and usage kept, safety blocks
as content-policy errors, broken answers as retryable errors; through the registry, the key header,
retries and redaction. Google error bodies are tested in test_google_errors."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image

from core.config import Settings
from core.errors import ContentPolicyError, UpstreamError
from core.generation import Part, Turn
from tests.worker.providers.canned import NO_SECRETS, b64, error_response, image_bytes, json_body, make_call, ok
from worker.providers.base import HttpProvider, InputBytes
from worker.providers.gemini import GeminiAdapter, build_body
from worker.providers.registry import ProviderRegistry

pytestmark = pytest.mark.anyio

BASE = "https://generativelanguage.test"
adapter = GeminiAdapter()


# -- the request -----------------------------------------------------------------------------


async def test_request_url_method_and_headers() -> None:
    call = make_call("gemini-3-pro-image", aspect_ratio="16:9")
    request = adapter.build_request(call, base_url=BASE, headers={"x-goog-api-key": "AIza-key"})
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/v1beta/models/gemini-3-pro-image:generateContent"
    assert request.headers["x-goog-api-key"] == "AIza-key"
    assert request.headers["content-type"] == "application/json"


async def test_gemini_2_5_body_has_no_image_size() -> None:
    call = make_call("gemini-2.5-flash-image", aspect_ratio="16:9", prompt="A tiny banana-shaped robot")
    assert json_body(adapter.build_request(call, base_url=BASE, headers={})) == {
        "contents": [{"role": "user", "parts": [{"text": "A tiny banana-shaped robot"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }


@pytest.mark.parametrize(("quality", "size"), [("auto", "1K"), ("high", "2K")])
async def test_gemini_3_pro_body_has_image_size_and_no_thinking(quality: str, size: str) -> None:
    call = make_call("gemini-3-pro-image", aspect_ratio="16:9", quality=quality)
    body = json_body(adapter.build_request(call, base_url=BASE, headers={}))
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"],
                                        "imageConfig": {"aspectRatio": "16:9", "imageSize": size}}


async def test_gemini_3_pro_retired_ultra_alias_has_no_thinking() -> None:
    call = make_call("imagen-4.0-ultra-generate-001", aspect_ratio="1:1", image_size="4K")
    body = json_body(adapter.build_request(call, base_url=BASE, headers={}))
    assert "thinkingConfig" not in body["generationConfig"]
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "4K"}


@pytest.mark.parametrize(("model", "level"), [("imagen-4.0-fast-generate-001", "MINIMAL"),
                                              ("imagen-4.0-generate-001", "HIGH")])
async def test_gemini_3_1_body_has_the_thinking_level_of_the_alias(model: str, level: str) -> None:
    call = make_call(model, aspect_ratio="4:1", image_size="0.5K")
    request = adapter.build_request(call, base_url=BASE, headers={})
    assert str(request.url) == f"{BASE}/v1beta/models/gemini-3.1-flash-image:generateContent"
    assert json_body(request)["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "4:1", "imageSize": "512"},
        "thinkingConfig": {"thinkingLevel": level},
    }


async def test_gemini_3_1_without_a_thinking_level_sends_none() -> None:
    call = make_call("gemini-3.1-flash-image", aspect_ratio="1:8")
    assert "thinkingConfig" not in json_body(adapter.build_request(call, base_url=BASE, headers={}))["generationConfig"]


async def test_no_aspect_ratio_sends_only_the_size_tier() -> None:
    call = make_call("gemini-3-pro-image")
    config = json_body(adapter.build_request(call, base_url=BASE, headers={}))["generationConfig"]
    assert config["imageConfig"] == {"imageSize": "1K"}


async def test_no_aspect_ratio_on_2_5_sends_no_image_config() -> None:
    config = build_body(make_call("gemini-2.5-flash-image"))["generationConfig"]
    assert config == {"responseModalities": ["TEXT", "IMAGE"]}


async def test_input_images_are_inline_data_parts_after_the_text() -> None:
    first, second = image_bytes("png"), image_bytes("jpeg", color=(1, 2, 3))
    call = make_call("gemini-3-pro-image", prompt="Put the two together",
                     inputs=[InputBytes(first, "image/png"), InputBytes(second, "image/jpeg")])
    parts = json_body(adapter.build_request(call, base_url=BASE, headers={}))["contents"][0]["parts"]
    assert parts == [
        {"text": "Put the two together"},
        {"inlineData": {"mimeType": "image/png", "data": b64(first)}},
        {"inlineData": {"mimeType": "image/jpeg", "data": b64(second)}},
    ]


async def test_a_conversation_goes_as_turns_in_the_callers_order_with_thought_signatures() -> None:
    reference, earlier = image_bytes("png"), image_bytes("png", color=(9, 9, 9))
    call = make_call("gemini-3-pro-image", prompt="now make it blue",
                     inputs=[InputBytes(reference, "image/png"), InputBytes(earlier, "image/png")],
                     history=[Turn(role="user", parts=[Part(image=0), Part(text="this character, waving")]),
                              Turn(role="model", parts=[Part(text="Here it is"),
                                                        Part(image=1, thought_signature="c2lnbmF0dXJl")])],
                     parts=[Part(text="now make it blue")])
    assert build_body(call)["contents"] == [
        {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(reference)}},
                                   {"text": "this character, waving"}]},
        {"role": "model", "parts": [{"text": "Here it is"},
                                    {"inlineData": {"mimeType": "image/png", "data": b64(earlier)},
                                     "thoughtSignature": "c2lnbmF0dXJl"}]},
        {"role": "user", "parts": [{"text": "now make it blue"}]},
    ]


async def test_system_instruction() -> None:
    call = make_call("gemini-3.1-flash-image", system="You draw in watercolour.")
    body = json_body(adapter.build_request(call, base_url=BASE, headers={}))
    assert body["systemInstruction"] == {"parts": [{"text": "You draw in watercolour."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}]


async def test_no_system_instruction_when_none_given() -> None:
    assert "systemInstruction" not in build_body(make_call("gemini-3-pro-image"))


async def test_the_gemini_api_never_gets_vertex_output_options() -> None:
    # even for an applied jpeg upstream format (imageOutputOptions is a Vertex AI option only)
    call = make_call("vertex/gemini-3-pro-image", output_format="jpeg", output_compression=70, aspect_ratio="1:1")
    assert call.applied.upstream_format == "jpeg"
    body = json_body(adapter.build_request(call, base_url=BASE, headers={}))
    assert "imageOutputOptions" not in body["generationConfig"]["imageConfig"]


async def test_webp_is_asked_as_png() -> None:
    # the Gemini API has no output format option: nothing about webp goes upstream
    call = make_call("gemini-3-pro-image", output_format="webp", output_compression=50, aspect_ratio="1:1")
    body = json_body(adapter.build_request(call, base_url=BASE, headers={}))
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}


# -- the response ----------------------------------------------------------------------------


def answer(parts: list[dict[str, Any]], finish: str = "STOP", usage: dict[str, Any] | None = None,
           **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish,
                                            "index": 0}], "modelVersion": "gemini-3-pro-image", **extra}
    if usage is not None:
        body["usageMetadata"] = usage
    return ok(body)


def inline(data: bytes, mime: str = "image/png", **flags: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": b64(data)}, **flags}


async def test_image_and_caption_are_read() -> None:
    picture = image_bytes("png", 40, 30)
    [image] = adapter.parse_response(answer([{"text": "Here is your otter!"}, inline(picture)]),
                                     make_call("gemini-3-pro-image"))
    assert image.data == picture
    assert (image.mime_type, image.width, image.height) == ("image/png", 40, 30)
    assert image.text == "Here is your otter!"


async def test_jpeg_part_is_read_as_jpeg() -> None:
    picture = image_bytes("jpeg", 32, 32)
    [image] = adapter.parse_response(answer([inline(picture, "image/jpeg")]), make_call("gemini-2.5-flash-image"))
    assert (image.mime_type, image.text) == ("image/jpeg", None)


async def test_thought_parts_are_skipped() -> None:
    draft, final = image_bytes("png", 8, 8, (0, 0, 0)), image_bytes("png", 48, 27, (255, 255, 255))
    parts = [
        {"text": "Planning the composition...", "thought": True},
        inline(draft, thought=True, thoughtSignature="c2ln"),
        {"text": "A lighthouse."},
        inline(final, thoughtSignature="c2ln"),
    ]
    [image] = adapter.parse_response(answer(parts), make_call("gemini-3-pro-image"))
    assert image.data == final
    assert (image.width, image.height) == (48, 27)
    assert image.text == "A lighthouse."


async def test_only_thought_images_is_no_image() -> None:
    parts = [inline(image_bytes(), thought=True)]
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(answer(parts), make_call("gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("no_images_generated", True)


async def test_images_are_capped_at_the_call_count() -> None:
    first, second = image_bytes(color=(1, 1, 1)), image_bytes(color=(2, 2, 2))
    images = adapter.parse_response(answer([inline(first), inline(second)]), make_call("gemini-3-pro-image"))
    assert [i.data for i in images] == [first]


async def test_usage_is_mapped_from_usage_metadata() -> None:
    usage = {
        "promptTokenCount": 300, "candidatesTokenCount": 1130, "thoughtsTokenCount": 200, "totalTokenCount": 1630,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 42}, {"modality": "IMAGE", "tokenCount": 258}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}, {"modality": "TEXT", "tokenCount": 10}],
    }
    [image] = adapter.parse_response(answer([inline(image_bytes())], usage=usage), make_call("gemini-3-pro-image"))
    assert image.usage.model_dump() == {
        "input_tokens": 300, "input_text_tokens": 42, "input_image_tokens": 258,
        "output_tokens": 1330, "output_image_tokens": 1120, "output_text_tokens": 210,
    }
    assert image.usage.total_tokens == 1630


async def test_usage_without_details() -> None:
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302}
    [image] = adapter.parse_response(answer([inline(image_bytes())], usage=usage), make_call("gemini-2.5-flash-image"))
    assert (image.usage.input_tokens, image.usage.input_text_tokens, image.usage.output_tokens) == (12, 12, 1290)
    assert (image.usage.output_image_tokens, image.usage.output_text_tokens) == (0, 1290)


async def test_no_usage_metadata_is_zero_usage() -> None:
    [image] = adapter.parse_response(answer([inline(image_bytes())]), make_call("gemini-3-pro-image"))
    assert image.usage.total_tokens == 0


@pytest.mark.parametrize("reason", ["SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY"])
async def test_blocked_prompt_is_a_content_policy_error(reason: str) -> None:
    response = ok({"promptFeedback": {"blockReason": reason, "safetyRatings": []},
                   "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}})
    with pytest.raises(ContentPolicyError) as info:
        adapter.parse_response(response, make_call("gemini-3-pro-image"))
    assert info.value.code == "moderation_blocked"
    assert reason in info.value.message
    assert info.value.status == 400


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "SAFETY", "PROHIBITED_CONTENT"])
async def test_safety_finish_without_image_is_a_content_policy_error(reason: str) -> None:
    with pytest.raises(ContentPolicyError) as info:
        adapter.parse_response(answer([{"text": "I can't draw that."}], finish=reason), make_call("gemini-3-pro-image"))
    assert info.value.code == "moderation_blocked"
    assert reason in info.value.message


@pytest.mark.parametrize("reason", ["STOP", "NO_IMAGE", "IMAGE_OTHER", "MAX_TOKENS"])
async def test_no_image_without_a_safety_reason_is_retryable(reason: str) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(answer([{"text": "Here you go"}], finish=reason), make_call("gemini-3-pro-image"))
    assert type(info.value) is UpstreamError
    assert (info.value.code, info.value.retryable) == ("no_images_generated", True)
    assert reason in info.value.message


async def test_no_candidates_is_no_image() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(ok({"candidates": []}), make_call("gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("no_images_generated", True)


async def test_safety_finish_with_an_image_still_returns_it() -> None:
    [image] = adapter.parse_response(answer([inline(image_bytes())], finish="IMAGE_SAFETY"),
                                     make_call("gemini-3-pro-image"))
    assert image.mime_type == "image/png"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"candidates": "many"}', b"", b"<html>oops</html>"])
async def test_a_body_that_is_not_a_response_is_retryable(body: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(ok(body), make_call("gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_response", True)
    assert "Gemini API" in info.value.message


@pytest.mark.parametrize(
    "part",
    [
        {"inlineData": {"mimeType": "image/png", "data": "not base64!!"}},
        {"inlineData": {"mimeType": "image/png", "data": b64(image_bytes())[:-3]}},
        {"inlineData": {"mimeType": "image/png", "data": b64(b"just some text, not an image")}},
        {"inlineData": {"mimeType": "image/jpeg", "data": b64(image_bytes("png"))}},
        {"inlineData": {"mimeType": "image/webp", "data": b64(image_bytes("jpeg"))}},
    ],
    ids=["not-base64", "truncated-base64", "not-an-image", "png-declared-jpeg", "jpeg-declared-webp"],
)
async def test_a_broken_image_is_a_retryable_bad_image(part: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(answer([part]), make_call("gemini-3-pro-image"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_image", True)


# -- errors ----------------------------------------------------------------------------------


async def test_errors_are_google_errors_labelled_gemini() -> None:
    # the mapping itself is tested in test_google_errors
    body = {"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}
    error = adapter.parse_error(error_response(404, body), retryable=False, redact=NO_SECRETS)
    assert isinstance(error, UpstreamError)
    assert (error.code, error.route_failed) == ("upstream_model_not_found", True)
    assert "Gemini API" in error.message


# -- through the registry: key header, retries, redaction ------------------------------------


def provider_with(handler: Any, **settings: Any) -> tuple[HttpProvider, ProviderRegistry]:
    values: dict[str, Any] = {"gemini_api_key": "AIza-test-key-0123", "gemini_base_url": BASE, "openai_api_key": None,
                              "chat_upstream_base_url": None, "vertex_credentials_file": None,
                              "upstream_backoff_base_s": 0.0, "upstream_max_attempts": 3, "_env_file": None}
    values.update(settings)
    registry = ProviderRegistry.from_settings(Settings(**values), transport=httpx.MockTransport(handler))
    provider = registry.get("gemini")
    assert isinstance(provider, HttpProvider)
    return provider, registry


async def test_the_registry_sends_the_key_header_and_reads_the_image() -> None:
    picture = image_bytes("png", 64, 36)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"candidates": [{"content": {"parts": [inline(picture)]},
                                                         "finishReason": "STOP"}]})

    provider, registry = provider_with(handler)
    try:
        [image] = await provider.generate(make_call("nano-banana-pro", aspect_ratio="16:9"))
    finally:
        await registry.aclose()

    [request] = seen
    assert request.headers["x-goog-api-key"] == "AIza-test-key-0123"
    assert "key=" not in str(request.url)
    assert str(request.url) == f"{BASE}/v1beta/models/gemini-3-pro-image:generateContent"
    assert Image.open(io.BytesIO(image.data)).size == (64, 36)


async def test_the_registry_retries_no_image_answers_and_redacts_the_key() -> None:
    answers = iter([
        httpx.Response(200, json={"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "STOP"}]}),
        httpx.Response(400, json={"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                            "message": "Bad header x-goog-api-key: AIza-test-key-0123"}}),
    ])
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return next(answers)

    provider, registry = provider_with(handler)
    try:
        with pytest.raises(UpstreamError) as info:
            await provider.generate(make_call("gemini-3-pro-image"))
    finally:
        await registry.aclose()

    assert len(calls) == 2  # the empty answer was retried, the 400 was not
    assert info.value.code == "upstream_invalid_request"
    assert "AIza-test-key-0123" not in info.value.message
    assert "[redacted]" in info.value.message
