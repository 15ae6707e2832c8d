"""The OpenAI Chat Completions dialect with image output: request parsing, translation to the
canonical request, and the exact wire shapes of completions, stream chunks and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.body import parse_json
from api.dialects.openai_chat.schemas import ChatCompletionRequest
from api.dialects.openai_chat.translate import (
    WIRE_PARAMS,
    ImageFailure,
    completion_id,
    error_chunk,
    read_conversation,
    result_chunks,
    role_chunks,
    to_generation,
    to_wire,
    wants_urls,
)
from api.dialects.openai_chat.translate import (
    to_wire_error as _render_error,
)
from api.inputs import ImageRef
from core.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    UpstreamError,
)
from core.generation import DeliveredImage, GenerationRequest, Part, Turn, Usage


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The renderer's answer as (status, body)."""
    wire = _render_error(error)
    return wire.status, wire.body


def parse(body: dict[str, Any]) -> ChatCompletionRequest:
    return parse_json(json.dumps(body).encode(), ChatCompletionRequest)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def gen(wire: ChatCompletionRequest) -> GenerationRequest:
    """The canonical request, as the router makes it (the conversation, then the request)."""
    return to_generation(wire, read_conversation(wire))


# -- wire -> canonical -----------------------------------------------------------------------


def test_seed_000_body_system_message_and_no_model() -> None:
    wire = parse({"messages": [{"role": "system", "content": "You are an image generation assistant"},
                               user("Generate an image of a sunset over mountains")],
                  "max_tokens": 8192})
    assert gen(wire) == GenerationRequest(
        prompt="Generate an image of a sunset over mountains",
        system="You are an image generation assistant",
        parts=[Part(text="Generate an image of a sunset over mountains")],
    )


def test_seed_001_body_maps_image_config_and_model() -> None:
    wire = parse({"model": "google/gemini-3-pro-image", "modalities": ["image", "text"],
                  "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
                  "messages": [user("A matte black AI gateway device on a white desk")]})
    assert gen(wire) == GenerationRequest(
        prompt="A matte black AI gateway device on a white desk", model="google/gemini-3-pro-image",
        aspect_ratio="16:9", image_size="2K", parts=[Part(text="A matte black AI gateway device on a white desk")])


@pytest.mark.parametrize(("sent", "kept"), [("0.5K", "0.5K"), ("512", "512"), (512, "512"), ("4K", "4K")])
def test_image_size_both_spellings_of_the_512_tier(sent: object, kept: str) -> None:
    wire = parse({"messages": [user("x")], "image_config": {"image_size": sent, "seed": 3}})
    assert gen(wire).image_size == kept


def test_system_and_developer_messages_are_joined_in_order() -> None:
    wire = parse({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be bold."}]},
        {"role": "system", "content": "  Square pictures.  "},
        {"role": "system", "content": ""},
        user("a fox"),
    ]})
    generation = gen(wire)
    assert generation.system == "Be bold.\n\nSquare pictures."
    assert generation.prompt == "a fox"


def test_parts_content_joins_text_parts() -> None:
    wire = parse({"messages": [user([{"type": "text", "text": "a red"}, {"type": "text", "text": "fox "}])]})
    assert gen(wire).prompt == "a red\nfox"


def test_n_and_ignored_knobs() -> None:
    wire = parse({"model": "demo", "n": 3, "messages": [user("x")], "temperature": 0.2, "top_p": 0.9,
                  "max_completion_tokens": 10, "seed": 7, "user": "u", "stream_options": {"include_usage": True},
                  "tools": [{"type": "function"}], "reasoning_effort": "low"})
    assert gen(wire) == GenerationRequest(prompt="x", model="demo", n=3, parts=[Part(text="x")],
                                          ignored=["tools"])  # tools: an agent's request; it has no system prompt


