"""Chat Completions with image output, driven by the official openai SDK and by
raw HTTP: the demo model in both modes, and every upstream family through the fake upstream."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
IMAGE_OUT = {"modalities": ["image", "text"]}


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def _decode_data_url(url: str) -> Image.Image:
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64", head
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    image.load()
    return image


def _images(extra: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``message.images`` / ``delta.images``: not an SDK field, so it lands in ``model_extra``."""
    return list((extra or {}).get("images") or [])


def _png_data_url(size: tuple[int, int] = (64, 48)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 80, 20)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


# -- the demo model, embedded and distributed ------------------------------------------------


def test_sdk_chat_returns_the_image_as_a_data_url(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"chat-one-{stack.mode}"))
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": "a lighthouse at dusk"}],
        extra_body={**IMAGE_OUT, "image_config": {"aspect_ratio": "16:9"}})
    completion = raw.parse()
    assert completion.id == "chatcmpl-" + raw.headers["x-imagegate-job-id"]
    assert completion.object == "chat.completion" and completion.model == "demo-image"
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert choice.message.content and "lighthouse" in choice.message.content
    images = _images(choice.message.model_extra)
    assert len(images) == 1 and images[0]["type"] == "image_url"
    assert _decode_data_url(images[0]["image_url"]["url"]).size == (1024, 576)
    assert completion.usage is not None and completion.usage.total_tokens == 0
    details = completion.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 0
    assert (details.model_extra or {}).get("image_tokens") == 0


def test_sdk_stream_collects_delta_images_and_the_usage_chunk(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"chat-stream-{stack.mode}"))
    stream = client.chat.completions.create(
        model="demo", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a fox in the snow"}],
        extra_body={**IMAGE_OUT, "image_config": {"aspect_ratio": "1:1"}})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    images = [img for c in chunks for ch in c.choices for img in _images(ch.delta.model_extra)]
    assert len(images) == 1 and _decode_data_url(images[0]["image_url"]["url"]).size == (1024, 1024)
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-job_")


def test_raw_sse_lines_in_order(stack: Stack) -> None:
    key = stack.create_key(f"chat-sse-{stack.mode}")
    with httpx.stream("POST", stack.base_url + CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                      json={"model": "demo", "stream": True, "messages": [{"role": "user", "content": "sse"}],
                            "image_config": {"aspect_ratio": "4:3"}}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        job_id = response.headers["x-imagegate-job-id"]
        text = response.read().decode()
    events = [e for e in _events(text) if not e.startswith(":")]  # keep-alive comments may interleave
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    head = {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk", "model": "demo-image"}
    assert all({k: c[k] for k in head} == head for c in chunks)
    assert len({c["created"] for c in chunks}) == 1
    role, content, finish, usage = chunks
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]
    (delta_choice,) = content["choices"]
    assert delta_choice["finish_reason"] is None and set(delta_choice["delta"]) == {"content", "images"}
    (img,) = delta_choice["delta"]["images"]
    assert img["type"] == "image_url" and _decode_data_url(img["image_url"]["url"]).size == (1024, 768)
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "completion_tokens_details": {"image_tokens": 0, "reasoning_tokens": 0}}


def test_seed_000_body_with_a_system_message_and_no_model(stack: Stack) -> None:
    key = stack.create_key(f"chat-seed0-{stack.mode}")
    response = httpx.post(stack.base_url + CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=120, json={
        "messages": [{"role": "system", "content": "You are an image generation assistant"},
                     {"role": "user", "content": "Generate an image of a sunset over mountains"}],
        "max_tokens": 8192})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "demo-image"
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop" and "sunset" in choice["message"]["content"]
    assert _decode_data_url(choice["message"]["images"][0]["image_url"]["url"]).size == (1024, 1024)
    job = httpx.get(f"{stack.base_url}/v1/jobs/{response.headers['x-imagegate-job-id']}",
                    headers={"Authorization": f"Bearer {key}"}).json()
    assert job["dialect"] == "openai_chat"
    assert job["request"]["system"] == "You are an image generation assistant"


def test_n_is_n_choices_of_one_image_each(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"chat-n-{stack.mode}"))
    completion = client.chat.completions.create(
        model="demo", n=2, messages=[{"role": "user", "content": "two cats"}],
        extra_body={**IMAGE_OUT, "image_config": {"aspect_ratio": "1:1"}})
    assert [c.index for c in completion.choices] == [0, 1]
    urls = [_images(c.message.model_extra)[0]["image_url"]["url"] for c in completion.choices]
    assert all(len(_images(c.message.model_extra)) == 1 for c in completion.choices)
    assert len(set(urls)) == 2


def test_image_output_url_answers_signed_gateway_urls(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"chat-url-{stack.mode}"))
    completion = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "by url"}],
        extra_body={**IMAGE_OUT, "image_output": "url"})
    url = _images(completion.choices[0].message.model_extra)[0]["image_url"]["url"]
    assert url.startswith(stack.base_url + "/v1/files/img_")
    response = httpx.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_prefer_respond_async_is_a_202_job(stack: Stack) -> None:
    key = stack.create_key(f"chat-async-{stack.mode}")
    response = httpx.post(stack.base_url + CHAT, timeout=60,
                          headers={"Authorization": f"Bearer {key}", "Prefer": "respond-async"},
                          json={"model": "demo", "messages": [{"role": "user", "content": "later"}]})
    assert response.status_code == 202, response.text
    assert response.json()["object"] == "job" and response.headers["location"].startswith("/v1/jobs/job_")


