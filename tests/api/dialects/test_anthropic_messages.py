"""The Anthropic Messages dialect: body parsing, what a conversation asks for, and the exact wire
shapes of messages, SSE events, errors and the model list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.body import parse_json
from api.dialects.anthropic_messages import translate
from api.dialects.anthropic_messages.schemas import (
    MessageCreateRequest,
)
from api.inputs import ImageRef
from core.errors import (
    AuthenticationError,
    ConflictError,
    ContentPolicyError,
    GatewayError,
    InvalidRequestError,
    JobWaitTimeoutError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamOverloadedError,
    UpstreamTimeoutError,
)
from core.generation import DeliveredImage, GenerationRequest, Part, Turn, Usage
from core.routing import Catalogue


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The renderer's answer as (status, body)."""
    wire = translate.to_wire_error(error)
    return wire.status, wire.body

PNG_SOURCE = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def parse(body: dict[str, Any]) -> MessageCreateRequest:
    return parse_json(json.dumps(body).encode(), MessageCreateRequest)


# -- wire -> canonical -----------------------------------------------------------------------


def test_seed_000_body_system_as_a_role_message() -> None:
    wire = parse({"messages": [
        {"role": "system", "content": "You are an image generation assistant"},
        {"role": "user", "content": "Generate an image of a sunset over mountains"}],
        "max_tokens": 8192})
    conversation = translate.read_conversation(wire)
    parts = [Part(text="Generate an image of a sunset over mountains")]
    assert conversation == translate.Conversation(
        prompt="Generate an image of a sunset over mountains",
        system="You are an image generation assistant", images=[], parts=parts)
    assert translate.to_generation(wire, conversation) == GenerationRequest(
        prompt="Generate an image of a sunset over mountains", system="You are an image generation assistant",
        parts=parts)


def test_top_level_system_string_and_blocks_then_role_messages() -> None:
    as_string = parse({"system": "Be bold.", "messages": [{"role": "user", "content": "a fox"}]})
    assert translate.read_conversation(as_string).system == "Be bold."
    as_blocks = parse({
        "system": [{"type": "text", "text": "Be bold.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Use red."}],
        "messages": [{"role": "system", "content": [{"type": "text", "text": "Seed system."}]},
                     {"role": "user", "content": "a fox"}]})
    assert translate.read_conversation(as_blocks).system == "Be bold.\nUse red.\n\nSeed system."


def test_no_max_tokens_no_model_and_unknown_fields_are_fine() -> None:
    wire = parse({"messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"},
                  "tools": [], "metadata": {"user_id": None}, "temperature": 1})
    generation = translate.to_generation(wire, translate.read_conversation(wire))
    assert generation.model_dump(exclude_none=True) == {"prompt": "x", "n": 1, "input_images": [],
                                                        "parts": [{"text": "x"}], "history": [], "ignored": [],
                                                        "adjusted": {}}


def test_last_user_turn_is_the_prompt_and_every_image_is_an_input() -> None:
    wire = parse({"model": "gpt-image-2", "n": 2, "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
                  "messages": [
                      {"role": "user", "content": [
                          {"type": "text", "text": "a cat"},
                          {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
                      {"role": "assistant", "content": "Here's your image: ..."},
                      {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "no"}]},
                          {"type": "image", "source": PNG_SOURCE},
                          {"type": "text", "text": "make it blue"},
                          {"type": "text", "text": "and smaller"}]}]})
    conversation = translate.read_conversation(wire)
    history = [Turn(role="user", parts=[Part(text="a cat"), Part(image=0)]),
               Turn(role="model", parts=[Part(text="Here's your image: ...")])]
    parts = [Part(image=1), Part(text="make it blue"), Part(text="and smaller")]
    assert conversation == translate.Conversation(
        prompt="make it blue\nand smaller", system=None,
        images=[
            ImageRef(param="messages[0].content[1].source", url="https://example.com/cat.jpg"),
            ImageRef(param="messages[2].content[1].source", data="iVBORw0KGgo=", mime_type="image/png"),
        ], history=history, parts=parts)
    generation = translate.to_generation(wire, conversation)  # its images are loaded by the shared flow
    assert generation == GenerationRequest(prompt="make it blue\nand smaller", model="gpt-image-2", n=2,
                                           aspect_ratio="16:9", image_size="2K", history=history, parts=parts)


