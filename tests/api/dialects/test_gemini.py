"""The Gemini native dialect: request parsing (camelCase and snake_case), translation to the canonical
request (generateContent and Imagen :predict), the exact wire shapes of responses, stream chunks and
errors, and the model list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.body import parse_json
from api.dialects.gemini.errors import retry_delay
from api.dialects.gemini.errors import to_wire_error as wire_error
from api.dialects.gemini.models import list_models, model_resource
from api.dialects.gemini.predict import PREDICT_PARAMS, predict_blocked, predict_to_generation, to_predict_wire
from api.dialects.gemini.schemas import GenerateContentRequest, PredictRequest
from api.dialects.gemini.stream import SSE_KEEPALIVE, json_array_item, sse_event
from api.dialects.gemini.translate import (
    GENERATE_PARAMS,
    blocked,
    dump,
    input_refs,
    response_modalities,
    split_model_action,
    to_generation,
    to_stream_chunks,
    to_wire,
)
from api.inputs import ImageRef, standard_base64
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
from core.generation import DeliveredImage, GenerationRequest, InputImage, Part, Turn, Usage
from core.routing import Catalogue


def to_wire_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The renderer's answer as (status, body)."""
    wire = wire_error(error)
    return wire.status, wire.body



def gen_request(body: dict[str, Any]) -> GenerateContentRequest:
    return parse_json(json.dumps(body).encode(), GenerateContentRequest)


def predict_request(body: dict[str, Any]) -> PredictRequest:
    return parse_json(json.dumps(body).encode(), PredictRequest)


PNG_INPUT = InputImage(object_key="inputs/ab/abc.png", mime_type="image/png", width=8, height=8)

# -- routes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("gemini-3-pro-image:generateContent", ("gemini-3-pro-image", "generateContent")),
        ("google/gemini-3-pro-image:streamGenerateContent", ("google/gemini-3-pro-image", "streamGenerateContent")),
        ("vertex/gemini-3-pro-image:generateContent", ("vertex/gemini-3-pro-image", "generateContent")),
        ("imagen-4.0-generate-001:predict", ("imagen-4.0-generate-001", "predict")),
        ("odd:id:generateContent", ("odd:id", "generateContent")),
    ],
)
def test_split_model_action_on_the_last_colon(path: str, expected: tuple[str, str]) -> None:
    assert split_model_action(path) == expected


@pytest.mark.parametrize("path", ["demo", "demo:countTokens", ":generateContent", "demo:embedContent"])
def test_unknown_action_is_404(path: str) -> None:
    with pytest.raises(NotFoundError):
        split_model_action(path)


# -- generateContent -> canonical -------------------------------------------------------------------

CAMEL: dict[str, Any] = {
    "contents": [
        {"role": "user", "parts": [{"text": "an otter"}]},
        {"role": "model", "parts": [{"text": "Here it is"}]},
        {"role": "user", "parts": [
            {"text": "wearing a top hat"},
            {"text": "in the rain"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}},
            {"text": "secret plan", "thought": True},
        ]},
    ],
    "systemInstruction": {"parts": [{"text": "You draw."}, {"text": "Be bold."}]},
    "generationConfig": {
        "responseModalities": ["Text", "image"],
        "candidateCount": 3,
        "temperature": 1.0,
        "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K",
                        "imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 70}},
        "thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": True},
    },
    "safetySettings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}],
    "tools": [{"googleSearch": {}}],
    "cachedContent": "cachedContents/abc",
}

SNAKE: dict[str, Any] = {
    "contents": [*CAMEL["contents"][:2], {"role": "user", "parts": [
        {"text": "wearing a top hat"},
        {"text": "in the rain"},
        {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
        {"file_data": {"mime_type": "image/jpeg", "file_uri": "https://example.com/a.jpg"}},
        {"text": "secret plan", "thought": True},
    ]}],
    "system_instruction": {"parts": [{"text": "You draw."}, {"text": "Be bold."}]},
    "generation_config": {
        "response_modalities": ["TEXT", "IMAGE"],
        "candidate_count": 3,
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K",
                         "image_output_options": {"mime_type": "image/jpeg", "compression_quality": 70}},
        "thinking_config": {"thinking_level": "HIGH"},
    },
    "safety_settings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}],
}

