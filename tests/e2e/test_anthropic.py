"""The Anthropic Messages dialect end to end, driven by the official anthropic SDK (and raw HTTP
where the exact bytes matter): plain and streamed messages, edits, errors, count_tokens, models."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageParam, TextBlock
from PIL import Image

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

MARKDOWN_IMAGE = re.compile(r"!\[Generated Image\]\(([^)]+)\)")
USER: list[MessageParam] = [{"role": "user", "content": "a lighthouse at dusk"}]


def _client(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=key, max_retries=0, timeout=120)


def _text(message: Message) -> str:
    [block] = message.content
    assert isinstance(block, TextBlock)
    return block.text


def _error(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The ``error`` object of an Anthropic error body (checking the envelope)."""
    body = exc.body
    assert isinstance(body, dict) and body["type"] == "error" and set(body) == {"type", "error"}
    error: dict[str, Any] = body["error"]
    return error


def _decode_data_url(url: str) -> Image.Image:
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def _png_b64(color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# -- generation --------------------------------------------------------------------------------


def test_create_returns_a_markdown_data_url_image(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"anthropic-create-{stack.mode}"))
    raw = client.messages.with_raw_response.create(model="demo", max_tokens=1024, messages=USER)
    message = raw.parse()
    assert message.id.startswith("msg_") and message.role == "assistant" and message.model == "demo-image"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    text = _text(message)
    assert text.startswith("Here's your image:\n\n")
    urls = MARKDOWN_IMAGE.findall(text)
    assert len(urls) == 1
    assert _decode_data_url(urls[0]).size == (1024, 1024)
    body = raw.http_response.json()
    assert body["_images"] == [{"mimeType": "image/png", "data": urls[0]}]
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["x-imagegate-job-id"].startswith("job_")


def test_n_images_and_image_config_extensions_without_a_model(stack: Stack) -> None:
    key = stack.create_key(f"anthropic-n-{stack.mode}")
    response = httpx.post(stack.base_url + "/v1/messages", headers={"x-api-key": key}, timeout=120, json={
        "messages": USER, "n": 2, "image_config": {"aspect_ratio": "16:9"}})  # no model, no max_tokens
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "demo-image"
    urls = MARKDOWN_IMAGE.findall(body["content"][0]["text"])
    assert [_decode_data_url(u).size for u in urls] == [(1024, 576), (1024, 576)]
    assert urls[0] != urls[1] and [i["data"] for i in body["_images"]] == urls


def test_stream_accumulates_the_markdown_image(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"anthropic-stream-{stack.mode}"))
    with client.messages.stream(model="demo", max_tokens=1024, messages=USER) as stream:
        message = stream.get_final_message()
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    urls = MARKDOWN_IMAGE.findall(_text(message))
    assert len(urls) == 1 and _decode_data_url(urls[0]).format == "PNG"


def test_raw_sse_event_sequence(stack: Stack) -> None:
    key = stack.create_key(f"anthropic-sse-{stack.mode}")
    with httpx.stream("POST", stack.base_url + "/v1/messages?beta=true", timeout=120,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01",
                               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
                      json={"model": "demo", "max_tokens": 10, "stream": True, "messages": USER}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = _events(body)
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events if name != "ping"]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert [name for name, _ in events][:2] == ["message_start", "ping"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == "demo-image"
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert _decode_data_url(MARKDOWN_IMAGE.findall(text)[0]).size == (1024, 1024)


def test_seed_000_body_with_a_system_role_message(stack: Stack) -> None:
    key = stack.create_key(f"anthropic-seed-{stack.mode}")
    response = httpx.post(stack.base_url + "/v1/messages", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                          json={"messages": [{"role": "system", "content": "You are an image generation assistant"},
                                             {"role": "user", "content": "Generate an image of a sunset"}],
                                "max_tokens": 8192})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage",
                         "_images"}
    assert (body["type"], body["role"], body["stop_reason"]) == ("message", "assistant", "end_turn")
    assert body["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert _decode_data_url(body["_images"][0]["data"]).format == "PNG"
    job = httpx.get(stack.base_url + f"/v1/jobs/{response.headers['x-imagegate-job-id']}",
                    headers={"Authorization": f"Bearer {key}"}).json()
    assert job["dialect"] == "anthropic_messages"
    assert job["request"]["system"] == "You are an image generation assistant"
    assert job["request"]["prompt"] == "Generate an image of a sunset"


def test_prefer_respond_async_answers_202_with_the_job(stack: Stack) -> None:
    key = stack.create_key(f"anthropic-async-{stack.mode}")
    response = httpx.post(stack.base_url + "/v1/messages", json={"model": "demo", "messages": USER, "stream": True},
                          headers={"x-api-key": key, "Prefer": "respond-async"})
    assert response.status_code == 202
    assert response.json()["object"] == "job" and response.headers["Location"].startswith("/v1/jobs/job_")


def test_edit_with_a_base64_image_goes_to_openai_edits(gw: Stack, upstream: FakeUpstream) -> None:
    client = _client(gw, gw.create_key("anthropic-edit"))
    message = client.messages.create(model="gpt-image-2", max_tokens=1024, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png_b64()}},
        {"type": "text", "text": "make it blue"}]}])
    assert upstream.count("openai_edits") == 1 and upstream.count("openai_generations") == 0
    call = next(c for c in upstream.calls if c.endpoint == "openai_edits")
    assert call.files is not None
    sent = call.files.get("image", []) + call.files.get("image[]", [])
    assert len(sent) == 1 and sent[0][2] == base64.b64decode(_png_b64())
    urls = MARKDOWN_IMAGE.findall(_text(message))
    assert len(urls) == 1 and _decode_data_url(urls[0]).format == "PNG"


# -- errors ----------------------------------------------------------------------------------


