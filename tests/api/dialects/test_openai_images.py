"""The OpenAI Images dialect: request body parsing, translation to the canonical request, and
the exact wire shapes of results and errors."""

from __future__ import annotations

from typing import Any

import pytest

from api.body import parse_json
from api.dialects.openai_images.schemas import ImageGenerateRequest
from api.dialects.openai_images.translate import to_generation, to_wire
from api.dialects.openai_images.translate import to_wire_error as _render_error
from core.errors import (
    AuthenticationError,
    ContentPolicyError,
    GatewayError,
    InvalidRequestError,
    JobWaitTimeoutError,
    ModelNotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
)
from core.generation import AppliedParams, DeliveredImage, GenerationRequest, Usage

# -- to_generation ---------------------------------------------------------------------------


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The renderer's answer as (status, body)."""
    wire = _render_error(error)
    return wire.status, wire.body



def test_to_generation_maps_every_field() -> None:
    wire = ImageGenerateRequest(
        prompt="a lighthouse at dusk",
        model="openai/demo",
        n=3,
        size="512x768",
        aspect_ratio="2:3",
        quality="hd",
        style="natural",
        response_format="b64_json",
        output_format="webp",
        output_compression=70,
        background="transparent",
        moderation="low",
        user="user-42",
        stream=False,
    )
    assert to_generation(wire) == GenerationRequest(
        prompt="a lighthouse at dusk",
        model="openai/demo",
        n=3,
        size="512x768",
        aspect_ratio="2:3",
        quality="hd",
        output_format="webp",
        output_compression=70,
        background="transparent",
        style="natural",
        moderation="low",
    )


def test_to_generation_minimal_request() -> None:
    generation = to_generation(ImageGenerateRequest(prompt="x"))
    assert generation.model_dump(exclude_none=True) == {"prompt": "x", "n": 1, "input_images": [], "parts": [],
                                                           "history": [], "ignored": [], "adjusted": {}}
    assert not generation.is_edit


def test_a_stream_asks_for_its_partial_images() -> None:
    assert to_generation(ImageGenerateRequest(prompt="x", stream=True, partial_images=2)).partial_images == 2
    assert to_generation(ImageGenerateRequest(prompt="x", stream=True)).partial_images is None
    assert to_generation(ImageGenerateRequest(prompt="x", stream=True, partial_images=0)).partial_images is None
    # an asynchronous submission is watched by nobody
    assert to_generation(ImageGenerateRequest(prompt="x", stream=True, partial_images=2),
                         partials=False).partial_images is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"partial_images": 1}, "partial_images"), ({"stream": False, "partial_images": 0}, "partial_images"),
     ({"stream": True, "response_format": "url"}, "response_format")],
)
def test_streaming_parameters_that_cannot_be_served_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation(ImageGenerateRequest(prompt="x", **fields))
    assert info.value.param == param and param in info.value.message


def test_stream_events_have_the_shapes_of_the_sdks_types() -> None:
    from openai.types import (
        ImageEditCompletedEvent,
        ImageEditPartialImageEvent,
        ImageGenCompletedEvent,
        ImageGenPartialImageEvent,
    )

    from api.dialects.openai_images.translate import completed_event, partial_event
    from core.events import PartialImage

    draft = PartialImage(job_id="job_1", index=0, partial_index=1, object_key="k", output_format="png",
                         size="1024x1024", quality="low", background="opaque", created_at=5)
    image = DeliveredImage(id="img_1", index=0, mime_type="image/png", width=1024, height=1536, b64_json="AAAA",
                           usage=Usage(input_tokens=12, input_text_tokens=10, input_image_tokens=2, output_tokens=300,
                                       output_image_tokens=300))
    for edit, partial_type, completed_type in ((False, ImageGenPartialImageEvent, ImageGenCompletedEvent),
                                               (True, ImageEditPartialImageEvent, ImageEditCompletedEvent)):
        sent = partial_type.model_validate(partial_event(edit=edit, partial=draft, b64_json="AAAA", created_at=5)
                                           .model_dump())
        assert (sent.partial_image_index, sent.size, sent.quality) == (1, "1024x1024", "low")
        done = completed_type.model_validate(completed_event(edit=edit, applied=applied(quality="hd"), image=image,
                                                             created_at=6).model_dump())
        assert (done.size, done.quality, done.background, done.output_format) == ("1024x1536", "high", "opaque",
                                                                                   "png")
        assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens) == (12, 300, 312)
        assert done.usage.input_tokens_details.text_tokens == 10