EXPECTED = GenerationRequest(
    prompt="wearing a top hat\nin the rain",
    system="You draw.\nBe bold.",
    model="google/gemini-3-pro-image",
    n=3,
    aspect_ratio="16:9",
    image_size="2K",
    output_format="jpeg",
    output_compression=70,
    input_images=[PNG_INPUT],
    # the conversation as sent: the earlier turns, then the last user turn's parts in order
    history=[Turn(role="user", parts=[Part(text="an otter")]), Turn(role="model", parts=[Part(text="Here it is")])],
    parts=[Part(text="wearing a top hat"), Part(text="in the rain"), Part(image=0), Part(image=1)],
)


@pytest.mark.parametrize("body", [CAMEL, SNAKE], ids=["camelCase", "snake_case"])
def test_to_generation_maps_every_field(body: dict[str, Any]) -> None:
    wire = gen_request(body)
    assert to_generation(wire, model="google/gemini-3-pro-image") == EXPECTED.model_copy(update={"input_images": []})
    assert response_modalities(wire) == ("TEXT", "IMAGE")


def test_images_keep_their_place_before_the_text() -> None:
    wire = gen_request({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}, {"text": "the character above, waving"}]}]})
    generation = to_generation(wire, model="demo")
    assert generation.parts == [Part(image=0), Part(text="the character above, waving")]
    assert generation.current_images() == [0] and generation.prompt == "the character above, waving"


@pytest.mark.parametrize("body", [CAMEL, SNAKE], ids=["camelCase", "snake_case"])
def test_input_refs_of_the_last_user_turn(body: dict[str, Any]) -> None:
    assert input_refs(gen_request(body)) == [
        ImageRef(param="contents[2].parts[2].inlineData.data", data="iVBORw0KGgo=", mime_type="image/png"),
        ImageRef(param="contents[2].parts[3].fileData.fileUri", url="https://example.com/a.jpg"),
    ]


def test_minimal_request_defaults() -> None:
    wire = gen_request({"contents": [{"parts": [{"text": " a cat "}]}]})
    assert to_generation(wire, model="demo") == GenerationRequest(prompt="a cat", model="demo",
                                                                  parts=[Part(text=" a cat ")])
    assert response_modalities(wire) == ("TEXT", "IMAGE")  # both when absent
    assert input_refs(wire) == []


def test_system_instruction_as_a_plain_string() -> None:
    wire = gen_request({"contents": [{"parts": [{"text": "x"}]}], "systemInstruction": "Draw kindly."})
    assert to_generation(wire, model="demo").system == "Draw kindly."


def test_image_only_modality_and_flat_output_mime() -> None:
    wire = gen_request({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {
        "responseModalities": ["IMAGE"], "imageConfig": {"outputMimeType": "image/webp",
                                                         "outputCompressionQuality": 40}}})
    assert response_modalities(wire) == ("IMAGE",)
    generation = to_generation(wire, model="demo")
    assert (generation.output_format, generation.output_compression) == ("webp", 40)


def test_url_safe_unpadded_base64_is_made_standard() -> None:
    wire = gen_request({"contents": [{"parts": [
        {"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": "-_8\n"}}]}]})
    assert standard_base64(input_refs(wire)[0].data or "") == "+/8="
    assert standard_base64("iVBORw0KGgo=") == "iVBORw0KGgo="