def test_errors_are_openai_errors(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"chat-errors-{stack.mode}"))
    messages: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.AuthenticationError):
        _client(stack, "sk-not-a-key").chat.completions.create(model="demo", messages=messages)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=messages)
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as text_only:
        client.chat.completions.create(model="demo", messages=messages, modalities=["text"])
    assert isinstance(text_only.value.body, dict) and text_only.value.body["param"] == "modalities"
    with pytest.raises(openai.BadRequestError) as ratio:
        client.chat.completions.create(model="demo", messages=messages,
                                       extra_body={"image_config": {"aspect_ratio": "wide"}})
    assert isinstance(ratio.value.body, dict) and ratio.value.body["param"] == "image_config.aspect_ratio"


def test_a_private_image_url_is_refused_by_the_ssrf_guard(stack: Stack) -> None:
    key = stack.create_key(f"chat-ssrf-{stack.mode}")
    response = httpx.post(stack.base_url + CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=60, json={
        "model": "demo", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "edit this"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/x.png"}}]}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_image_url" and error["type"] == "invalid_request_error"
    assert error["param"] == "messages[0].content[1].image_url"


# -- real upstream families through the fake upstream ----------------------------------------


def test_gemini_model_with_image_config_and_system_instruction(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="google/gemini-3-pro-image", extra_body={**IMAGE_OUT, "image_config": {"aspect_ratio": "16:9"}},
        messages=[{"role": "system", "content": "Photorealistic."},
                  {"role": "user", "content": "a harbour at dawn"}])
    completion = raw.parse()
    assert completion.model == "gemini-3-pro-image"
    assert raw.headers["x-imagegate-served-by"] == "gemini-3-pro-image"
    image = _decode_data_url(_images(completion.choices[0].message.model_extra)[0]["image_url"]["url"])
    assert image.size == (1376, 768)
    assert upstream.count("gemini") == 1
    sent = upstream.calls[-1].json or {}
    assert sent["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
    assert sent["systemInstruction"] == {"parts": [{"text": "Photorealistic."}]}
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


def test_a_data_url_input_is_an_edit_served_by_gpt_image_2(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = client.chat.completions.create(
        model="gpt-image-2", extra_body=IMAGE_OUT,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "add a small orange cat"},
            {"type": "image_url", "image_url": {"url": _png_data_url(), "detail": "auto"}}]}])
    assert completion.model == "gpt-image-2"
    assert len(_images(completion.choices[0].message.model_extra)) == 1
    assert upstream.count("openai_edits") == 1 and upstream.count("openai_generations") == 0


def test_a_safety_block_is_finish_reason_content_filter(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=5)
    completion = client.chat.completions.create(
        model="gemini-3-pro-image", extra_body=IMAGE_OUT,
        messages=[{"role": "user", "content": "something forbidden"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content and "SAFETY" in choice.message.content
    assert _images(choice.message.model_extra) == []
    assert upstream.count("gemini") == 1


def test_a_safety_block_in_a_stream(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=5)
    chunks = list(client.chat.completions.create(
        model="gemini-3-pro-image", stream=True, extra_body=IMAGE_OUT,
        messages=[{"role": "user", "content": "something forbidden"}]))
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["content_filter"]
    assert "SAFETY" in "".join(ch.delta.content or "" for c in chunks for ch in c.choices)


def test_an_upstream_failure_after_the_stream_began_is_an_error_event(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.add_fault("gemini", "status", status=400, times=5)
    stream = client.chat.completions.create(
        model="gemini-3-pro-image", stream=True, extra_body=IMAGE_OUT,
        messages=[{"role": "user", "content": "fails upstream"}])
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "server_error"


def test_a_failure_without_streaming_is_an_openai_error_status(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "status", status=400, times=5)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gemini-3-pro-image", extra_body=IMAGE_OUT,
                                       messages=[{"role": "user", "content": "fails upstream"}])
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "server_error"


def test_keep_alive_comments_while_a_slow_image_is_made(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    # three hangs past the 2 s upstream timeout on Gemini, then one on Vertex: well over 5 s
    upstream.add_fault("gemini", "hang", delay_s=4, times=3)
    upstream.add_fault("vertex_gemini", "hang", delay_s=4, times=1)
    with httpx.stream("POST", gw.base_url + CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                      json={"model": "gemini-3-pro-image", "stream": True,
                            "messages": [{"role": "user", "content": "slow"}]}) as response:
        events = _events(response.read().decode())
    assert events[0].startswith('data: {"id":"chatcmpl-') and '"role":"assistant"' in events[0]
    assert ": keep-alive" in events[1:-4]
    assert events[-1] == "data: [DONE]"
    assert '"images":[' in events[-4] and '"finish_reason":"stop"' in events[-3]
    assert upstream.count("vertex_gemini") == 2
