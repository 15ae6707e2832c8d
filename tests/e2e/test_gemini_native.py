"""The Gemini native dialect end to end, driven by the official google-genai SDK (and raw httpx where
clients such as SillyImages speak it by hand): generateContent, streamGenerateContent (SSE and the
JSON array), Imagen :predict, the model list, errors in Google's shape — on the demo model in both
modes, and on real provider families through the fake upstream."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

SILLY_BODY = {  # as SillyImages sends it
    "contents": [{"role": "user", "parts": [
        {"text": "Generate a cinematic 16:9 image of a tiny banana-shaped robot in a rainy neon street"}]}],
    "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "16:9",
                                                                                  "imageSize": "2K"}},
}


def sdk(stack: Stack, key: str) -> genai.Client:
    """The client as its users make it: the key and the base URL, nothing else (google-genai 3.x
    then sends /v1/... requests)."""
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=stack.base_url))


def decode(data: bytes | str | None) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else (data or b"")
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def images_of(response: types.GenerateContentResponse) -> list[Image.Image]:
    parts = [part for c in response.candidates or [] if c.content for part in c.content.parts or []]
    return [decode(part.inline_data.data) for part in parts if part.inline_data]


def post(stack: Stack, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(stack.base_url + path, json=body, timeout=120, **kwargs)


# -- the demo model, embedded and distributed -----------------------------------------------------------


def test_generate_content_with_the_sdk(stack: Stack) -> None:
    client = sdk(stack, stack.create_key(f"gem-one-{stack.mode}"))
    response = client.models.generate_content(
        model="demo", contents="a lighthouse at dusk",
        config=types.GenerateContentConfig(response_modalities=["IMAGE", "TEXT"],
                                           image_config=types.ImageConfig(aspect_ratio="16:9")))
    [image] = images_of(response)
    assert (image.format, image.size) == ("PNG", (1024, 576))
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.index == 0
    assert response.text and "lighthouse" in response.text
    assert response.model_version == "demo-image"
    assert (response.response_id or "").startswith("job_")
    assert response.usage_metadata is not None and response.usage_metadata.total_token_count == 0


def test_stream_with_the_sdk(stack: Stack) -> None:
    client = sdk(stack, stack.create_key(f"gem-stream-{stack.mode}"))
    chunks = list(client.models.generate_content_stream(
        model="demo", contents="a fox in snow",
        config=types.GenerateContentConfig(response_modalities=["IMAGE"],
                                           image_config=types.ImageConfig(aspect_ratio="1:1"))))
    assert len(chunks) == 1
    [image] = images_of(chunks[0])
    assert image.size == (1024, 1024)
    assert (chunks[0].candidates or [])[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata is not None
    # IMAGE only: no text part
    assert all(p.text is None for p in (chunks[0].candidates or [])[0].content.parts or [])  # type: ignore[union-attr]


def test_candidate_count_fans_out(stack: Stack) -> None:
    client = sdk(stack, stack.create_key(f"gem-three-{stack.mode}"))
    response = client.models.generate_content(
        model="demo", contents="three moons",
        config=types.GenerateContentConfig(candidate_count=3, response_modalities=["IMAGE"]))
    assert [c.index for c in response.candidates or []] == [0, 1, 2]
    images = images_of(response)
    assert len(images) == 3 and len({i.tobytes() for i in images}) == 3


@pytest.mark.filterwarnings("ignore:The generate_images method is deprecated")
def test_generate_images_is_refused_by_the_sdk_so_predict_is_raw(stack: Stack) -> None:
    key = stack.create_key(f"gem-predict-{stack.mode}")
    # google-genai 3.4 sends :predict only in Vertex mode; with an API key it refuses before any request
    client = sdk(stack, key)
    with pytest.raises(ValueError, match="only supported in Gemini Enterprise"):
        client.models.generate_images(model="demo", prompt="a robot")
    response = post(stack, "/v1beta/models/demo:predict", {
        "instances": [{"prompt": "Robot holding a red skateboard"}],
        "parameters": {"sampleCount": 2, "aspectRatio": "4:3", "outputOptions": {"mimeType": "image/jpeg",
                                                                                  "compressionQuality": 80}}},
        headers={"x-goog-api-key": key})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["mimeType"] for p in predictions] == ["image/jpeg", "image/jpeg"]
    assert {(decode(p["bytesBase64Encoded"]).format, decode(p["bytesBase64Encoded"]).size)
            for p in predictions} == {("JPEG", (1024, 768))}


@pytest.mark.parametrize("auth", ["query", "x-goog-api-key", "bearer"])
def test_sillyimages_raw_request(stack: Stack, auth: str) -> None:
    key = stack.create_key(f"gem-silly-{auth}-{stack.mode}")
    params = {"key": key} if auth == "query" else {}
    headers = {"x-goog-api-key": key} if auth == "x-goog-api-key" else {}
    if auth == "bearer":
        headers = {"Authorization": f"Bearer {key}"}
    response = post(stack, "/v1beta/models/google/demo:generateContent", SILLY_BODY, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    parts = body["candidates"][0]["content"]["parts"]
    data = next(p["inlineData"] for p in parts if "inlineData" in p)
    assert data["mimeType"] == "image/png" and decode(data["data"]).size == (1024, 576)
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert set(body["usageMetadata"]) >= {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"}
    assert response.headers["x-imagegate-job-id"] == body["responseId"]


def test_snake_case_body_and_stream_as_a_json_array(stack: Stack) -> None:
    key = stack.create_key(f"gem-array-{stack.mode}")
    body = {"contents": [{"parts": [{"text": "two kites"}]}],
            "generation_config": {"candidate_count": 2, "response_modalities": ["image"],
                                  "image_config": {"aspect_ratio": "3:2"}}}
    response = post(stack, "/v1beta/models/demo:streamGenerateContent", body, headers={"x-goog-api-key": key})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    chunks = json.loads(response.content)
    assert [c["candidates"][0]["index"] for c in chunks] == [0, 1]
    assert "usageMetadata" in chunks[-1] and "usageMetadata" not in chunks[0]
    assert decode(chunks[1]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]).size == (1024, 683)


def test_sse_bytes_on_the_wire(stack: Stack) -> None:
    key = stack.create_key(f"gem-sse-{stack.mode}")
    response = post(stack, "/v1beta/models/demo:streamGenerateContent?alt=sse", SILLY_BODY,
                    headers={"x-goog-api-key": key})
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.startswith("data: {") and text.endswith("\r\n\r\n") and "[DONE]" not in text
    events = [json.loads(e.removeprefix("data: ")) for e in text.split("\r\n\r\n") if e.strip()]
    assert len(events) == 1 and events[0]["candidates"][0]["finishReason"] == "STOP"


def test_prefer_respond_async_answers_202(stack: Stack) -> None:
    key = stack.create_key(f"gem-async-{stack.mode}")
    response = post(stack, "/v1beta/models/demo:generateContent", SILLY_BODY,
                    headers={"x-goog-api-key": key, "Prefer": "respond-async"})
    assert response.status_code == 202
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"


def test_errors_in_googles_shape(stack: Stack) -> None:
    key = stack.create_key(f"gem-errors-{stack.mode}")
    client = sdk(stack, key)
    stranger = sdk(stack, "sk-not-a-key")  # keep a reference: a collected Client closes its connection pool
    with pytest.raises(errors.ClientError) as bad_key:
        stranger.models.generate_content(model="demo", contents="x")
    assert (bad_key.value.code, bad_key.value.status) == (400, "INVALID_ARGUMENT")
    assert bad_key.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"

    missing = post(stack, "/v1beta/models/demo:generateContent", SILLY_BODY)
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"

    with pytest.raises(errors.ClientError) as unknown:
        client.models.generate_content(model="no-such-model", contents="x")
    assert (unknown.value.code, unknown.value.status) == (404, "NOT_FOUND")

    with pytest.raises(errors.ClientError) as text_only:
        client.models.generate_content(model="demo", contents="x",
                                       config=types.GenerateContentConfig(response_modalities=["TEXT"]))
    assert text_only.value.code == 400 and "generationConfig.responseModalities" in (text_only.value.message or "")

    with pytest.raises(errors.ClientError) as too_many:
        client.models.generate_content(model="demo", contents="x",
                                       config=types.GenerateContentConfig(candidate_count=11))
    assert too_many.value.code == 400 and "candidateCount" in (too_many.value.message or "")

    bad_ratio = post(stack, "/v1beta/models/demo:generateContent", {
        "contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"aspectRatio": "5:1"}}},
        headers={"x-goog-api-key": key}).json()["error"]
    assert bad_ratio["code"] == 400 and "'generationConfig.imageConfig.aspectRatio'" in bad_ratio["message"]
    assert bad_ratio["details"][-1]["fieldViolations"][0]["field"] == "generationConfig.imageConfig.aspectRatio"

    not_an_image = post(stack, "/v1beta/models/demo:generateContent", {"contents": [{"parts": [
        {"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}}]}]},
        headers={"x-goog-api-key": key}).json()["error"]
    assert not_an_image["status"] == "INVALID_ARGUMENT"
    assert not_an_image["details"][-1]["fieldViolations"][0]["field"] == "contents[0].parts[1].inlineData.data"

    action = post(stack, "/v1beta/models/demo:countTokens", SILLY_BODY, headers={"x-goog-api-key": key})
    assert action.status_code == 404 and action.json()["error"]["status"] == "NOT_FOUND"

    not_json = httpx.post(stack.base_url + "/v1beta/models/demo:generateContent", content=b"{oops",
                          headers={"x-goog-api-key": key})
    assert not_json.status_code == 400 and not_json.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_model_list_with_the_sdk(stack: Stack) -> None:
    key = stack.create_key(f"gem-models-{stack.mode}")
    client = sdk(stack, key)
    models = list(client.models.list())  # GET /v1/models, answered in Google's shape for a Google client
    assert "models/demo-image" in [m.name for m in models]
    demo = client.models.get(model="demo")
    assert demo.name == "models/demo-image"
    assert demo.supported_actions == ["generateContent", "streamGenerateContent", "predict"]
    with pytest.raises(errors.ClientError) as unknown:
        client.models.get(model="no-such-model")
    assert (unknown.value.code, unknown.value.status) == (404, "NOT_FOUND")
    page = httpx.get(stack.base_url + "/v1beta/models", params={"pageSize": 1, "key": key}).json()
    assert len(page["models"]) == 1 and page["nextPageToken"] == ("1" if len(models) > 1 else "")
    assert httpx.get(stack.base_url + "/v1beta/models").status_code == 401


def test_both_api_versions_answer_alike(stack: Stack) -> None:
    key = stack.create_key(f"gem-versions-{stack.mode}")
    headers = {"x-goog-api-key": key}
    for version in ("v1", "v1beta"):
        listed = httpx.get(f"{stack.base_url}/{version}/models", headers=headers).json()
        assert "models/demo-image" in [m["name"] for m in listed["models"]]
        answer = post(stack, f"/{version}/models/demo:generateContent", SILLY_BODY, headers=headers)
        assert answer.status_code == 200 and answer.json()["modelVersion"] == "demo-image"
        streamed = post(stack, f"/{version}/models/demo:streamGenerateContent?alt=sse", SILLY_BODY, headers=headers)
        assert streamed.text.startswith("data: {")
        predicted = post(stack, f"/{version}/models/demo:predict", {"instances": [{"prompt": "a fox"}]},
                         headers=headers)
        assert len(predicted.json()["predictions"]) == 1
    wrong = post(stack, "/v1/models/demo:countTokens", SILLY_BODY, headers=headers)
    assert wrong.status_code == 404 and wrong.json()["error"]["status"] == "NOT_FOUND"  # Google's error shape
    # the model list of everyone else keeps its own shape
    openai_list = httpx.get(stack.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    demo = next(m for m in openai_list["data"] if m["id"] == "demo-image")
    assert demo["output_modalities"] == ["image"] and demo["capabilities"]["image_generation"] is True


def test_open_webui_predict_body(stack: Stack) -> None:
    """Open WebUI's Gemini engine (its default method, predict): instances as one object, the key in
    x-goog-api-key, the base URL ending in /v1beta."""
    key = stack.create_key(f"gem-owui-{stack.mode}")
    response = post(stack, "/v1beta/models/demo:predict", {
        "instances": {"prompt": "a watercolor of a lighthouse"},
        "parameters": {"sampleCount": 2, "outputOptions": {"mimeType": "image/png"}}},
        headers={"x-goog-api-key": key, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["mimeType"] for p in predictions] == ["image/png", "image/png"]
    assert decode(predictions[0]["bytesBase64Encoded"]).format == "PNG"


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# -- keep-alives while a slow job runs -------------------------------------------------------------


def test_stream_keep_alives_do_not_break_the_sdk(make_stack: Callable[..., Stack]) -> None:
    slow = make_stack("embedded", IMAGEGATE_DEMO_LATENCY_S="5.6")
    key = slow.create_key("gem-slow")
    with httpx.stream("POST", slow.base_url + "/v1beta/models/demo:streamGenerateContent?alt=sse",
                      json=SILLY_BODY, headers={"x-goog-api-key": key}, timeout=60) as response:
        raw = b"".join(response.iter_bytes())
    assert raw.startswith(b"\r\ndata: {")  # one blank-line keep-alive, then the image
    client = sdk(slow, key)
    chunks = list(client.models.generate_content_stream(model="demo", contents="slow fox"))
    slow.stop()
    assert len(images_of(chunks[-1])) == 1


# -- real provider families through the fake upstream ---------------------------------------------------


@pytest.mark.parametrize(("model", "endpoint", "size"), [
    ("gemini-3-pro-image", "gemini", (1376, 768)),
    ("google/gemini-3-pro-image", "gemini", (1376, 768)),
    ("vertex/gemini-3-pro-image", "vertex_gemini", (1376, 768)),
    ("gpt-image-2", "openai_generations", (1024, 576)),
])
def test_native_request_served_by_each_family(gw: Stack, key: str, upstream: FakeUpstream, model: str,
                                              endpoint: str, size: tuple[int, int]) -> None:
    client = sdk(gw, key)
    response = client.models.generate_content(
        model=model, contents="a harbour at dawn",
        config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"],
                                           image_config=types.ImageConfig(aspect_ratio="16:9")))
    [image] = images_of(response)
    assert image.size == size
    assert upstream.count(endpoint) == 1
    assert response.model_version == model.removeprefix("google/")


def test_gemini_edit_sends_the_image_upstream(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    client = sdk(gw, key)
    response = client.models.generate_content(
        model="gemini-3-pro-image",
        contents=types.Content(role="user", parts=[
            types.Part.from_text(text="make it blue"),
            types.Part.from_bytes(data=base64.b64decode(_png(64, 48)), mime_type="image/png")]))
    assert len(images_of(response)) == 1
    [call] = [c for c in upstream.calls if c.endpoint == "gemini"]
    parts = (call.json or {})["contents"][-1]["parts"]
    assert any("inlineData" in p or "inline_data" in p for p in parts)


def test_predict_on_an_imagen_model(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    response = post(gw, "/v1beta/models/imagen-4.0-generate-001:predict",
                    {"instances": [{"prompt": "three pears"}], "parameters": {"sampleCount": 3}},
                    params={"key": key})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3
    assert upstream.count("imagen") >= 1


def test_content_policy_is_200_with_prompt_feedback(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=5)
    raw = post(gw, "/v1beta/models/gemini-3-pro-image:generateContent", SILLY_BODY, params={"key": key})
    assert raw.status_code == 200
    body = raw.json()
    assert "candidates" not in body and body["promptFeedback"]["blockReason"] == "SAFETY"
    client = sdk(gw, key)
    response = client.models.generate_content(model="gemini-3-pro-image", contents="something blocked")
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    chunks = list(client.models.generate_content_stream(model="gemini-3-pro-image", contents="blocked"))
    assert chunks[-1].prompt_feedback is not None and not chunks[-1].candidates
    assert upstream.count("gemini") == 3  # a blocked prompt is never retried


def test_a_failure_after_the_stream_started_is_an_error_chunk(gw: Stack, key: str, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "status", status=400, times=3)
    client = sdk(gw, key)
    with pytest.raises(errors.ServerError) as failed:
        list(client.models.generate_content_stream(model="gemini-3-pro-image", contents="x"))
    assert failed.value.status == "INTERNAL"
    assert failed.value.details["error"]["details"][0]["metadata"]["job_id"].startswith("job_")