def test_a_conversation_keeps_every_turn_and_the_model_image_with_its_signature() -> None:
    wire = gen_request({"contents": [
        {"role": "user", "parts": [{"text": "a boat"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
        {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": "BBBB"}, "thought": True},
                                    {"inlineData": {"mimeType": "image/png", "data": "CCCC"},
                                     "thoughtSignature": "c2ln"}]},
        {"role": "user", "parts": [{"text": "make it red"}]},
    ]})
    assert input_refs(wire) == [
        ImageRef(param="contents[0].parts[1].inlineData.data", data="AAAA", mime_type="image/png"),
        ImageRef(param="contents[1].parts[1].inlineData.data", data="CCCC", mime_type="image/png")]
    generation = to_generation(wire, model="demo")
    assert generation.prompt == "make it red"
    assert generation.history == [Turn(role="user", parts=[Part(text="a boat"), Part(image=0)]),
                                  Turn(role="model", parts=[Part(image=1, thought_signature="c2ln")])]
    # a model taking turns gets both images; a single-prompt model edits the model's last picture
    assert generation.images_for(multi_turn=True) == [0, 1]
    assert generation.images_for(multi_turn=False) == [1]


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ({"responseModalities": ["TEXT"]}, "generationConfig.responseModalities"),
        ({"responseModalities": ["IMAGE", "AUDIO"]}, "generationConfig.responseModalities"),
        ({"imageConfig": {"imageOutputOptions": {"mimeType": "image/gif"}}},
         "generationConfig.imageConfig.imageOutputOptions.mimeType"),
    ],
)
def test_refused_generation_config_names_the_field(config: dict[str, Any], param: str) -> None:
    wire = gen_request({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": config})
    with pytest.raises(InvalidRequestError) as info:
        to_generation(wire, model="demo")
    assert info.value.param == param
    assert param in info.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"contents": []}, "contents"),
        ({}, "contents"),
        ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 11}},
         "generationConfig.candidateCount"),
        # named as the client spelled it
        ({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"candidate_count": 0}},
         "generation_config.candidate_count"),
        ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]},
         "contents[0].parts[0].inlineData.data"),
    ],
)
def test_invalid_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        gen_request(body)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("contents", "param"),
    [
        ([{"role": "model", "parts": [{"text": "x"}]}], "contents"),
        ([{"role": "system", "parts": [{"text": "x"}]}], "contents[0].role"),
        ([{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}],
         "contents[0].parts"),
    ],
)
def test_prompt_problems_name_the_field(contents: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation(gen_request({"contents": contents}), model="demo")
    assert info.value.param == param


def test_file_uri_must_be_a_url() -> None:
    wire = gen_request({"contents": [{"parts": [
        {"text": "x"}, {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/a.png"}}]}]})
    with pytest.raises(InvalidRequestError) as info:
        input_refs(wire)
    assert info.value.param == "contents[0].parts[1].fileData.fileUri"


def test_with_param_says_the_gemini_field() -> None:
    error = InvalidRequestError("Invalid value for 'aspect_ratio': '7:1'.", param="aspect_ratio").with_param(
        GENERATE_PARAMS)
    assert error.param == "generationConfig.imageConfig.aspectRatio"
    assert error.message == "Invalid value for 'generationConfig.imageConfig.aspectRatio': '7:1'."
    predict = InvalidRequestError("Invalid value for 'n': too many.", param="n").with_param(PREDICT_PARAMS)
    assert (predict.param, predict.message) == ("parameters.sampleCount", "Invalid value for "
                                                "'parameters.sampleCount': too many.")
    untouched = InvalidRequestError("No.", param="model").with_param(GENERATE_PARAMS)
    assert (untouched.param, untouched.message) == ("model", "No.")


# -- :predict -> canonical -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [{"prompt": "Robot holding a red skateboard"}],
         "parameters": {"sampleCount": 4, "aspectRatio": "16:9", "personGeneration": "allow_adult",
                        "sampleImageSize": "2K", "outputOptions": {"mimeType": "image/jpeg",
                                                                   "compressionQuality": 75},
                        "safetySetting": "BLOCK_LOW_AND_ABOVE", "includeRaiReason": True, "seed": 3}},
        {"instances": [{"prompt": "Robot holding a red skateboard"}],
         "parameters": {"sample_count": 4, "aspect_ratio": "16:9", "image_size": "2K",
                        "output_options": {"mime_type": "image/jpeg", "compression_quality": 75}}},
    ],
    ids=["camelCase", "snake_case"],
)
def test_predict_to_generation(body: dict[str, Any]) -> None:
    assert predict_to_generation(predict_request(body), model="imagen-4.0-generate-001") == GenerationRequest(
        prompt="Robot holding a red skateboard", model="imagen-4.0-generate-001", n=4, aspect_ratio="16:9",
        image_size="2K", output_format="jpeg", output_compression=75)


def test_predict_defaults_to_one_image() -> None:
    generation = predict_to_generation(predict_request({"instances": [{"prompt": "x"}]}), model="demo")
    assert generation == GenerationRequest(prompt="x", model="demo", n=1)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"instances": []}, "instances"),
        ({"instances": [{"prompt": ""}]}, "instances[0].prompt"),
        ({"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 11}}, "parameters.sampleCount"),
    ],
)
def test_predict_invalid_bodies(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        predict_request(body)
    assert info.value.param == param


def test_predict_refuses_two_instances() -> None:
    with pytest.raises(InvalidRequestError) as info:
        predict_to_generation(predict_request({"instances": [{"prompt": "a"}, {"prompt": "b"}]}), model="demo")
    assert info.value.param == "instances"


# -- canonical -> wire ------------------------------------------------------------------------------


def image(index: int, b64: str, *, text: str | None = None, usage: Usage | None = None,
          mime: str = "image/png") -> DeliveredImage:
    return DeliveredImage(id=f"img_{index}", index=index, mime_type=mime, width=8, height=8, text=text,
                          usage=usage or Usage(), b64_json=b64)


USAGE_A = Usage(input_tokens=12, input_text_tokens=12, output_tokens=1290, output_image_tokens=1290)
USAGE_B = Usage(input_tokens=20, input_text_tokens=12, input_image_tokens=8, output_tokens=1300,
                output_text_tokens=10, output_image_tokens=1290)


def test_to_wire_exact_shape() -> None:
    response = to_wire([image(0, "QUJD", text="Here is your otter", usage=USAGE_A)],
                       model_version="gemini-3-pro-image", response_id="job_1", include_text=True)
    assert dump(response) == {
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Here is your otter"},
                {"inlineData": {"mimeType": "image/png", "data": "QUJD"}},
            ]},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {
            "promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
        },
        "modelVersion": "gemini-3-pro-image",
        "responseId": "job_1",
    }


def test_to_wire_one_candidate_per_image_without_text() -> None:
    response = to_wire([image(0, "QUJD", text="one", usage=USAGE_A), image(1, "REVG", usage=USAGE_B,
                                                                       mime="image/jpeg")],
                       model_version="demo", response_id="job_2", include_text=False)
    assert dump(response) == {
        "candidates": [
            {"content": {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]},
             "finishReason": "STOP", "index": 0},
            {"content": {"role": "model", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "REVG"}}]},
             "finishReason": "STOP", "index": 1},
        ],
        "usageMetadata": {
            "promptTokenCount": 32, "candidatesTokenCount": 2590, "totalTokenCount": 2622,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 24}, {"modality": "IMAGE", "tokenCount": 8}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 10},
                                        {"modality": "IMAGE", "tokenCount": 2580}],
        },
        "modelVersion": "demo",
        "responseId": "job_2",
    }