# -- to_wire ---------------------------------------------------------------------------------


def applied(**overrides: object) -> AppliedParams:
    fields: dict[str, object] = {
        "model": "demo", "provider": "demo", "upstream_model": "demo", "width": 1024,
        "height": 1536, "aspect_ratio": "2:3", "quality": "auto", "output_format": "png",
    }
    fields.update(overrides)
    return AppliedParams(**fields)  # type: ignore[arg-type]


def image(index: int, usage: Usage, **fields: object) -> DeliveredImage:
    return DeliveredImage(
        id=f"img_{index}", index=index, mime_type="image/png", width=1024, height=1536,
        usage=usage, **fields,  # type: ignore[arg-type]
    )


def test_to_wire_full_shape_with_usage_summed() -> None:
    images = [
        image(0, Usage(input_tokens=12, input_text_tokens=10, input_image_tokens=2,
                       output_tokens=300, output_text_tokens=40, output_image_tokens=260),
              b64_json="QUJD", text="revised one"),
        image(1, Usage(input_tokens=5, input_text_tokens=5, output_tokens=100,
                       output_image_tokens=100),
              b64_json="REVG", text=None),
    ]
    response = to_wire(created=1_790_000_000, applied=applied(quality="standard",
                                                              output_format="webp"), images=images)
    assert response.model_dump(exclude_none=True) == {
        "created": 1_790_000_000,
        "data": [
            {"b64_json": "QUJD", "revised_prompt": "revised one"},
            {"b64_json": "REVG"},
        ],
        "background": "opaque",
        "output_format": "webp",
        "size": "1024x1536",
        "quality": "medium",
        "usage": {
            "input_tokens": 17,
            "input_tokens_details": {"text_tokens": 15, "image_tokens": 2},
            "output_tokens": 400,
            "output_tokens_details": {"text_tokens": 40, "image_tokens": 360},
            "total_tokens": 417,
        },
    }


def test_to_wire_urls_hd_and_transparent() -> None:
    images = [image(0, Usage(), url="http://127.0.0.1:2407/v1/files/img_0?expires=1&signature=s")]
    response = to_wire(created=7, applied=applied(quality="hd", background="transparent",
                                                  width=2048, height=2048), images=images)
    assert response.model_dump(exclude_none=True) == {
        "created": 7,
        "data": [{"url": "http://127.0.0.1:2407/v1/files/img_0?expires=1&signature=s"}],
        "background": "transparent",
        "output_format": "png",
        "size": "2048x2048",
        "quality": "high",
        "usage": {
            "input_tokens": 0,
            "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"text_tokens": 0, "image_tokens": 0},
            "total_tokens": 0,
        },
    }


@pytest.mark.parametrize(
    ("quality", "wire"),
    [("standard", "medium"), ("hd", "high"), ("low", "low"), ("medium", "medium"),
     ("high", "high"), ("auto", "auto")],
)
def test_to_wire_quality_names(quality: str, wire: str) -> None:
    assert to_wire(created=1, applied=applied(quality=quality), images=[]).quality == wire


def test_to_wire_with_no_images_has_empty_data() -> None:
    response = to_wire(created=1, applied=applied(), images=[])
    assert response.data == []
    assert response.usage is not None and response.usage.total_tokens == 0