def test_claude_codes_scaffolding_and_system_prompt_are_not_the_image_request() -> None:
    reminder = ("<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
                "# currentDate\nToday's date is 2026-12-01.\n</system-reminder>\n\n")
    wire = parse({"model": "claude-sonnet-4-5", "system": [{"type": "text", "text": "You are Claude Code." * 200}],
                  "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
                  "messages": [{"role": "user", "content": [{"type": "text", "text": reminder},
                                                            {"type": "text", "text": "Generate an image of a fox"}]}]})
    conversation = translate.read_conversation(wire)
    assert (conversation.prompt, conversation.system) == ("Generate an image of a fox", None)
    assert conversation.ignored == ["<system-reminder>", "tools", "system"]
    kept = translate.read_conversation(wire, agent_system_prompt="forward")
    assert kept.system == "You are Claude Code." * 200 and kept.ignored == ["<system-reminder>", "tools"]
    plain = parse({"system": "Be bold.", "messages": [{"role": "user", "content": "a fox"}]})
    assert translate.read_conversation(plain).system == "Be bold."  # no tools: the caller's own system prompt


def test_an_earlier_answer_s_markdown_image_is_the_image_of_its_turn() -> None:
    data_url = "data:image/png;base64,iVBORw0KGgo="
    wire = parse({"messages": [
        {"role": "user", "content": "a red fox"},
        {"role": "assistant", "content": [{"type": "text",
                                           "text": f"Here's your image:\n\n![Generated Image]({data_url})"}]},
        {"role": "user", "content": "now make it blue"}]})
    conversation = translate.read_conversation(wire)
    assert conversation.images == [ImageRef(param="messages[1].content[0].text", url=data_url)]
    assert conversation.history[1] == Turn(role="model", parts=[Part(text="Here's your image:"), Part(image=0)])
    generation = translate.to_generation(wire, conversation)
    assert generation.prompt == "now make it blue" and generation.images_for(multi_turn=False) == [0]