def test_earlier_turns_are_the_conversation_with_their_images() -> None:
    wire = parse({"messages": [
        {"role": "system", "content": "sys"},
        user("a red fox in the snow"),
        {"role": "assistant", "content": None, "images": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "tool", "content": "ignored", "tool_call_id": "t"},
        {"role": "assistant", "content": "Here it is: ![fox](data:image/png;base64,BBBB)"},
        user("now make it blue"),
        {"role": "assistant", "content": "prefill after the last user message is not part of it"},
    ]})
    conversation = read_conversation(wire)
    assert [ref.url for ref in conversation.images] == ["data:image/png;base64,AAAA", "data:image/png;base64,BBBB"]
    generation = gen(wire)
    assert (generation.prompt, generation.system) == ("now make it blue", "sys")
    assert generation.history == [Turn(role="user", parts=[Part(text="a red fox in the snow")]),
                                  Turn(role="model", parts=[Part(image=0)]),
                                  Turn(role="model", parts=[Part(text="Here it is:"), Part(image=1)])]
    assert generation.images_for(multi_turn=False) == [1]  # a single-prompt model edits the last picture


def test_no_user_message_is_a_400_naming_messages() -> None:
    with pytest.raises(InvalidRequestError) as info:
        gen(parse({"messages": [{"role": "system", "content": "only me"}]}))
    assert info.value.param == "messages"


def test_last_user_message_without_text_is_a_400() -> None:
    wire = parse({"messages": [user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}])]})
    with pytest.raises(InvalidRequestError) as info:
        gen(wire)
    assert info.value.param == "messages[0].content"


@pytest.mark.parametrize("modalities", [None, ["image"], ["image", "text"], ["text", "image"]])
def test_modalities_with_image_or_absent_are_accepted(modalities: list[str] | None) -> None:
    body: dict[str, Any] = {"messages": [user("x")]}
    if modalities is not None:
        body["modalities"] = modalities
    assert gen(parse(body)).prompt == "x"


@pytest.mark.parametrize(("modalities", "code"), [
    (["text"], "invalid_value"), ([], "invalid_value"), (["image", "audio"], "unsupported_value")])