# -- to_wire_error ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            InvalidRequestError("Bad size.", param="size"),
            400,
            {"message": "Bad size.", "type": "invalid_request_error", "param": "size",
             "code": "invalid_value"},
        ),
        (
            ContentPolicyError("Blocked."),
            400,
            {"message": "Blocked.", "type": "image_generation_user_error", "param": None,
             "code": "moderation_blocked"},
        ),
        (
            AuthenticationError("Incorrect API key provided."),
            401,
            {"message": "Incorrect API key provided.", "type": "invalid_request_error",
             "param": None, "code": "invalid_api_key"},
        ),
        (
            ModelNotFoundError("No such model.", param="model"),
            404,
            {"message": "No such model.", "type": "invalid_request_error", "param": "model",
             "code": "model_not_found"},
        ),
        (
            RateLimitError("Slow down.", retry_after=3),
            429,
            {"message": "Slow down.", "type": "requests", "param": None,
             "code": "rate_limit_exceeded"},
        ),
        (
            QuotaExceededError("Out of credit."),
            429,
            {"message": "Out of credit.", "type": "insufficient_quota", "param": None,
             "code": "insufficient_quota"},
        ),
        (
            UpstreamError("Upstream broke."),
            502,
            {"message": "Upstream broke.", "type": "server_error", "param": None,
             "code": "upstream_error"},
        ),
        (
            ServiceUnavailableError("Try later."),
            503,
            {"message": "Try later.", "type": "server_error", "param": None,
             "code": "service_unavailable"},
        ),
        (
            GatewayError("Oops."),
            500,
            {"message": "Oops.", "type": "server_error", "param": None, "code": None},
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, GatewayError) else None,
)
def test_to_wire_error(error: GatewayError, status: int, body: dict[str, object]) -> None:
    assert to_wire_error(error) == (status, {"error": body})


def test_job_wait_timeout_names_the_job() -> None:
    status, body = to_wire_error(JobWaitTimeoutError("The job is still running.", job_id="job_abc"))
    assert status == 504
    assert body == {
        "error": {
            "message": "The job is still running. Poll GET /v1/jobs/job_abc for its result.",
            "type": "server_error",
            "param": None,
            "code": "job_timeout",
            "job_id": "job_abc",
        }
    }


def test_other_error_with_job_id_carries_it_without_poll_hint() -> None:
    status, body = to_wire_error(UpstreamError("No image.", job_id="job_x"))
    assert status == 502
    assert body["error"]["job_id"] == "job_x"
    assert body["error"]["message"] == "No image."


# -- parse_json ------------------------------------------------------------------------------


def parse_error(body: bytes) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        parse_json(body, ImageGenerateRequest)
    return info.value


@pytest.mark.parametrize("body", [b"{not json", b'{"prompt": "x",}', b"", b"  \n "])
def test_invalid_or_empty_json(body: bytes) -> None:
    error = parse_error(body)
    assert error.code == "invalid_json"
    assert error.param is None
    assert error.status == 400


@pytest.mark.parametrize("body", [b'["prompt", "x"]', b'"a string"', b"42", b"null"])
def test_json_that_is_not_an_object(body: bytes) -> None:
    error = parse_error(body)
    assert error.code == "invalid_type"
    assert error.message == "The request body must be a JSON object."


def test_missing_prompt() -> None:
    error = parse_error(b'{"model": "demo"}')
    assert (error.param, error.code) == ("prompt", "missing_required_parameter")
    assert error.message == "Missing required parameter: 'prompt'."


def test_empty_prompt() -> None:
    assert parse_error(b'{"prompt": ""}').param == "prompt"


@pytest.mark.parametrize(
    ("n", "code"), [(0, "integer_below_min_value"), (11, "integer_above_max_value")]
)

def test_n_out_of_range(n: int, code: str) -> None:
    error = parse_error(b'{"prompt": "x", "n": %d}' % n)
    assert (error.param, error.code) == ("n", code)


def test_n_of_wrong_type() -> None:
    error = parse_error(b'{"prompt": "x", "n": "abc"}')
    assert (error.param, error.code) == ("n", "invalid_type")


def test_unsupported_output_format() -> None:
    error = parse_error(b'{"prompt": "x", "output_format": "gif"}')
    assert (error.param, error.code) == ("output_format", "invalid_value")
    assert "'gif'" in error.message


def test_output_compression_above_100() -> None:
    error = parse_error(b'{"prompt": "x", "output_compression": 101}')
    assert (error.param, error.code) == ("output_compression", "integer_above_max_value")


def test_unknown_fields_are_ignored() -> None:
    wire = parse_json(
        b'{"prompt": "x", "n": 2, "input_fidelity": "high", "extra": {"a": [1]}}',
        ImageGenerateRequest,
    )
    assert wire.prompt == "x"
    assert wire.n == 2
    assert "input_fidelity" not in wire.model_dump()