def test_blocked_prompt_is_prompt_feedback_without_candidates() -> None:
    assert dump(blocked("The prompt was blocked (SAFETY).", model_version="gemini-3-pro-image",
                        response_id="job_3")) == {
        "promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "The prompt was blocked (SAFETY)."},
        "usageMetadata": {"promptTokenCount": 0, "totalTokenCount": 0},
        "modelVersion": "gemini-3-pro-image",
        "responseId": "job_3",
    }


def test_stream_chunks_one_per_image_usage_on_the_last() -> None:
    chunks = [dump(c) for c in to_stream_chunks(
        [image(0, "QUJD", text="a", usage=USAGE_A), image(1, "REVG", text="b", usage=USAGE_A)],
        model_version="demo", response_id="job_4", include_text=True)]
    assert chunks[0] == {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]},
            "finishReason": "STOP", "index": 0}],
        "modelVersion": "demo", "responseId": "job_4",
    }
    assert chunks[1]["candidates"][0]["index"] == 1
    assert chunks[1]["usageMetadata"]["totalTokenCount"] == 2604


def test_sse_and_json_array_bytes() -> None:
    chunk = {"candidates": [{"index": 0, "finishReason": "STOP"}], "responseId": "job_é"}
    expected = 'data: {"candidates":[{"index":0,"finishReason":"STOP"}],"responseId":"job_é"}\r\n\r\n'
    assert sse_event(chunk) == expected.encode()
    assert json_array_item({"a": 1}, first=True) == b'{"a":1}'
    assert json_array_item({"a": 1}, first=False) == b',\r\n{"a":1}'
    assert SSE_KEEPALIVE == b"\r\n"
    body = b"[" + SSE_KEEPALIVE + json_array_item({"a": 1}, first=True) + json_array_item({"b": 2}, first=False) + b"]"
    assert json.loads(body) == [{"a": 1}, {"b": 2}]


