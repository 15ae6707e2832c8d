"""Streamed OpenAI Images answers (``stream: true`` with ``partial_images``): the server-sent event
decoder, the pure stream reader fed the fake upstream's own streamed answers a line at a time,
and the provider end to end over the fake's in-process transport (drafts handed on while the
answer is still arriving, the call's usage on the final image, error events)."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.config import Settings
from core.errors import ContentPolicyError, UpstreamError
from tests.fakes import FakeUpstream
from tests.fakes.upstream_common import FakeRequest
from tests.fakes.upstream_openai import PARTIAL_IMAGE_TOKENS, STREAM_PAUSE_S
from tests.worker.providers.canned import NO_SECRETS, image_bytes, make_call
from worker.providers.base import InputBytes, PartialFrame, ProviderCall
from worker.providers.openai_images import ImageStreamReader, OpenAIImagesAdapter, build_edit_parts
from worker.providers.registry import ProviderRegistry
from worker.providers.sse import ServerSentEvent, SSEDecoder

KEY = "test-openai-key"


def _events(text: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [e for line in text.splitlines() if (e := decoder.feed(line)) is not None]
    last = decoder.finish()
    return events + ([last] if last else [])


def test_sse_decoder_reads_events_comments_and_multiline_data() -> None:
    text = (
        ': keep-alive\r\n\r\nevent: one\r\ndata: {"a":\r\ndata: 1}\r\n\r\nid: 7\nretry: 10\ndata: x\n\n'
        "\n\nevent: last\ndata: y"
    )
    assert _events(text) == [
        ServerSentEvent("one", '{"a":\n1}'),
        ServerSentEvent("message", "x"),
        ServerSentEvent("last", "y"),
    ]


def _streamed(fake: FakeUpstream, body: dict[str, object], *, fault: str | None = None) -> list[str]:
    """The lines of the fake upstream's streamed answer to a generations call."""
    if fault:
        fake.add_fault("openai_generations", fault)
    response = fake.dispatch(
        FakeRequest(
            "POST",
            "/v1/images/generations",
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
            body=json.dumps(body).encode(),
        )
    )
    assert response.status == 200 and response.headers["content-type"] == "text/event-stream", response.body
    assert fake.violations == []
    return response.body.decode().splitlines()


def _stream_call(**fields: object) -> ProviderCall:
    return make_call(
        "gpt-image-1.5", partial_images=2, quality="low", size="1024x1024", on_partial=lambda frame: None, **fields
    )


def test_the_reader_hands_on_each_draft_then_the_final_image_with_the_calls_usage() -> None:
    call = _stream_call(indices=[4])
    lines = _streamed(
        FakeUpstream(),
        {
            "model": "gpt-image-1.5",
            "prompt": "p",
            "quality": "low",
            "size": "1024x1024",
            "stream": True,
            "partial_images": 2,
        },
    )
    reader = ImageStreamReader(call, label="OpenAI Images API", redact=NO_SECRETS)
    frames = [f for line in lines if (f := reader.feed(line)) is not None]
    assert [(f.index, f.partial_index, f.output_format, f.size, f.quality, f.background) for f in frames] == [
        (4, 0, "png", "1024x1024", "low", "opaque"),
        (4, 1, "png", "1024x1024", "low", "opaque"),
    ]
    assert all(Image.open(io.BytesIO(f.data)).size == (1024, 1024) for f in frames)
    [image] = reader.images()
    assert image.mime_type == "image/png" and (image.width, image.height) == (1024, 1024)
    assert image.data not in {f.data for f in frames}
    # the drafts' tokens are in the call's usage: billed once, with the final image
    assert image.usage.output_image_tokens == 272 + 2 * PARTIAL_IMAGE_TOKENS
    assert image.usage.input_text_tokens == 1


def test_an_error_event_ends_the_call_after_its_drafts() -> None:
    lines = _streamed(
        FakeUpstream(),
        {"model": "gpt-image-1.5", "prompt": "p", "stream": True, "partial_images": 1},
        fault="stream_error",
    )
    reader = ImageStreamReader(_stream_call(), label="OpenAI Images API", redact=NO_SECRETS)
    frames = []
    with pytest.raises(UpstreamError) as caught:
        for line in lines:
            if (frame := reader.feed(line)) is not None:
                frames.append(frame)
    assert len(frames) == 1
    assert caught.value.retryable and "server_error" in caught.value.message


