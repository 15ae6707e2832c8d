"""The CG-Image simple route: ``{prompt, system}`` in, CG-Image's message shape out,
errors in the Anthropic shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.body import parse_json
from api.dialects.simple import translate
from api.dialects.simple.schemas import GenerateRequest
from core.errors import (
    AuthenticationError,
    ContentPolicyError,
    GatewayError,
    InvalidRequestError,
    JobWaitTimeoutError,
    ModelNotFoundError,
    QuotaExceededError,
    UpstreamOverloadedError,
)
from core.generation import DeliveredImage, GenerationRequest, Usage


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The renderer's answer as (status, body)."""
    wire = translate.to_wire_error(error)
    return wire.status, wire.body


def parse(body: dict[str, Any]) -> GenerateRequest:
    return parse_json(json.dumps(body).encode(), GenerateRequest)


def test_seed_000_body() -> None:
    wire = parse({"prompt": "Generate an image of a sunset over mountains",
                  "system": "You are an image generation assistant"})
    assert translate.to_generation(wire) == GenerationRequest(
        prompt="Generate an image of a sunset over mountains", system="You are an image generation assistant")


def test_prompt_only_model_and_unknown_fields() -> None:
    wire = parse({"prompt": "a fox", "system": "  ", "model": "demo", "max_tokens": 10})
    assert translate.to_generation(wire) == GenerationRequest(prompt="a fox", model="demo")


@pytest.mark.parametrize(("body", "param"), [({}, "prompt"), ({"prompt": ""}, "prompt"),
                                             ({"prompt": "x", "system": 3}, "system")])
def test_invalid_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(body)
    assert info.value.param == param


def test_to_wire_seed_000_shape() -> None:
    image = DeliveredImage(id="img_0", index=0, mime_type="image/png", width=8, height=8, b64_json="QUJD",
                           usage=Usage(input_tokens=50, output_tokens=1000))
    body = translate.to_wire(message_id=translate.message_id("job_01XYZ"), model="gemini-3-pro-image",
                             images=[image])
    assert json.loads(translate.dump(body)) == {
        "id": "img-01XYZ", "type": "message", "role": "assistant", "model": "gemini-3-pro-image",
        "content": [{"type": "text", "text": "Here's your image:\n\n![Generated Image](data:image/png;base64,QUJD)"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 50, "output_tokens": 1000},
        "_images": [{"mimeType": "image/png", "data": "data:image/png;base64,QUJD"}],
    }


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidRequestError("Bad."), 400, "invalid_request_error"),
    (ContentPolicyError("Blocked."), 400, "invalid_request_error"),
    (AuthenticationError("Bad key."), 401, "authentication_error"),
    (ModelNotFoundError("No model."), 404, "not_found_error"),
    (QuotaExceededError("Out of credit."), 402, "billing_error"),
    (UpstreamOverloadedError("Busy."), 529, "overloaded_error"),
    (GatewayError("Oops."), 500, "api_error"),
])
def test_errors_in_the_anthropic_shape(error: GatewayError, status: int, kind: str) -> None:
    assert to_wire_error(error) == (status, {"type": "error", "error": {"type": kind,
                                                                                  "message": error.message}})


def test_job_timeout_names_the_job() -> None:
    status, body = to_wire_error(JobWaitTimeoutError("The job 'job_1' did not finish.", job_id="job_1"))
    assert status == 504 and body["error"]["type"] == "timeout_error" and body["error"]["job_id"] == "job_1"
    assert "job_1" in body["error"]["message"]