def test_predict_wire_and_filtered() -> None:
    assert dump(to_predict_wire([image(0, "QUJD"), image(1, "REVG", mime="image/jpeg")])) == {
        "predictions": [{"bytesBase64Encoded": "QUJD", "mimeType": "image/png"},
                        {"bytesBase64Encoded": "REVG", "mimeType": "image/jpeg"}]}
    assert dump(predict_blocked("Blocked.", include_rai_reason=True)) == {
        "predictions": [{"raiFilteredReason": "Blocked."}]}
    assert dump(predict_blocked("Blocked.", include_rai_reason=False)) == {}


# -- errors -----------------------------------------------------------------------------------------

T = "type.googleapis.com/google.rpc."
GOOGLE = {"domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}


def info(reason: str, **extra: Any) -> dict[str, Any]:
    return {"@type": T + "ErrorInfo", "reason": reason, "domain": "imagegate", **extra}


@pytest.mark.parametrize(
    ("error", "code", "status", "details"),
    [
        (InvalidRequestError("Bad ratio.", param="generationConfig.imageConfig.aspectRatio"), 400,
         "INVALID_ARGUMENT", [info("INVALID_VALUE"), {"@type": T + "BadRequest", "fieldViolations": [
             {"field": "generationConfig.imageConfig.aspectRatio", "description": "Bad ratio."}]}]),
        (ContentPolicyError("Blocked."), 400, "INVALID_ARGUMENT", [info("MODERATION_BLOCKED")]),
        (AuthenticationError("Incorrect API key provided."), 400, "INVALID_ARGUMENT",
         [{"@type": T + "ErrorInfo", "reason": "API_KEY_INVALID", **GOOGLE}]),
        (AuthenticationError("You didn't provide an API key.", code="missing_api_key"), 401, "UNAUTHENTICATED",
         [{"@type": T + "ErrorInfo", "reason": "CREDENTIALS_MISSING", **GOOGLE}]),
        (PermissionDeniedError("Not yours."), 403, "PERMISSION_DENIED", None),
        (NotFoundError("Nothing here.", code="unknown_url"), 404, "NOT_FOUND", [info("UNKNOWN_URL")]),
        (ModelNotFoundError("No model.", param="model"), 404, "NOT_FOUND",
         [info("MODEL_NOT_FOUND"), {"@type": T + "BadRequest", "fieldViolations": [
             {"field": "model", "description": "No model."}]}]),
        (ConflictError("Busy."), 409, "ABORTED", [info("CONFLICT")]),
        (PayloadTooLargeError("Too big."), 400, "INVALID_ARGUMENT", [info("REQUEST_TOO_LARGE")]),
        (RateLimitError("Slow down.", retry_after=34), 429, "RESOURCE_EXHAUSTED",
         [info("RATE_LIMIT_EXCEEDED"), {"@type": T + "RetryInfo", "retryDelay": "34s"}]),
        (RateLimitError("Slow down."), 429, "RESOURCE_EXHAUSTED", [info("RATE_LIMIT_EXCEEDED")]),
        (QuotaExceededError("Out of credit.", retry_after=60), 429, "RESOURCE_EXHAUSTED",
         [info("INSUFFICIENT_QUOTA")]),
        (UpstreamError("Upstream broke."), 500, "INTERNAL", [info("UPSTREAM_ERROR")]),
        (UpstreamTimeoutError("Upstream slow."), 504, "DEADLINE_EXCEEDED", [info("UPSTREAM_TIMEOUT")]),
        (UpstreamOverloadedError("Overloaded.", retry_after=1.5), 503, "UNAVAILABLE",
         [info("UPSTREAM_OVERLOADED"), {"@type": T + "RetryInfo", "retryDelay": "1.500s"}]),
        (ServiceUnavailableError("Queue down."), 503, "UNAVAILABLE", [info("SERVICE_UNAVAILABLE")]),
        (GatewayError("Oops."), 500, "INTERNAL", None),
    ],
)

def test_error_rendering(error: GatewayError, code: int, status: str, details: list[Any] | None) -> None:
    http, body = to_wire_error(error)
    assert http == code
    expected: dict[str, Any] = {"code": code, "message": error.message, "status": status}
    if details is not None:
        expected["details"] = details
    assert body == {"error": expected}


def test_job_timeout_names_the_job() -> None:
    error = JobWaitTimeoutError("The job 'job_9' did not finish within 600 s. It goes on.", job_id="job_9")
    assert to_wire_error(error) == (504, {"error": {
        "code": 504,
        "message": "The job 'job_9' did not finish within 600 s. It goes on. Poll GET /v1/jobs/job_9 for its result.",
        "status": "DEADLINE_EXCEEDED",
        "details": [info("JOB_TIMEOUT", metadata={"job_id": "job_9"})],
    }})


@pytest.mark.parametrize(("seconds", "text"), [(34, "34s"), (1.5, "1.500s"), (0.001, "0.001s"), (2.0004, "2.001s")])
def test_retry_delay_is_a_protobuf_duration(seconds: float, text: str) -> None:
    assert retry_delay(seconds) == text


# -- GET /v1beta/models -----------------------------------------------------------------------------


def test_model_resource_shape() -> None:
    catalogue = Catalogue.load()
    assert dump(model_resource(catalogue.get("gemini-3-pro-image"))) == {
        "name": "models/gemini-3-pro-image",
        "baseModelId": "gemini-3-pro-image",
        "version": "3",
        "displayName": "Gemini 3 Pro Image (Nano Banana Pro)",
        "description": "Gemini 3 Pro Image (Nano Banana Pro): 1K, 2K and 4K, thinking always on.",
        "inputTokenLimit": 65536,
        "outputTokenLimit": 32768,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "predict"],
    }
    assert dump(model_resource(catalogue.get("demo-image")))["displayName"] == "Local model"


def test_list_models_pages() -> None:
    specs = Catalogue.load().all_models
    everything = dump(list_models(specs, page_size=None, page_token=None))
    assert [m["name"] for m in everything["models"]] == [f"models/{s.id}" for s in specs]
    assert everything["nextPageToken"] == ""
    first = dump(list_models(specs, page_size=2, page_token=None))
    assert len(first["models"]) == 2 and first["nextPageToken"] == "2"
    second = dump(list_models(specs, page_size=2, page_token=first["nextPageToken"]))
    assert second["models"][0]["name"] == f"models/{specs[2].id}"
    assert len(dump(list_models(specs, page_size=5000, page_token=None))["models"]) == len(specs)
    with pytest.raises(InvalidRequestError) as info_:
        list_models(specs, page_size=2, page_token="nope")
    assert info_.value.param == "pageToken"