def test_modalities_without_image_or_with_audio_are_400(modalities: list[str], code: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        gen(parse({"messages": [user("x")], "modalities": modalities}))
    assert (info.value.param, info.value.code) == ("modalities", code)


def test_image_url_parts_of_user_messages_are_the_inputs() -> None:
    wire = parse({"messages": [
        {"role": "system", "content": "s"},
        user([{"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}}]),
        {"role": "assistant", "content": "ok"},
        user([{"type": "text", "text": "combine"},
              {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]),
    ]})
    assert read_conversation(wire).images == [
        ImageRef(url="https://example.com/a.png", param="messages[1].content[0].image_url"),
        ImageRef(url="data:image/png;base64,iVBORw0KGgo=", param="messages[3].content[1].image_url"),
    ]
    generation = gen(wire)
    assert generation.input_images == []  # loaded by the shared flow
    assert generation.parts == [Part(text="combine"), Part(image=1)] and generation.images_for(multi_turn=False) == [1]


def test_image_url_in_a_system_message_is_refused() -> None:
    wire = parse({"messages": [{"role": "system", "content": [
        {"type": "text", "text": "s"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        user("x")]})
    with pytest.raises(InvalidRequestError) as info:
        read_conversation(wire)
    assert info.value.param == "messages[0].content[1].image_url"


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"messages": []}, "messages", "at least 1 item"),
    ({"messages": [user([{"type": "input_audio", "input_audio": {}}])]}, "messages[0].content",
     "content[0].type 'input_audio' is not supported"),
    ({"messages": [user([{"type": "text"}])]}, "messages[0].content", "content[0].text must be a string"),
    ({"messages": [user([{"type": "image_url", "image_url": {}}])]}, "messages[0].content",
     "content[0].image_url.url must be a string"),
    ({"messages": [user(5)]}, "messages[0].content", "a string or an array"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "'bot'"),
    ({"messages": [user("x")], "n": 11}, "n", "at most 10"),
    ({"messages": [user("x")], "image_output": "b64"}, "image_output", "'b64'"),
])
def test_bad_bodies_name_the_field(body: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(body)
    assert info.value.param == param
    assert message in info.value.message


def test_image_output_body_field_wins_over_the_header() -> None:
    assert not wants_urls(parse({"messages": [user("x")]}), None)
    assert wants_urls(parse({"messages": [user("x")]}), " URL ")
    assert wants_urls(parse({"messages": [user("x")], "image_output": "url"}), None)
    assert not wants_urls(parse({"messages": [user("x")], "image_output": "data_url"}), "url")


def test_planner_params_are_renamed_to_the_chat_fields() -> None:
    def said(param: str | None) -> str | None:
        return InvalidRequestError(f"Invalid value for '{param}'.", param=param).with_param(dict(WIRE_PARAMS)).param

    assert said("aspect_ratio") == "image_config.aspect_ratio"
    assert said("image_size") == "image_config.image_size"
    assert said("image") == "messages"
    assert said("model") == "model"
    assert said(None) is None


# -- canonical -> wire -----------------------------------------------------------------------


def image(index: int, usage: Usage | None = None, **fields: Any) -> DeliveredImage:
    return DeliveredImage(id=f"img_{index}", index=index, mime_type="image/png", width=64, height=64,
                          usage=usage or Usage(), **fields)


USAGE_A = Usage(input_tokens=18, input_text_tokens=18, output_tokens=1300, output_text_tokens=10,
                output_image_tokens=1290)
USAGE_B = Usage(input_tokens=18, output_tokens=1290, output_image_tokens=1290)


def test_to_wire_one_image_exact() -> None:
    body = to_wire(id=completion_id("job_1"), created=1779703910, model="gemini-3-pro-image",
                   images=[image(0, USAGE_B, b64_json="iVBORw0KGgo=")])
    assert json.loads(body.model_dump_json()) == {
        "id": "chatcmpl-job_1", "object": "chat.completion", "created": 1779703910,
        "model": "gemini-3-pro-image",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": None,
            "images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}}],
        "usage": {"prompt_tokens": 18, "completion_tokens": 1290, "total_tokens": 1308,
                  "completion_tokens_details": {"image_tokens": 1290, "reasoning_tokens": 0}},
    }


def test_to_wire_n_choices_text_urls_and_summed_usage() -> None:
    images = [
        image(1, USAGE_B, url="http://gw/v1/files/img_1?sig=2"),
        image(0, USAGE_A, url="http://gw/v1/files/img_0?sig=1", text="Here is your fox."),
    ]
    body = to_wire(id="chatcmpl-job_2", created=5, model="demo", images=images)
    assert json.loads(body.model_dump_json()) == {
        "id": "chatcmpl-job_2", "object": "chat.completion", "created": 5, "model": "demo",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "Here is your fox.",
                "images": [{"type": "image_url", "image_url": {"url": "http://gw/v1/files/img_0?sig=1"}}]}},
            {"index": 1, "finish_reason": "stop", "message": {
                "role": "assistant", "content": None,
                "images": [{"type": "image_url", "image_url": {"url": "http://gw/v1/files/img_1?sig=2"}}]}},
        ],
        "usage": {"prompt_tokens": 36, "completion_tokens": 2590, "total_tokens": 2626,
                  "completion_tokens_details": {"image_tokens": 2580, "reasoning_tokens": 0}},
    }


def test_a_blocked_prompt_is_content_filter_with_the_reason() -> None:
    failure = ImageFailure(index=0, code="moderation_blocked",
                           message="The prompt was blocked by the upstream's safety system (SAFETY).")
    body = to_wire(id="chatcmpl-job_3", created=9, model="gemini-3-pro-image", images=[], failures=[failure])
    assert json.loads(body.model_dump_json()) == {
        "id": "chatcmpl-job_3", "object": "chat.completion", "created": 9, "model": "gemini-3-pro-image",
        "choices": [{"index": 0, "finish_reason": "content_filter", "message": {
            "role": "assistant", "content": "The prompt was blocked by the upstream's safety system (SAFETY).",
            "images": []}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                  "completion_tokens_details": {"image_tokens": 0, "reasoning_tokens": 0}},
    }


def test_partial_failures_keep_their_choice_index() -> None:
    body = to_wire(id="c", created=1, model="demo", images=[image(1, b64_json="QQ==")], failures=[
        ImageFailure(index=0, code="content_policy_violation", message=None),
        ImageFailure(index=2, code="upstream_error", message="The upstream failed."),
    ])
    assert [(c.index, c.finish_reason, c.message.content, len(c.message.images)) for c in body.choices] == [
        (0, "content_filter", "The image was blocked by the safety system.", 0),
        (1, "stop", None, 1),
        (2, "stop", "The upstream failed.", 0),
    ]


# -- streaming -------------------------------------------------------------------------------

HEAD = '"id":"chatcmpl-job_1","object":"chat.completion.chunk","created":7,"model":"demo"'


def test_role_chunks_exact_bytes() -> None:
    assert role_chunks(id="chatcmpl-job_1", created=7, model="demo", n=2) == (
        'data: {' + HEAD + ',"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}\n\n'
        'data: {' + HEAD + ',"choices":[{"index":1,"delta":{"role":"assistant"},"finish_reason":null}]}\n\n'
    ).encode()


def test_result_chunks_exact_bytes() -> None:
    chunks = result_chunks(id="chatcmpl-job_1", created=7, model="demo",
                           images=[image(0, USAGE_B, b64_json="QUJD", text="Here.")])
    image_json = '{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}}'
    assert chunks == (
        'data: {' + HEAD + ',"choices":[{"index":0,"delta":{"content":"Here.","images":[' + image_json
        + ']},"finish_reason":null}]}\n\n'
        'data: {' + HEAD + ',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        'data: {' + HEAD + ',"choices":[],"usage":{"prompt_tokens":18,"completion_tokens":1290,'
        '"total_tokens":1308,"completion_tokens_details":{"image_tokens":1290,"reasoning_tokens":0}}}\n\n'
        'data: [DONE]\n\n'
    ).encode()


def test_result_chunks_content_filter_and_two_choices() -> None:
    chunks = result_chunks(id="chatcmpl-job_1", created=7, model="demo", images=[image(1, b64_json="QQ==")],
                           failures=[ImageFailure(index=0, code="moderation_blocked", message="Blocked (SAFETY).")])
    events = [e for e in chunks.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    parsed = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert [c["choices"] for c in parsed] == [
        [{"index": 0, "delta": {"content": "Blocked (SAFETY)."}, "finish_reason": None}],
        [{"index": 1, "delta": {"images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}}]},
          "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "content_filter"}],
        [{"index": 1, "delta": {}, "finish_reason": "stop"}],
        [],
    ]


def test_error_chunk_exact_bytes() -> None:
    error = UpstreamError("The model returned no image.", code="no_images_generated", job_id="job_9")
    assert error_chunk(error) == (
        b'data: {"error":{"message":"The model returned no image.","type":"server_error","param":null,'
        b'"code":"no_images_generated","job_id":"job_9"}}\n\n'
        b"data: [DONE]\n\n"
    )


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "status", "body"), [
    (InvalidRequestError("Invalid value for 'modalities'.", param="modalities"), 400,
     {"message": "Invalid value for 'modalities'.", "type": "invalid_request_error", "param": "modalities",
      "code": "invalid_value"}),
    (AuthenticationError("Incorrect API key provided."), 401,
     {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
      "code": "invalid_api_key"}),
    (ModelNotFoundError("The model 'x' does not exist.", param="model"), 404,
     {"message": "The model 'x' does not exist.", "type": "invalid_request_error", "param": "model",
      "code": "model_not_found"}),
])
def test_errors_are_openai_error_objects(error: GatewayError, status: int, body: dict[str, Any]) -> None:
    assert to_wire_error(error) == (status, {"error": body})