@pytest.mark.parametrize("messages", [
    [],
    [{"role": "assistant", "content": "hello"}],
    [{"role": "user", "content": "   "}],
    [{"role": "user", "content": "a fox"}, {"role": "user", "content": [{"type": "image", "source": PNG_SOURCE}]}],
    [{"role": "user", "content": "a fox"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": " "}],
    [{"role": "user", "content": "a fox"}, {"role": "user", "content": "<system-reminder>x</system-reminder>"}],
])
def test_no_prompt_text_is_a_400_naming_messages(messages: list[Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        translate.read_conversation(parse({"messages": messages}))
    assert info.value.param == "messages"


def test_a_file_source_is_refused_naming_the_block() -> None:
    wire = parse({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image", "source": {"type": "file", "file_id": "file_011C"}}]}]})
    with pytest.raises(InvalidRequestError) as info:
        translate.read_conversation(wire)
    assert (info.value.param, info.value.code) == ("messages[0].content[1].source", "unsupported_value")


@pytest.mark.parametrize(("body", "param"), [
    ({}, "messages"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}]},
     "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 11}, "n"),
])
def test_invalid_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(body)
    assert info.value.param == param


def test_count_tokens_estimate() -> None:
    wire = parse({"system": "12345678", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image", "source": PNG_SOURCE}]},
        {"role": "assistant", "content": "a"}]})
    # 8 + 4 characters -> 3 tokens (an answer prefilled after the last user turn is not sent), plus one image
    assert translate.estimate_input_tokens(translate.read_conversation(wire)) == 3 + translate.TOKENS_PER_IMAGE


# -- canonical -> wire -----------------------------------------------------------------------


def image(index: int, *, usage: Usage | None = None, **fields: Any) -> DeliveredImage:
    return DeliveredImage(id=f"img_{index}", index=index, mime_type="image/png", width=64, height=64,
                          usage=usage or Usage(), **fields)


def test_message_id_keeps_the_job_id() -> None:
    assert translate.message_id("job_01ABC") == "msg_01ABC"


def test_to_wire_one_image_seed_000_shape() -> None:
    response = translate.to_wire(message_id="msg_1", model="gemini-3-pro-image", images=[
        image(0, b64_json="QUJD", usage=Usage(input_tokens=50, output_tokens=1000))])
    assert json.loads(translate.dump(response)) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "gemini-3-pro-image",
        "content": [{"type": "text", "text": "Here's your image:\n\n![Generated Image](data:image/png;base64,QUJD)"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 50, "output_tokens": 1000},
        "_images": [{"mimeType": "image/png", "data": "data:image/png;base64,QUJD"}],
    }


def test_to_wire_n2_with_urls_and_upstream_text() -> None:
    url = "http://127.0.0.1:2407/v1/files/img_1?expires=1&signature=s"
    response = translate.to_wire(message_id="msg_2", model="demo", images=[
        image(0, b64_json="QUJD", text="a fox (revised)", usage=Usage(input_tokens=1, output_tokens=2)),
        image(1, url=url, usage=Usage(input_tokens=3, output_tokens=4))])
    assert json.loads(translate.dump(response)) == {
        "id": "msg_2", "type": "message", "role": "assistant", "model": "demo",
        "content": [{"type": "text", "text": (
            "Here are your 2 images:\n\na fox (revised)\n\n![Generated Image](data:image/png;base64,QUJD)"
            f"\n\n![Generated Image]({url})")}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 4, "output_tokens": 6},
        "_images": [{"mimeType": "image/png", "data": "data:image/png;base64,QUJD"},
                    {"mimeType": "image/png", "data": url}],
    }


def test_sse_bytes_of_a_finished_job() -> None:
    images = [image(0, b64_json="QUJDREVG", usage=Usage(input_tokens=7, output_tokens=1290))]
    stream = b"".join([translate.message_start(message_id="msg_1", model="demo", input_tokens=3),
                       translate.PING, *translate.finish_events(images, max_delta_chars=30)])
    assert stream == (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
        b'"role":"assistant","content":[],"model":"demo","stop_reason":null,"stop_sequence":null,'
        b'"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Here\'s your image:"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\\n\\n![Generated Image](data:imag"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"e/png;base64,QUJDREVG)"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"input_tokens":7,"output_tokens":1290}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_streamed_text_equals_the_message_text() -> None:
    images = [image(0, b64_json="A" * 1000, text="words"), image(1, b64_json="B" * 10)]
    events = translate.finish_events(images, max_delta_chars=64)
    deltas = [json.loads(e.split(b"data: ", 1)[1])["delta"]["text"]
              for e in events if e.startswith(b"event: content_block_delta")]
    response = translate.to_wire(message_id="m", model="demo", images=images)
    assert "".join(deltas) == response.content[0].text


def test_error_event_after_the_stream_started() -> None:
    assert translate.error_event(UpstreamOverloadedError("Overloaded")) == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidRequestError("Bad.", param="x"), 400, "invalid_request_error"),
    (ContentPolicyError("Blocked."), 400, "invalid_request_error"),
    (AuthenticationError("Bad key."), 401, "authentication_error"),
    (PermissionDeniedError("No."), 403, "permission_error"),
    (NotFoundError("No job."), 404, "not_found_error"),
    (ModelNotFoundError("No model."), 404, "not_found_error"),
    (ConflictError("Busy."), 409, "invalid_request_error"),
    (PayloadTooLargeError("Too big."), 413, "request_too_large"),
    (RateLimitError("Slow down.", retry_after=2), 429, "rate_limit_error"),
    (QuotaExceededError("Out of credit."), 402, "billing_error"),
    (UpstreamError("Broke."), 500, "api_error"),
    (UpstreamTimeoutError("Slow upstream."), 504, "timeout_error"),
    (UpstreamOverloadedError("Busy upstream."), 529, "overloaded_error"),
    (ServiceUnavailableError("Broker down."), 529, "overloaded_error"),
    (GatewayError("Oops."), 500, "api_error"),
])
def test_error_per_kind(error: GatewayError, status: int, kind: str) -> None:
    assert to_wire_error(error) == (
        status, {"type": "error", "error": {"type": kind, "message": error.message}})


def test_job_timeout_names_the_job() -> None:
    error = JobWaitTimeoutError("The job 'job_9' did not finish within 600 s. It goes on.", job_id="job_9")
    assert to_wire_error(error) == (504, {"type": "error", "error": {
        "type": "timeout_error",
        "message": "The job 'job_9' did not finish within 600 s. It goes on. Poll GET /v1/jobs/job_9 for its result.",
        "job_id": "job_9"}})


# -- models list -----------------------------------------------------------------------------


def test_model_info_shape() -> None:
    spec = Catalogue.load(configured={"demo", "gemini", "openai_images"}).get("gemini-3-pro-image")
    assert translate.model_info(spec).model_dump() == {
        "type": "model", "id": "gemini-3-pro-image", "display_name": "Gemini 3 Pro Image",
        "created_at": "2026-05-28T00:00:00Z", "lifecycle": "active"}
    assert translate.display_name("gpt-image-2") == "GPT Image 2"


def test_models_pages() -> None:
    specs = Catalogue.load(configured={"demo", "gemini", "openai_images"}).models
    ids = [s.id for s in specs]
    assert len(ids) > 3
    first = translate.models_page(specs, limit=2)
    assert ([m.id for m in first.data], first.has_more, first.first_id, first.last_id) == (
        ids[:2], True, ids[0], ids[1])
    rest = translate.models_page(specs, limit=1000, after_id=ids[1])
    assert [m.id for m in rest.data] == ids[2:] and not rest.has_more
    before = translate.models_page(specs, limit=1, before_id=ids[2])
    assert [m.id for m in before.data] == [ids[1]] and before.has_more
    assert translate.models_page(specs, lifecycle=["retired"]).model_dump() == {
        "data": [], "has_more": False, "first_id": None, "last_id": None}