def test_error_events_as_the_upstream_words_them() -> None:
    moderation = {
        "type": "error",
        "error": {
            "type": "image_generation_user_error",
            "code": "moderation_blocked",
            "message": "Your request was rejected by the safety system.",
            "param": None,
        },
    }
    reader = ImageStreamReader(_stream_call(), label="OpenAI Images API", redact=NO_SECRETS)
    with pytest.raises(ContentPolicyError):
        for line in (f"event: error\ndata: {json.dumps(moderation)}\n\n").splitlines():
            reader.feed(line)
    refused = {"type": "error", "code": "invalid_value", "message": "Bad size sk-secret", "param": "size"}
    reader = ImageStreamReader(
        _stream_call(), label="OpenAI Images API", redact=lambda t: t.replace("sk-secret", "[redacted]")
    )
    with pytest.raises(UpstreamError) as caught:
        for line in ("event: error", f"data: {json.dumps(refused)}", ""):
            reader.feed(line)
    assert "[redacted]" in caught.value.message and "sk-secret" not in caught.value.message


def test_a_stream_without_a_completed_event_made_no_image() -> None:
    reader = ImageStreamReader(_stream_call(), label="OpenAI Images API", redact=NO_SECRETS)
    draft = {
        "type": "image_generation.partial_image",
        "partial_image_index": 0,
        "b64_json": base64.b64encode(image_bytes()).decode(),
        "size": "24x16",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        "created_at": 1,
    }
    assert reader.feed(f"data: {json.dumps(draft)}") is None
    assert reader.feed("") is not None
    with pytest.raises(UpstreamError) as caught:
        reader.images()
    assert caught.value.code == "no_images_generated" and caught.value.retryable


def test_a_call_without_a_sink_does_not_stream() -> None:
    adapter = OpenAIImagesAdapter()
    quiet = make_call("gpt-image-1.5", partial_images=2)
    assert not adapter.streams(quiet)
    request = adapter.build_request(quiet, base_url="https://u.test/v1", headers={})
    assert "stream" not in json.loads(request.content)
    assert adapter.streams(_stream_call())


def test_a_streamed_edit_sends_stream_as_the_multipart_text_true() -> None:
    call = _stream_call(inputs=[InputBytes(image_bytes(), "image/png")])
    fields, _files = build_edit_parts(call)
    assert (fields["stream"], fields["partial_images"]) == ("true", "2")


@pytest.mark.parametrize("edit", [False, True], ids=["generation", "edit"])
def test_the_provider_hands_on_drafts_while_the_answer_still_arrives(tmp_path: Path, edit: bool) -> None:
    fake = FakeUpstream(openai_key=KEY)
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        openai_api_key=KEY,  # type: ignore[call-arg]
        openai_base_url="https://fake.test/v1",
    )
    registry = ProviderRegistry.from_settings(settings, transport=fake.transport())
    arrived: list[tuple[float, PartialFrame]] = []
    inputs = [InputBytes(image_bytes(width=64, height=64), "image/png")] if edit else []
    call = make_call(
        "gpt-image-1.5",
        partial_images=3,
        quality="low",
        size="1024x1024",
        inputs=inputs,
        on_partial=lambda frame: arrived.append((time.monotonic(), frame)),
    )
    try:
        [image] = registry.get("openai_images").generate(call)
        done = time.monotonic()
    finally:
        registry.close()
    assert fake.violations == []
    sent = fake.calls[-1]
    assert sent.endpoint == ("openai_edits" if edit else "openai_generations")
    if edit:
        assert sent.form is not None and sent.form["stream"] == ["true"] and sent.form["partial_images"] == ["3"]
    else:
        assert sent.json is not None and (sent.json["stream"], sent.json["partial_images"]) == (True, 3)
    assert [f.partial_index for _, f in arrived] == [0, 1, 2]
    # each draft was handed on as it came, not once the whole answer was read
    assert done - arrived[0][0] >= 2 * STREAM_PAUSE_S
    assert image.usage.output_image_tokens == 272 + 3 * PARTIAL_IMAGE_TOKENS


def test_a_stream_broken_off_is_retried_like_a_failed_connection() -> None:
    chunks = [b"event: image_generation.partial_image\n", b"data: {"]

    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from chunks
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())

    settings = Settings(
        _env_file=None,
        openai_api_key=KEY,
        upstream_max_attempts=2,  # type: ignore[call-arg]
        upstream_backoff_base_s=0.01,
        upstream_backoff_max_s=0.01,
    )
    registry = ProviderRegistry.from_settings(settings, transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(UpstreamError) as caught:
            registry.get("openai_images").generate(_stream_call())
    finally:
        registry.close()
    assert caught.value.code == "upstream_unreachable" and len(attempts) == 2
