"""Tests of the fake upstream itself, through both adapters: a real HTTP server (``http``) and
``httpx.MockTransport`` (``mock``)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from tests.fakes import FakeUpstream
from tests.fakes.upstream import TRICKLE_PIECES
from tests.fakes.upstream_oauth import CLOUD_PLATFORM, assertion_for

GKEY = {"x-goog-api-key": "test-gemini-key"}
OKEY = {"Authorization": "Bearer test-openai-key"}
CKEY = {"Authorization": "Bearer test-chat-key"}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(params=["http", "mock"])
def client(request: pytest.FixtureRequest, fake: FakeUpstream) -> Iterator[httpx.Client]:
    if request.param == "http":
        http = httpx.Client(base_url=fake.base_url, timeout=60)
    else:
        http = httpx.Client(base_url=fake.base_url, transport=fake.transport())
    with http:
        yield http


def image_of(data: bytes | str) -> Image.Image:
    raw = base64.b64decode(data, validate=True) if isinstance(data, str) else data
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def encode(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def gemini(
    client: httpx.Client,
    model: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    method: str = "generateContent",
    **kw: Any,
) -> httpx.Response:
    return client.post(
        f"/v1beta/models/{model}:{method}", json=body, headers=GKEY if headers is None else headers, **kw
    )


def prompt(text: str = "A tiny banana-shaped robot", **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        body["generationConfig"] = config
    return body


def result_images(response: httpx.Response) -> list[Image.Image]:
    parts = response.json()["candidates"][0]["content"]["parts"]
    return [image_of(p["inlineData"]["data"]) for p in parts if "inlineData" in p and not p.get("thought")]


# --- Gemini generateContent --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "image_config", "size"),
    [
        ("gemini-2.5-flash-image", None, (1024, 1024)),
        ("gemini-2.5-flash-image", {"aspectRatio": "21:9"}, (1536, 672)),
        ("gemini-3-pro-image", {"aspectRatio": "16:9", "imageSize": "2K"}, (2752, 1536)),
        ("gemini-3-pro-image", {"aspectRatio": "3:4"}, (896, 1200)),
        ("gemini-3.1-flash-image", {"aspectRatio": "4:1", "imageSize": "512"}, (1024, 256)),
        ("gemini-3.1-flash-image", {"imageSize": "4K"}, (4096, 4096)),
    ],
)
def test_gemini_generates_image_of_documented_size(
    client: httpx.Client,
    fake: FakeUpstream,
    model: str,
    image_config: dict[str, str] | None,
    size: tuple[int, int],
) -> None:
    config = {
        "responseModalities": ["TEXT", "IMAGE"],
        **({"imageConfig": image_config} if image_config else {}),
    }
    response = gemini(client, model, prompt(**config))
    assert response.status_code == 200, response.text
    body = response.json()
    candidate = body["candidates"][0]
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    real = [p for p in candidate["content"]["parts"] if not p.get("thought")]
    assert "text" in real[0] and "inlineData" in real[1]
    assert real[1]["inlineData"]["mimeType"] == "image/png"
    [image] = result_images(response)
    assert image.size == size and image.format == "PNG"
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0)
    )
    assert body["modelVersion"] == model and body["responseId"]
    assert fake.violations == []
    assert fake.count("gemini", model) == 1


def test_gemini_3_pro_emits_thought_parts_first(client: httpx.Client, fake: FakeUpstream) -> None:
    response = gemini(client, "gemini-3-pro-image", prompt())
    parts = response.json()["candidates"][0]["content"]["parts"]
    assert [bool(p.get("thought")) for p in parts] == [True, True, False, False]
    assert "text" in parts[0] and "inlineData" in parts[1]
    assert image_of(parts[1]["inlineData"]["data"]).size != (1024, 1024)  # a draft: skip it
    assert image_of(parts[3]["inlineData"]["data"]).size == (1024, 1024)
    usage = response.json()["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 150
    assert {"modality": "IMAGE", "tokenCount": 1120} in usage["candidatesTokensDetails"]
    assert fake.violations == []


def test_gemini_edit_follows_input_ratio_and_counts_image_tokens(
    client: httpx.Client, fake: FakeUpstream
) -> None:
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "make it blue"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": b64(encode(1600, 900, "JPEG"))}},
                ],
            }
        ],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }
    response = gemini(client, "gemini-2.5-flash-image", body)
    assert response.status_code == 200, response.text
    parts = response.json()["candidates"][0]["content"]["parts"]
    assert len(parts) == 1  # IMAGE only: no text part
    assert image_of(parts[0]["inlineData"]["data"]).size == (1344, 768)
    usage = response.json()["usageMetadata"]
    assert usage["promptTokenCount"] == 3 + 258
    assert usage["candidatesTokenCount"] == 1290
    assert {"modality": "IMAGE", "tokenCount": 258} in usage["promptTokensDetails"]
    assert fake.violations == []


def test_gemini_accepts_key_query_and_snake_case(client: httpx.Client, fake: FakeUpstream) -> None:
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generation_config": {"image_config": {"aspect_ratio": "1:1"}},
    }
    response = client.post(
        "/v1beta/models/gemini-2.5-flash-image:generateContent", params={"key": "test-gemini-key"}, json=body
    )
    assert response.status_code == 200, response.text
    assert fake.violations == []


@pytest.mark.parametrize(
    "headers", [{"x-goog-api-key": "wrong"}, {}, {"Authorization": "Bearer test-gemini-key"}]
)
def test_gemini_bad_key_is_invalid_argument(
    client: httpx.Client, fake: FakeUpstream, headers: dict[str, str]
) -> None:
    response = gemini(client, "gemini-2.5-flash-image", prompt(), headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    assert len(fake.violations) == 1 and "API key" in fake.violations[0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({**prompt(), "tools": [{"googleSearch": {}}]}, "tools"),
        (prompt(imageConfig={"aspectRatio": "1:1", "quality": "hd"}), "quality"),
        (prompt(responseModalities=["PICTURE"]), "responseModalities"),
        (prompt(imageConfig={"aspectRatio": "7:4"}), "aspectRatio"),
        (prompt(imageConfig={"imageSize": "1K"}), "imageSize"),
        (prompt(thinkingConfig={"thinkingLevel": "HIGH"}), "thinkingLevel"),
        (prompt(imageConfig={"personGeneration": "ALLOW_ALL"}), "Vertex"),
        (
            {
                "contents": [
                    {"parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "aGk="}}]}
                ]
            },
            "exactly one",
        ),
        (
            {
                "contents": [
                    {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(encode(8, 8, "JPEG"))}}]}
                ]
            },
            "image/jpeg",
        ),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]}]},
            "base64",
        ),
    ],
)
def test_gemini_invalid_requests_are_violations(
    client: httpx.Client, fake: FakeUpstream, body: dict[str, Any], needle: str
) -> None:
    response = gemini(client, "gemini-2.5-flash-image", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fake.violations and any(needle in v for v in fake.violations), fake.violations
    assert fake.calls[-1].status == 400


def test_gemini_per_model_rules(client: httpx.Client, fake: FakeUpstream) -> None:
    assert gemini(client, "gemini-3-pro-image", prompt(imageConfig={"imageSize": "512"})).status_code == 400
    assert gemini(client, "gemini-3-pro-image", prompt(imageConfig={"aspectRatio": "8:1"})).status_code == 400
    assert gemini(client, "gemini-3-pro-image", prompt(imageConfig={"imageSize": "1k"})).status_code == 400
    ok = gemini(client, "gemini-3.1-flash-image", prompt(thinkingConfig={"thinkingLevel": "MINIMAL"}))
    assert ok.status_code == 200
    multi = gemini(client, "gemini-3.1-flash-image", prompt(candidateCount=2))
    assert multi.status_code == 400
    assert multi.json()["error"]["message"].startswith("Multiple candidates is not enabled")
    assert len(fake.violations) == 4


def test_gemini_models_shut_down_or_unknown(client: httpx.Client, fake: FakeUpstream) -> None:
    gone = gemini(client, "gemini-3-pro-image-preview", prompt())
    assert gone.status_code == 404 and gone.json()["error"]["status"] == "NOT_FOUND"
    assert fake.violations == []
    for model in ("gemini-9-image", "google/gemini-3-pro-image", "imagen-4.0-generate-001"):
        assert gemini(client, model, prompt()).status_code == 404
    assert len(fake.violations) == 3


def test_gemini_stream_sse(client: httpx.Client, fake: FakeUpstream) -> None:
    response = gemini(
        client,
        "gemini-3.1-flash-image",
        prompt(imageConfig={"aspectRatio": "9:16"}),
        method="streamGenerateContent",
        params={"alt": "sse"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\r\n\r\n") if e]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events]
    assert len(chunks) == 2
    assert chunks[0]["candidates"][0]["content"]["parts"][0]["text"]
    assert "finishReason" not in chunks[0]["candidates"][0]
    last = chunks[1]["candidates"][0]
    assert last["finishReason"] == "STOP" and "candidatesTokenCount" in chunks[1]["usageMetadata"]
    assert image_of(last["content"]["parts"][0]["inlineData"]["data"]).size == (768, 1376)
    assert fake.count("gemini_stream") == 1 and fake.count("gemini") == 0


def test_gemini_stream_without_alt_is_a_json_array(client: httpx.Client, fake: FakeUpstream) -> None:
    response = gemini(client, "gemini-2.5-flash-image", prompt(), method="streamGenerateContent")
    assert response.status_code == 200
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == 2
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert fake.violations == []


def test_google_genai_sdk_against_gemini_api_and_vertex(fake: FakeUpstream) -> None:
    genai = pytest.importorskip("google.genai")
    service_account = pytest.importorskip("google.oauth2.service_account")
    types = genai.types
    config = types.GenerateContentConfig(
        response_modalities=["IMAGE"],
        thinking_config=types.ThinkingConfig(thinking_level="MINIMAL"),
        image_config=types.ImageConfig(aspect_ratio="4:1", image_size="512"),
    )
    api = genai.Client(
        api_key="test-gemini-key", http_options=types.HttpOptions(base_url=fake.gemini_base_url)
    )
    response = api.models.generate_content(model="gemini-3.1-flash-image", contents="a dog", config=config)
    [part] = response.candidates[0].content.parts
    assert image_of(part.inline_data.data).size == (1024, 256)
    info = fake.service_account_info("proj-v")
    credentials = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM])
    vertex = genai.Client(
        vertexai=True,
        project="proj-v",
        location="global",
        credentials=credentials,
        http_options=types.HttpOptions(base_url=fake.vertex_base_url),
    )
    config = types.GenerateContentConfig(
        image_config=types.ImageConfig(
            aspect_ratio="3:2",
            image_size="2K",
            output_mime_type="image/jpeg",
            person_generation="ALLOW_ADULT",
        )
    )
    response = vertex.models.generate_content(model="gemini-3-pro-image", contents="a dog", config=config)
    [image] = [p for p in response.candidates[0].content.parts if p.inline_data and not p.thought]
    assert image.inline_data.mime_type == "image/jpeg"
    assert image_of(image.inline_data.data).size == (2528, 1696)
    chunks = list(vertex.models.generate_content_stream(model="gemini-2.5-flash-image", contents="x"))
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert [c.endpoint for c in fake.calls] == ["gemini", "token", "vertex_gemini", "vertex_gemini_stream"]
    assert fake.violations == []


# --- Imagen :predict -----------------------------------------------------------------------------


def predict(
    client: httpx.Client,
    model: str,
    parameters: dict[str, Any],
    vertex_path: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"instances": [{"prompt": "Robot holding a red skateboard"}], "parameters": parameters}
    path = vertex_path or f"/v1beta/models/{model}:predict"
    return client.post(path, json=body, headers=GKEY if headers is None else headers)


@pytest.mark.parametrize(
    ("model", "parameters", "count", "size", "fmt"),
    [
        ("imagen-4.0-generate-001", {"sampleCount": 2, "aspectRatio": "16:9"}, 2, (1408, 768), "PNG"),
        (
            "imagen-4.0-fast-generate-001",
            {
                "sampleCount": 1,
                "aspectRatio": "3:4",
                "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 75},
            },
            1,
            (896, 1280),
            "JPEG",
        ),
        (
            "imagen-4.0-ultra-generate-001",
            {"sampleCount": 1, "sampleImageSize": "2K"},
            1,
            (2048, 2048),
            "PNG",
        ),
    ],
)
def test_imagen_predict(
    client: httpx.Client,
    fake: FakeUpstream,
    model: str,
    parameters: dict[str, Any],
    count: int,
    size: tuple[int, int],
    fmt: str,
) -> None:
    response = predict(client, model, parameters)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == count
    for prediction in predictions:
        image = image_of(prediction["bytesBase64Encoded"])
        assert image.size == size and image.format == fmt
        assert prediction["mimeType"] == f"image/{fmt.lower()}"
    assert fake.violations == [] and fake.count("imagen", model) == 1


@pytest.mark.parametrize(
    ("model", "parameters", "needle"),
    [
        ("imagen-4.0-ultra-generate-001", {"sampleCount": 2}, "sampleCount"),
        ("imagen-4.0-generate-001", {"sampleCount": 5}, "sampleCount"),
        ("imagen-4.0-fast-generate-001", {"sampleImageSize": "2K"}, "sampleImageSize"),
        ("imagen-4.0-generate-001", {"aspectRatio": "2:3"}, "aspectRatio"),
        ("imagen-4.0-generate-001", {"negativePrompt": "blur"}, "Vertex only"),
        ("imagen-4.0-generate-001", {"personGeneration": "allow_all"}, "allow_all"),
        ("imagen-4.0-generate-001", {"numberOfImages": 1}, "numberOfImages"),
    ],
)
def test_imagen_violations(
    client: httpx.Client, fake: FakeUpstream, model: str, parameters: dict[str, Any], needle: str
) -> None:
    response = predict(client, model, parameters)
    assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert any(needle in v for v in fake.violations), fake.violations


# --- OpenAI Images API ---------------------------------------------------------------------------


def test_openai_generations(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post(
        "/v1/images/generations",
        headers=OKEY,
        json={
            "model": "gpt-image-1.5",
            "prompt": "A white siamese cat",
            "n": 2,
            "size": "1536x1024",
            "quality": "medium",
            "output_format": "png",
            "moderation": "low",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data", "background", "output_format", "size", "quality", "usage"}
    assert len(body["data"]) == 2 and {image_of(d["b64_json"]).size for d in body["data"]} == {(1536, 1024)}
    assert (body["size"], body["quality"], body["background"], body["output_format"]) == (
        "1536x1024",
        "medium",
        "opaque",
        "png",
    )
    usage = body["usage"]
    assert usage["output_tokens"] == 2 * 1568 == usage["output_tokens_details"]["image_tokens"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert set(usage["input_tokens_details"]) == {"text_tokens", "image_tokens"}
    assert fake.violations == [] and fake.count("openai_generations", "gpt-image-1.5") == 1


def test_openai_generations_gpt_image_2_custom_size_jpeg(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post(
        "/v1/images/generations",
        headers=OKEY,
        json={
            "model": "gpt-image-2",
            "prompt": "x",
            "size": "1920x1088",
            "output_format": "jpeg",
            "output_compression": 60,
            "quality": "low",
        },
    )
    assert response.status_code == 200, response.text
    image = image_of(response.json()["data"][0]["b64_json"])
    assert image.size == (1920, 1088) and image.format == "JPEG"
    assert fake.violations == []


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (
            {"model": "gpt-image-1.5", "prompt": "x", "aspect_ratio": "16:9"},
            "unknown_parameter",
            "aspect_ratio",
        ),
        ({"model": "gpt-image-1.5"}, "missing_required_parameter", "prompt"),
        ({"model": "gpt-image-1.5", "prompt": "x", "n": 11}, "integer_above_max_value", "n"),
        ({"model": "gpt-image-1.5", "prompt": "x", "size": "2048x2048"}, "invalid_value", "size"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}, "invalid_value", "size"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "4000x1600"}, "invalid_value", "size"),
        ({"model": "gpt-image-2", "prompt": "x", "quality": "xhigh"}, "invalid_value", "quality"),
        ({"model": "gpt-image-1.5", "prompt": "x", "quality": "hd"}, "invalid_value", "quality"),
        (
            {"model": "gpt-image-1.5", "prompt": "x", "response_format": "url"},
            "invalid_value",
            "response_format",
        ),
        (
            {"model": "gpt-image-1.5", "prompt": "x", "output_compression": 50},
            "invalid_value",
            "output_compression",
        ),
        (
            {"model": "gpt-image-1.5", "prompt": "x", "background": "transparent", "output_format": "jpeg"},
            "invalid_value",
            "background",
        ),
    ],
)
def test_openai_generations_violations(
    client: httpx.Client, fake: FakeUpstream, body: dict[str, Any], code: str, needle: str
) -> None:
    response = client.post("/v1/images/generations", headers=OKEY, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert any(needle in v for v in fake.violations), fake.violations


def test_openai_generations_accepted_variants(client: httpx.Client, fake: FakeUpstream) -> None:
    for body in (
        {"model": "gpt-image-2.5-flare", "prompt": "x", "quality": "xhigh", "size": "1024x1536"},
        {"model": "gpt-image-1.5", "prompt": "x", "output_compression": 100, "response_format": "b64_json"},
        {"model": "gpt-image-1-mini", "prompt": "x", "background": "transparent", "output_format": "webp"},
    ):
        response = client.post("/v1/images/generations", headers=OKEY, json=body)
        assert response.status_code == 200, response.text
    image = image_of(response.json()["data"][0]["b64_json"])
    assert image.format == "WEBP" and image.mode == "RGBA"
    assert fake.violations == []


def test_openai_generations_stream(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post(
        "/v1/images/generations",
        headers=OKEY,
        json={"model": "gpt-image-1.5", "prompt": "x", "stream": True, "partial_images": 2},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    events = [e.split("\n") for e in response.text.split("\n\n") if e]
    types = [e[0].removeprefix("event: ") for e in events]
    assert types == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    completed = json.loads(events[-1][1].removeprefix("data: "))
    assert completed["type"] == types[-1] and "usage" in completed
    assert image_of(completed["b64_json"]).size == (1024, 1024)
    assert fake.violations == []


def test_openai_models_and_key(client: httpx.Client, fake: FakeUpstream) -> None:
    retired = client.post("/v1/images/generations", headers=OKEY, json={"model": "dall-e-3", "prompt": "x"})
    assert retired.status_code == 404 and retired.json()["error"]["code"] == "model_not_found"
    assert fake.violations == []
    unknown = client.post(
        "/v1/images/generations", headers=OKEY, json={"model": "gpt-image-9", "prompt": "x"}
    )
    assert unknown.status_code == 404 and len(fake.violations) == 1
    bad_key = client.post(
        "/v1/images/generations",
        headers={"Authorization": "Bearer nope"},
        json={"model": "gpt-image-1.5", "prompt": "x"},
    )
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "invalid_api_key"
    assert len(fake.violations) == 2


def edit_files(mask_size: tuple[int, int] = (64, 48)) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("image[]", ("a.png", encode(64, 48), "image/png")),
        ("image[]", ("b.jpg", encode(32, 32, "JPEG"), "image/jpeg")),
        ("mask", ("mask.png", encode(*mask_size, "PNG", "RGBA"), "image/png")),
    ]


def test_openai_edits_multipart(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post(
        "/v1/images/edits",
        headers=OKEY,
        files=edit_files(),
        data={
            "model": "gpt-image-1.5",
            "prompt": "Add a hat",
            "n": "1",
            "input_fidelity": "high",
            "quality": "high",
            "size": "1024x1024",
        },
    )
    assert response.status_code == 200, response.text
    assert image_of(response.json()["data"][0]["b64_json"]).size == (1024, 1024)
    assert response.json()["usage"]["input_tokens_details"]["image_tokens"] > 0
    call = fake.calls[-1]
    assert call.endpoint == "openai_edits" and call.model == "gpt-image-1.5" and call.json is None
    assert call.form is not None and call.form["prompt"] == ["Add a hat"]
    assert call.files is not None
    assert [(f[0], f[1]) for f in call.files["image[]"]] == [("a.png", "image/png"), ("b.jpg", "image/jpeg")]
    assert call.files["image[]"][0][2] == encode(64, 48)
    assert call.files["mask"][0][0] == "mask.png"
    assert fake.violations == []


@pytest.mark.parametrize(
    ("files", "data", "needle"),
    [
        (edit_files(mask_size=(32, 32)), {}, "mask size"),
        ([*edit_files(), ("file", ("c.png", encode(8, 8), "image/png"))], {}, "unknown file part"),
        (edit_files(), {"input_fidelity": "high", "model": "gpt-image-2"}, "input_fidelity"),
        (edit_files(), {"input_fidelity": "high", "model": "gpt-image-1-mini"}, "input_fidelity"),
        (edit_files(), {"aspect_ratio": "1:1"}, "aspect_ratio"),
        ([("image", ("a.gif", encode(8, 8, "GIF"), "image/gif"))], {}, "png/webp/jpeg"),
    ],
)
def test_openai_edits_violations(
    client: httpx.Client, fake: FakeUpstream, files: Any, data: dict[str, str], needle: str
) -> None:
    form = {"model": "gpt-image-1.5", "prompt": "edit", **data}
    response = client.post("/v1/images/edits", headers=OKEY, files=files, data=form)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert any(needle in v for v in fake.violations), fake.violations


def test_openai_edits_json(client: httpx.Client, fake: FakeUpstream) -> None:
    url = "data:image/png;base64," + b64(encode(30, 20))
    body = {
        "model": "gpt-image-1.5",
        "prompt": "watercolor",
        "images": [{"image_url": url}],
        "mask": {"image_url": "data:image/png;base64," + b64(encode(30, 20, "PNG", "RGBA"))},
    }
    response = client.post("/v1/images/edits", headers=OKEY, json=body)
    assert response.status_code == 200, response.text
    assert image_of(response.json()["data"][0]["b64_json"]).size == (1536, 1024)  # follows a landscape input
    body["images"] = [{"image_url": "data:image/jpeg;base64," + b64(encode(30, 20))}]
    assert client.post("/v1/images/edits", headers=OKEY, json=body).status_code == 400
    assert len(fake.violations) == 1 and "image/png" in fake.violations[0]


def test_openai_sdk_round_trip(fake: FakeUpstream) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(
        api_key="test-openai-key",
        base_url=fake.openai_base_url,
        max_retries=0,
        http_client=httpx.Client(transport=fake.transport()),
    )
    generated = sdk.images.generate(model="gpt-image-2", prompt="a cat", size="1024x1536", n=1)
    assert image_of(generated.data[0].b64_json).size == (1024, 1536)
    edited = sdk.images.edit(
        model="gpt-image-1.5",
        prompt="edit",
        input_fidelity="low",
        image=[("a.png", encode(64, 48), "image/png"), ("b.png", encode(64, 48), "image/png")],
        mask=("m.png", encode(64, 48, "PNG", "RGBA"), "image/png"),
    )
    assert edited.data and fake.calls[-1].files and len(fake.calls[-1].files["image[]"]) == 2
    assert fake.violations == []


# --- chat upstream --------------------------------------------------------------------------------


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "google/gemini-3-pro-image",
        "modalities": ["image", "text"],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "A matte black device"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(encode(8, 8))}},
                ],
            }
        ],
        **extra,
    }


def test_chat_completion_with_image(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post(
        "/chat/v1/chat/completions", headers=CKEY, json=chat_body(image_config={"aspect_ratio": "16:9"})
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "google/gemini-3-pro-image"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)
    [item] = message["images"]
    assert item["type"] == "image_url" and item["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_of(item["image_url"]["url"].split(",", 1)[1]).size == (1376, 768)
    usage = body["usage"]
    assert usage["completion_tokens_details"]["image_tokens"] == 1120
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert fake.violations == [] and fake.count("chat", "google/gemini-3-pro-image") == 1


def test_chat_image_only_default_size(client: httpx.Client, fake: FakeUpstream) -> None:
    body = {"model": "any", "modalities": ["image"], "messages": [{"role": "user", "content": "a fox"}]}
    message = client.post("/chat/v1/chat/completions", headers=CKEY, json=body).json()["choices"][0][
        "message"
    ]
    assert message["content"] is None
    assert image_of(message["images"][0]["image_url"]["url"].split(",", 1)[1]).size == (1024, 1024)
    assert fake.violations == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (chat_body(stream=True), "stream"),
        ({**chat_body(), "modalities": ["text"]}, "modalities"),
        ({k: v for k, v in chat_body().items() if k != "modalities"}, "modalities"),
        (chat_body(image_config={"aspect_ratio": "7:4"}), "aspect_ratio"),
        (chat_body(top_k=3), "top_k"),
        (chat_body(messages=[{"role": "user", "content": [{"type": "image", "url": "x"}]}]), "messages"),
    ],
)
def test_chat_violations(client: httpx.Client, fake: FakeUpstream, body: dict[str, Any], needle: str) -> None:
    response = client.post("/chat/v1/chat/completions", headers=CKEY, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert any(needle in v for v in fake.violations), fake.violations


def test_chat_bad_key(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post("/chat/v1/chat/completions", headers=OKEY, json=chat_body())
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert len(fake.violations) == 1


# --- OAuth token endpoint and Vertex -------------------------------------------------------------


def vertex_path(project: str, model: str, method: str = "generateContent") -> str:
    return f"/vertex/v1/projects/{project}/locations/global/publishers/google/models/{model}:{method}"


def get_token(client: httpx.Client, assertion: str) -> httpx.Response:
    return client.post(
        "/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    )


def test_google_auth_library_gets_a_token_that_vertex_accepts(fake: FakeUpstream) -> None:
    service_account = pytest.importorskip("google.oauth2.service_account")
    requests_transport = pytest.importorskip("google.auth.transport.requests")
    info = fake.service_account_info("proj-1")
    assert info["type"] == "service_account" and info["token_uri"] == fake.token_uri
    credentials = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM])
    credentials.refresh(requests_transport.Request())
    assert credentials.token.startswith("ya29.") and fake.count("token") == 1
    with httpx.Client(base_url=fake.base_url, timeout=60) as http:
        ok = http.post(
            vertex_path("proj-1", "gemini-3-pro-image"),
            json=prompt(),
            headers={"Authorization": f"Bearer {credentials.token}"},
        )
        assert ok.status_code == 200, ok.text
        assert "createTime" in ok.json() and len(result_images(ok)) == 1
        other = http.post(
            vertex_path("other-project", "gemini-3-pro-image"),
            json=prompt(),
            headers={"Authorization": f"Bearer {credentials.token}"},
        )
        assert other.status_code == 403
    assert fake.count("vertex_gemini", "gemini-3-pro-image") == 2
    assert len(fake.violations) == 1 and "project" in fake.violations[0]


def test_vertex_token_lifecycle(client: httpx.Client, fake: FakeUpstream) -> None:
    info = fake.service_account_info()
    issued = get_token(client, assertion_for(info))
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert issued.json()["expires_in"] == 3600 and issued.json()["token_type"] == "Bearer"
    path = vertex_path("test-project", "gemini-3.1-flash-image")
    body = prompt(imageConfig={"aspectRatio": "1:1", "imageOutputOptions": {"mimeType": "image/jpeg"}})
    ok = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text
    assert result_images(ok)[0].format == "JPEG"
    assert fake.violations == []
    forged = client.post(path, json=body, headers={"Authorization": "Bearer ya29.forged"})
    assert forged.status_code == 401 and forged.json()["error"]["status"] == "UNAUTHENTICATED"
    assert len(fake.violations) == 1
    fake.expire_tokens()
    expired = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401 and len(fake.violations) == 1  # a refresh trigger, not a bug
    fresh = get_token(client, assertion_for(info)).json()["access_token"]
    no_role = {"contents": [{"parts": [{"text": "x"}]}]}
    missing_role = client.post(path, json=no_role, headers={"Authorization": f"Bearer {fresh}"})
    assert missing_role.status_code == 400 and "role" in fake.violations[-1]


def test_vertex_imagen_accepts_vertex_only_parameters(client: httpx.Client, fake: FakeUpstream) -> None:
    info = fake.service_account_info("p")
    token = get_token(client, assertion_for(info)).json()["access_token"]
    response = predict(
        client,
        "imagen-4.0-generate-001",
        {
            "sampleCount": 1,
            "negativePrompt": "blur",
            "seed": 3,
            "addWatermark": False,
            "personGeneration": "allow_all",
        },
        vertex_path=vertex_path("p", "imagen-4.0-generate-001", "predict"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert fake.violations == [] and fake.count("vertex_imagen") == 1


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"aud": "https://example.com/token"}, "aud"),
        ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "scope"),
        ({"exp": 1000, "iat": 0}, "expired"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "iss"),
    ],
)
def test_token_endpoint_refuses_bad_assertions(
    client: httpx.Client, fake: FakeUpstream, change: dict[str, Any], needle: str
) -> None:
    info = fake.service_account_info()
    response = get_token(client, assertion_for(info, **change))
    assert response.status_code == 400 and response.json()["error"] in ("invalid_grant", "invalid_scope")
    assert any(needle in v for v in fake.violations), fake.violations


def test_token_endpoint_checks_the_signature(client: httpx.Client, fake: FakeUpstream) -> None:
    mine, other = fake.service_account_info(), FakeUpstream().service_account_info()
    impostor = {
        **other,
        "client_email": mine["client_email"],
        "private_key_id": mine["private_key_id"],
        "token_uri": mine["token_uri"],
    }
    response = get_token(client, assertion_for(impostor))
    assert response.status_code == 400 and "Signature" in response.json()["error_description"]
    assert any("signature" in v for v in fake.violations)


# --- faults ---------------------------------------------------------------------------------------


def test_status_fault_uses_provider_shape_and_is_consumed(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.add_fault("gemini", "status", status=429, times=2, headers={"Retry-After": "1"})
    fake.add_fault("openai_generations", "status", status=503, headers={"retry-after-ms": "1500"})
    for _ in range(2):
        limited = gemini(client, "gemini-2.5-flash-image", prompt())
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert gemini(client, "gemini-2.5-flash-image", prompt()).status_code == 200
    busy = client.post("/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x"})
    assert busy.status_code == 503 and busy.headers["retry-after-ms"] == "1500"
    assert set(busy.json()["error"]) == {"message", "type", "param", "code"}
    assert fake.faults_pending() == 0 and fake.violations == []
    assert [c.status for c in fake.calls] == [429, 429, 200, 503]


def test_refused_request_does_not_consume_a_fault(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.add_fault("openai_generations", "status", status=500)
    bad = client.post(
        "/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x", "k": 1}
    )
    assert bad.status_code == 400 and fake.faults_pending() == 1
    ok = client.post("/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x"})
    assert ok.status_code == 500 and fake.faults_pending() == 0


def test_status_fault_custom_body_and_matching(client: httpx.Client, fake: FakeUpstream) -> None:
    quota = {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}],
        }
    }
    fake.add_fault(
        "gemini", "status", status=429, body=quota, model="gemini-3-pro-image", prompt_contains="banana"
    )
    assert gemini(client, "gemini-2.5-flash-image", prompt("banana")).status_code == 200
    assert gemini(client, "gemini-3-pro-image", prompt("apple")).status_code == 200
    hit = gemini(client, "gemini-3-pro-image", prompt("a banana split"))
    assert hit.status_code == 429 and hit.json() == quota
    assert fake.faults_pending() == 0


def test_hang_fault_times_out_the_client(fake: FakeUpstream) -> None:
    fake.add_fault("gemini", "hang", delay_s=1.5)
    with httpx.Client(base_url=fake.base_url, timeout=0.3) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            gemini(http, "gemini-2.5-flash-image", prompt())
        assert time.monotonic() - started < 1.4
        assert gemini(http, "gemini-2.5-flash-image", prompt()).status_code == 200
    assert fake.count("gemini") == 2


def test_trickle_fault_sends_the_answer_in_pieces_each_inside_the_read_timeout(fake: FakeUpstream) -> None:
    fake.add_fault("openai_generations", "trickle", delay_s=0.02)
    with httpx.Client(base_url=fake.base_url, timeout=0.3) as http:
        started = time.monotonic()
        with http.stream("POST", "/v1/images/generations", headers=OKEY,
                         json={"model": "gpt-image-1.5", "prompt": "x"}) as response:
            pieces = [chunk for chunk in response.iter_raw() if chunk]
        took = time.monotonic() - started
    assert response.status_code == 200 and response.headers["transfer-encoding"] == "chunked"
    assert len(pieces) >= TRICKLE_PIECES // 2 and took >= (TRICKLE_PIECES - 1) * 0.02  # 2 s, reads of 0.02 s
    assert json.loads(b"".join(pieces))["data"][0]["b64_json"]
    assert fake.faults_pending() == 0 and fake.violations == []


def test_hang_fault_in_mock_transport_sleeps(fake: FakeUpstream) -> None:
    fake.add_fault("openai_generations", "hang", delay_s=0.3)
    with httpx.Client(base_url=fake.base_url, transport=fake.transport()) as http:
        started = time.monotonic()
        response = http.post(
            "/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x"}
        )
        assert response.status_code == 200 and time.monotonic() - started >= 0.3

    async def cancelled() -> None:
        fake.add_fault("openai_generations", "hang", delay_s=5)
        async with httpx.AsyncClient(base_url=fake.base_url, transport=fake.transport()) as http:
            with anyio.move_on_after(0.2) as scope:
                await http.post(
                    "/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x"}
                )
            assert scope.cancelled_caught

    started = time.monotonic()
    anyio.run(cancelled)
    assert time.monotonic() - started < 2


def test_gemini_safety_faults(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.add_fault("gemini", "safety_prompt")
    fake.add_fault("gemini", "safety_finish")
    blocked = gemini(client, "gemini-3-pro-image", prompt()).json()
    assert "candidates" not in blocked and blocked["promptFeedback"]["blockReason"] == "SAFETY"
    assert blocked["promptFeedback"]["safetyRatings"]
    finished = gemini(client, "gemini-3-pro-image", prompt()).json()
    candidate = finished["candidates"][0]
    assert candidate["finishReason"] == "IMAGE_SAFETY"
    assert not [p for p in candidate["content"]["parts"] if "inlineData" in p and not p.get("thought")]
    assert gemini(client, "gemini-3-pro-image", prompt()).json()["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("endpoint", ["gemini", "imagen", "openai_generations", "chat", "gemini_stream"])
def test_payload_faults(client: httpx.Client, fake: FakeUpstream, endpoint: str) -> None:
    def call() -> httpx.Response:
        if endpoint == "gemini":
            return gemini(client, "gemini-2.5-flash-image", prompt())
        if endpoint == "gemini_stream":
            return gemini(
                client,
                "gemini-2.5-flash-image",
                prompt(),
                method="streamGenerateContent",
                params={"alt": "sse"},
            )
        if endpoint == "imagen":
            return predict(client, "imagen-4.0-fast-generate-001", {"sampleCount": 1})
        if endpoint == "chat":
            return client.post("/chat/v1/chat/completions", headers=CKEY, json=chat_body())
        return client.post(
            "/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x"}
        )

    def payloads(response: httpx.Response) -> list[tuple[str | None, str]]:
        """(declared mime, base64) of every result image."""
        if endpoint == "gemini_stream":
            chunks = [json.loads(e.removeprefix("data: ")) for e in response.text.split("\r\n\r\n") if e]
            parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
            return [
                (p["inlineData"]["mimeType"], p["inlineData"]["data"]) for p in parts if "inlineData" in p
            ]
        body = response.json()
        if endpoint == "gemini":
            parts = body["candidates"][0]["content"]["parts"]
            return [
                (p["inlineData"]["mimeType"], p["inlineData"]["data"]) for p in parts if "inlineData" in p
            ]
        if endpoint == "imagen":
            return [(p["mimeType"], p["bytesBase64Encoded"]) for p in body["predictions"]]
        if endpoint == "chat":
            images = body["choices"][0]["message"].get("images", [])
            return [tuple(i["image_url"]["url"][5:].split(";base64,")) for i in images]  # type: ignore[misc]
        return [(None, d["b64_json"]) for d in body["data"]]

    for kind in ("bad_json", "no_image", "bad_base64", "wrong_mime"):
        fake.add_fault(endpoint, kind)
    truncated = call()
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        payloads(truncated)
    assert payloads(call()) == []
    [(_, bad)] = payloads(call())
    assert bad == "!!!not base64!!!"
    [(mime, wrong)] = payloads(call())
    assert mime in (None, "image/png")
    raw = base64.b64decode(wrong)
    assert not raw.startswith(b"\x89PNG")
    [(_, good)] = payloads(call())
    assert image_of(good).format == "PNG"
    assert fake.faults_pending() == 0 and fake.violations == []


@pytest.mark.parametrize("endpoint", ["openai_generations", "chat"])
def test_moderation_fault(client: httpx.Client, fake: FakeUpstream, endpoint: str) -> None:
    fake.add_fault(endpoint, "moderation")
    path, headers, body = (
        ("/v1/images/generations", OKEY, {"model": "gpt-image-2", "prompt": "x"})
        if endpoint == "openai_generations"
        else ("/chat/v1/chat/completions", CKEY, chat_body())
    )
    refused = client.post(path, headers=headers, json=body)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": {
            "message": "Your request was rejected by the safety system. safety_violations=[sexual].",
            "type": "image_generation_user_error",
            "param": None,
            "code": "moderation_blocked",
        }
    }
    assert client.post(path, headers=headers, json=body).status_code == 200


def test_token_fault(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.add_fault("token", "status", status=500)
    info = fake.service_account_info()
    assert get_token(client, assertion_for(info)).status_code == 500
    assert get_token(client, assertion_for(info)).status_code == 200


def test_add_fault_rejects_nonsense(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError):
        fake.add_fault("gemeni", "status", status=500)
    with pytest.raises(ValueError):
        fake.add_fault("imagen", "moderation")
    with pytest.raises(ValueError):
        fake.add_fault("gemini", "status")


# --- bookkeeping ----------------------------------------------------------------------------------


def test_counts_calls_and_reset(client: httpx.Client, fake: FakeUpstream) -> None:
    gemini(client, "gemini-2.5-flash-image", prompt())
    gemini(client, "gemini-3.1-flash-image", prompt())
    gemini(client, "gemini-3.1-flash-image", prompt())
    client.post("/v1/images/generations", headers=OKEY, json={"model": "gpt-image-1.5", "prompt": "x"})
    assert fake.count() == 4
    assert fake.count("gemini") == 3 and fake.count("gemini", "gemini-3.1-flash-image") == 2
    assert fake.count(model="gpt-image-1.5") == 1 and fake.count("imagen") == 0
    call = fake.calls[0]
    assert call.headers["x-goog-api-key"] == "test-gemini-key" and call.json == prompt()
    assert call.status == 200 and call.time <= fake.calls[-1].time
    client.post("/v1/nothing-here", json={})
    assert fake.calls[-1].endpoint == "unknown" and fake.calls[-1].status == 404 and fake.violations
    fake.add_fault("gemini", "no_image")
    fake.reset()
    assert fake.calls == [] and fake.violations == [] and fake.faults_pending() == 0


def test_reset_keeps_issued_tokens_unless_asked(client: httpx.Client, fake: FakeUpstream) -> None:
    token = get_token(client, assertion_for(fake.service_account_info())).json()["access_token"]
    path = vertex_path("test-project", "gemini-2.5-flash-image")
    fake.reset()
    assert client.post(path, json=prompt(), headers={"Authorization": f"Bearer {token}"}).status_code == 200
    fake.reset(forget_tokens=True)
    assert client.post(path, json=prompt(), headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert fake.violations == ["vertex_gemini: Vertex Bearer token was never issued"]


def test_urls(fake: FakeUpstream) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert fake.gemini_base_url == fake.base_url
    assert fake.openai_base_url == fake.base_url + "/v1"
    assert fake.chat_base_url == fake.base_url + "/chat/v1"
    assert fake.vertex_base_url == fake.base_url + "/vertex"
    assert fake.token_uri == fake.base_url + "/token"


def test_usage_fault_reports_more_usage_than_documented(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.add_fault("openai_generations", "usage", body={"output_tokens": 50_000})
    fake.add_fault("gemini", "usage", body={"candidatesTokenCount": 9_000, "thoughtsTokenCount": 8_000})
    body = {"model": "gpt-image-1.5", "prompt": "x"}
    inflated = client.post("/v1/images/generations", headers=OKEY, json=body).json()
    assert inflated["usage"]["output_tokens"] == 50_000 and image_of(inflated["data"][0]["b64_json"])
    assert inflated["usage"]["output_tokens_details"]["image_tokens"] == 1056  # the rest of the usage is kept
    assert client.post("/v1/images/generations", headers=OKEY, json=body).json()["usage"]["output_tokens"] == 1056
    usage = gemini(client, "gemini-3-pro-image", prompt()).json()["usageMetadata"]
    assert (usage["candidatesTokenCount"], usage["thoughtsTokenCount"]) == (9_000, 8_000)
    assert fake.faults_pending() == 0 and fake.violations == []
    with pytest.raises(ValueError):
        fake.add_fault("gemini", "usage")