def test_bad_key_is_an_authentication_error(stack: Stack) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        _client(stack, "ig-not-a-key").messages.create(model="demo", max_tokens=10, messages=USER)
    error = _error(info.value)
    assert error == {"type": "authentication_error", "message": error["message"]}


def test_an_unknown_model_is_served_by_the_default_model(stack: Stack) -> None:
    """Claude Code and other Anthropic clients ask for their own claude-... ids (a 404 only with
    IMAGEGATE_ANTHROPIC_UNKNOWN_MODEL=error: tests/inproc/test_operator_choices.py)."""
    client = _client(stack, stack.create_key(f"anthropic-default-{stack.mode}"))
    raw = client.messages.with_raw_response.create(model="claude-opus-9", max_tokens=10, messages=USER)
    assert raw.parse().model == "demo-image"
    assert json.loads(raw.headers["x-imagegate-applied"])["adjusted"] == {"model": "claude-opus-9 -> demo-image"}


@pytest.mark.parametrize("messages", [[{"role": "user", "content": ""}],
                                      [{"role": "user", "content": [{"type": "image"}]}],
                                      [{"role": "user", "content": [{"type": "text", "text": "x"}, {
                                          "type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "not base64!"}}]}]])
def test_invalid_body_is_a_bad_request(stack: Stack, messages: list[Any]) -> None:
    client = _client(stack, stack.create_key(f"anthropic-400-{stack.mode}-{len(str(messages))}"))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="demo", max_tokens=10, messages=messages)
    assert _error(info.value)["type"] == "invalid_request_error"


def test_a_private_image_url_is_refused_naming_the_block(gw: Stack, upstream: FakeUpstream) -> None:
    client = _client(gw, gw.create_key("anthropic-url"))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="gpt-image-2", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "text", "text": "edit"},
            {"type": "image", "source": {"type": "url", "url": gw.base_url + "/health"}}]}])
    assert "messages[0].content[1].source" in _error(info.value)["message"]
    assert upstream.count() == 0


def test_content_policy_block_is_a_bad_request(gw: Stack, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=5)
    client = _client(gw, gw.create_key("anthropic-policy"))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="gemini-3-pro-image", max_tokens=10, messages=USER)
    assert _error(info.value)["type"] == "invalid_request_error"
    assert upstream.count("gemini") == 1


def test_an_error_after_the_stream_started_is_an_error_event(gw: Stack, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=5)
    key = gw.create_key("anthropic-stream-error")
    response = httpx.post(gw.base_url + "/v1/messages", headers={"x-api-key": key}, timeout=120,
                          json={"model": "gemini-3-pro-image", "stream": True, "messages": USER})
    assert response.status_code == 200
    events = _events(response.text)
    assert [name for name, _ in events][:2] == ["message_start", "ping"]
    name, data = events[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert "message_stop" not in [n for n, _ in events]
    client = _client(gw, key)
    with (pytest.raises(anthropic.APIStatusError),  # the SDK raises on the error event
          client.messages.stream(model="gemini-3-pro-image", max_tokens=10, messages=USER) as stream):
        stream.get_final_message()


# -- count_tokens, models ----------------------------------------------------------------------


def test_count_tokens_is_an_estimate_and_makes_no_job(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"anthropic-count-{stack.mode}"))
    before = stack.count_rows()
    result = client.messages.count_tokens(model="demo", system="12345678", messages=[{"role": "user", "content": [
        {"type": "text", "text": "abcd"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png_b64()}}]}])
    assert result.input_tokens == 3 + 1600
    assert stack.count_rows() == before
    # an id the catalogue does not know counts as the default model's (IMAGEGATE_ANTHROPIC_UNKNOWN_MODEL)
    assert client.messages.count_tokens(model="claude-sonnet-4-5", messages=USER).input_tokens > 0


def test_models_list_in_the_anthropic_shape(stack: Stack) -> None:
    key = stack.create_key(f"anthropic-models-{stack.mode}")
    client = _client(stack, key)
    models = list(client.models.list())
    demo = next(m for m in models if m.id == "demo-image")
    assert (demo.type, demo.display_name, demo.created_at.year) == ("model", "Demo Image", 2026)
    assert client.models.retrieve("demo").display_name == "Demo Image"
    # without anthropic-version the OpenAI shape stays
    plain = httpx.get(stack.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert plain["object"] == "list" and "has_more" not in plain


def test_models_list_pages_through_the_sdk(gw: Stack) -> None:
    client = _client(gw, gw.create_key("anthropic-models-pages"))
    first = client.models.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    everything = [m.id for m in client.models.list(limit=2)]  # auto-paginates on last_id
    openai_ids = [m["id"] for m in httpx.get(gw.base_url + "/v1/models", headers={
        "Authorization": f"Bearer {client.api_key}"}).json()["data"]]
    assert everything == openai_ids and len(everything) > 2


# -- IMAGEGATE_ANTHROPIC_IMAGE_URLS ---------------------------------------------------------------


@pytest.fixture(scope="module")
def url_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("embedded", IMAGEGATE_ANTHROPIC_IMAGE_URLS="true")


def test_image_urls_setting_puts_gateway_urls_in_the_markdown(url_stack: Stack) -> None:
    client = _client(url_stack, url_stack.create_key("anthropic-urls"))
    raw = client.messages.with_raw_response.create(model="demo", max_tokens=10, messages=USER)
    urls = MARKDOWN_IMAGE.findall(_text(raw.parse()))
    assert len(urls) == 1 and urls[0].startswith(url_stack.base_url + "/v1/files/img_")
    assert raw.http_response.json()["_images"] == [{"mimeType": "image/png", "data": urls[0]}]
    image = httpx.get(urls[0])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (1024, 1024)
