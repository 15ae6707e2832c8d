"""The Vertex AI adapters
(https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference): the
project/location/version URL shape, the Gemini body with its role and JPEG output options, Imagen
:predict on Vertex, and answers read as on the Gemini API. (VertexAuth, the OAuth token flow, is
covered with a token endpoint elsewhere.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import ContentPolicyError, UpstreamError
from core.generation import GenerationRequest
from core.planning import plan
from core.routing import Catalogue
from tests.worker.providers.canned import NO_SECRETS, b64, error_response, image_bytes, json_body, make_call, ok
from worker.providers.base import InputBytes, ProviderCall
from worker.providers.vertex import VertexGeminiAdapter, VertexImagenAdapter, vertex_model_url

GLOBAL = "https://aiplatform.googleapis.com"
gemini = VertexGeminiAdapter(project="my-project", location="global", version="v1")


@pytest.mark.parametrize(
    ("base", "location", "version", "url"),
    [
        (GLOBAL, "global", "v1",
         f"{GLOBAL}/v1/projects/p-1/locations/global/publishers/google/models/gemini-3-pro-image:generateContent"),
        ("https://us-central1-aiplatform.googleapis.com", "us-central1", "v1beta1",
         "https://us-central1-aiplatform.googleapis.com/v1beta1/projects/p-1/locations/us-central1/publishers/"
         "google/models/gemini-3-pro-image:generateContent"),
    ],
)
def test_url_shape(base: str, location: str, version: str, url: str) -> None:
    adapter = VertexGeminiAdapter(project="p-1", location=location, version=version)
    request = adapter.build_request(make_call("vertex/gemini-3-pro-image"), base_url=base,
                                    headers={"Authorization": "Bearer ya29.token"})
    assert (request.method, str(request.url)) == ("POST", url)
    assert request.headers["authorization"] == "Bearer ya29.token"
    assert "x-goog-api-key" not in request.headers


def test_vertex_model_url() -> None:
    assert vertex_model_url("https://h", version="v1", project="p", location="europe-west4", model="m",
                            method="predict") == "https://h/v1/projects/p/locations/europe-west4/publishers/google/models/m:predict"


def test_body_has_the_role_and_the_grid_config() -> None:
    call = make_call("vertex/gemini-3.1-flash-image", aspect_ratio="8:1", quality="high",
                     inputs=[InputBytes(image_bytes("png"), "image/png")])
    body = json_body(gemini.build_request(call, base_url=GLOBAL, headers={}))
    assert body["contents"][0]["role"] == "user"
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": b64(image_bytes("png"))}}
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"],
                                        "imageConfig": {"aspectRatio": "8:1", "imageSize": "2K"}}


@pytest.mark.parametrize(("compression", "options"), [(70, {"mimeType": "image/jpeg", "compressionQuality": 70}),
                                                      (None, {"mimeType": "image/jpeg"})])
def test_jpeg_is_asked_of_vertex_with_output_options(compression: int | None, options: dict[str, Any]) -> None:
    call = make_call("vertex/gemini-3-pro-image", aspect_ratio="1:1", output_format="jpeg",
                     output_compression=compression)
    body = json_body(gemini.build_request(call, base_url=GLOBAL, headers={}))
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K",
                                                       "imageOutputOptions": options}


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_png_and_webp_send_no_output_options(fmt: str) -> None:
    call = make_call("vertex/gemini-2.5-flash-image", aspect_ratio="1:1", output_format=fmt)
    body = json_body(gemini.build_request(call, base_url=GLOBAL, headers={}))
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}


def test_thinking_level_on_vertex_3_1() -> None:
    call = make_call("vertex/gemini-3.1-flash-image")
    resolved_call = ProviderCall(call.request, call.applied.model_copy(update={"thinking_level": "HIGH"}),
                                 call.indices)
    body = json_body(gemini.build_request(resolved_call, base_url=GLOBAL, headers={}))
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH"}


def test_answers_are_read_as_on_the_gemini_api() -> None:
    picture = image_bytes("jpeg", 30, 30)
    response = ok({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "draft", "thought": True}, {"inlineData": {"mimeType": "image/jpeg", "data": b64(picture)}}]},
        "finishReason": "STOP"}], "createTime": "2026-11-21T12:00:00Z",
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1120, "trafficType": "ON_DEMAND"}})
    [image] = gemini.parse_response(response, make_call("vertex/gemini-3-pro-image", output_format="jpeg"))
    assert (image.data, image.mime_type, image.text) == (picture, "image/jpeg", None)
    assert image.usage.output_tokens == 1120


def test_blocked_and_broken_answers() -> None:
    call = make_call("vertex/gemini-3-pro-image")
    with pytest.raises(ContentPolicyError):
        gemini.parse_response(ok({"promptFeedback": {"blockReason": "JAILBREAK"}}), call)
    with pytest.raises(UpstreamError) as info:
        gemini.parse_response(ok(b"{oops"), call)
    assert (info.value.code, info.value.retryable) == ("upstream_bad_response", True)
    assert "Vertex AI" in info.value.message


def test_errors_are_google_errors_labelled_vertex() -> None:
    body = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                      "status": "UNAUTHENTICATED"}}
    error = gemini.parse_error(error_response(401, body), retryable=False, redact=NO_SECRETS)
    assert isinstance(error, UpstreamError)
    assert (error.code, error.upstream_status, error.route_failed) == ("upstream_auth_failed", 401, True)
    assert "Vertex AI" in error.message


IMAGEN = Catalogue.load(Path(__file__).resolve().parents[3] / "core" / "catalogue" / "imagen.toml",
                        configured={"demo", "vertex_imagen"})


def test_imagen_on_vertex_predicts_at_the_vertex_url() -> None:
    adapter = VertexImagenAdapter(project="p-1", location="us-central1", version="v1")
    request_ = GenerationRequest(prompt="Robot", model="vertex/imagen-4.0-generate-001", n=3, aspect_ratio="4:3",
                                 output_format="jpeg", output_compression=60)
    applied = plan(request_, IMAGEN.resolve(request_.model), grids=IMAGEN.grids)
    call = ProviderCall(request_, applied, [0, 1, 2])
    request = adapter.build_request(call, base_url="https://us-central1-aiplatform.googleapis.com", headers={})
    assert str(request.url) == ("https://us-central1-aiplatform.googleapis.com/v1/projects/p-1/locations/us-central1/"
                                "publishers/google/models/imagen-4.0-generate-001:predict")
    assert json_body(request) == {"instances": [{"prompt": "Robot"}], "parameters": {
        "sampleCount": 3, "aspectRatio": "4:3", "sampleImageSize": "1K",
        "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 60}}}
    picture = image_bytes("jpeg")
    images = adapter.parse_response(ok({"predictions": [{"bytesBase64Encoded": b64(picture),
                                                         "mimeType": "image/jpeg"}]}), call)
    assert [i.data for i in images] == [picture]
    assert "Vertex AI Imagen" in adapter.parse_error(error_response(500, b""), retryable=False,
                                                     redact=NO_SECRETS).message
