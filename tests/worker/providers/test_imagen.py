"""The Imagen ``:predict`` adapter (https://ai.google.dev/gemini-api/docs/imagen), for deployments that route ids to
Imagen with the shipped ``core/catalogue/imagen.toml`` operator file: up to 4 images a call,
sampleCount / aspectRatio / sampleImageSize / outputOptions, RAI-filtered predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from core.errors import ContentPolicyError, UpstreamError, UpstreamOverloadedError
from core.generation import GenerationRequest
from core.planning import plan
from core.routing import Catalogue
from tests.worker.providers.canned import NO_SECRETS, b64, error_response, image_bytes, json_body, ok
from worker.providers.base import ProviderCall
from worker.providers.imagen import ImagenAdapter, build_body

BASE = "https://generativelanguage.test"
IMAGEN_FILE = Path(__file__).resolve().parents[3] / "core" / "catalogue" / "imagen.toml"
CATALOGUE = Catalogue.load(IMAGEN_FILE, configured={"demo", "gemini", "imagen", "vertex_imagen", "vertex_gemini"})
adapter = ImagenAdapter()


def make_call(model: str, indices: list[int], **fields: Any) -> ProviderCall:
    request = GenerationRequest(prompt="Robot holding a red skateboard", model=model, n=max(4, len(indices)),
                                **fields)
    return ProviderCall(request, plan(request, CATALOGUE.resolve(model), grids=CATALOGUE.grids), indices)


def test_the_imagen_file_routes_the_ids_to_imagen() -> None:
    resolved = CATALOGUE.resolve("imagen-4.0-generate-001")
    assert (resolved.spec.provider, resolved.alias) == ("imagen", None)
    assert [m.id for m in CATALOGUE.routes(resolved.spec)] == [
        "imagen-4.0-generate-001", "vertex/imagen-4.0-generate-001", "gemini-3.1-flash-image"]


def test_request_url_and_body() -> None:
    call = make_call("imagen-4.0-generate-001", [0, 1, 2, 3], aspect_ratio="16:9", quality="high")
    request = adapter.build_request(call, base_url=BASE, headers={"x-goog-api-key": "k"})
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/v1beta/models/imagen-4.0-generate-001:predict")
    assert request.headers["x-goog-api-key"] == "k"
    assert json_body(request) == {
        "instances": [{"prompt": "Robot holding a red skateboard"}],
        "parameters": {"sampleCount": 4, "aspectRatio": "16:9", "sampleImageSize": "2K"},
    }
    assert (call.applied.width, call.applied.height) == (2816, 1536)


def test_sample_count_is_the_images_of_this_call() -> None:
    call = make_call("imagen-4.0-generate-001", [4, 5], aspect_ratio="1:1")
    assert build_body(call)["parameters"] == {"sampleCount": 2, "aspectRatio": "1:1", "sampleImageSize": "1K"}


def test_fast_model_sends_no_image_size() -> None:
    call = make_call("imagen-4.0-fast-generate-001", [0], aspect_ratio="9:16")
    assert build_body(call)["parameters"] == {"sampleCount": 1, "aspectRatio": "9:16"}


@pytest.mark.parametrize(("compression", "options"), [(75, {"mimeType": "image/jpeg", "compressionQuality": 75}),
                                                      (None, {"mimeType": "image/jpeg"})])
def test_jpeg_output_options(compression: int | None, options: dict[str, Any]) -> None:
    call = make_call("imagen-4.0-generate-001", [0], aspect_ratio="1:1", output_format="jpeg",
                     output_compression=compression)
    assert build_body(call)["parameters"]["outputOptions"] == options


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_no_output_options_for_png_or_webp(fmt: str) -> None:
    call = make_call("imagen-4.0-generate-001", [0], output_format=fmt)
    assert call.applied.upstream_format == "png"
    assert "outputOptions" not in build_body(call)["parameters"]


def predictions(*items: dict[str, Any]) -> httpx.Response:
    return ok({"predictions": list(items)})


def prediction(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"bytesBase64Encoded": b64(data), "mimeType": mime}


def test_predictions_are_read() -> None:
    pictures = [image_bytes("png", 30, 20, (i, i, i)) for i in range(3)]
    images = adapter.parse_response(predictions(*(prediction(p) for p in pictures)),
                                    make_call("imagen-4.0-generate-001", [0, 1, 2]))
    assert [i.data for i in images] == pictures
    assert {(i.mime_type, i.width, i.height) for i in images} == {("image/png", 30, 20)}
    assert all(i.usage.total_tokens == 0 for i in images)


def test_predictions_beyond_the_call_count_are_dropped() -> None:
    pictures = [image_bytes("png", color=(i, 0, 0)) for i in range(4)]
    images = adapter.parse_response(predictions(*(prediction(p) for p in pictures)),
                                    make_call("imagen-4.0-generate-001", [0, 1]))
    assert [i.data for i in images] == pictures[:2]


def test_filtered_predictions_are_dropped_and_the_rest_returned() -> None:
    picture = image_bytes("jpeg")
    images = adapter.parse_response(
        predictions({"raiFilteredReason": "Filtered: person"}, prediction(picture, "image/jpeg")),
        make_call("imagen-4.0-generate-001", [0, 1]))
    assert [i.data for i in images] == [picture]
    assert images[0].mime_type == "image/jpeg"


def test_every_prediction_filtered_is_a_content_policy_error() -> None:
    with pytest.raises(ContentPolicyError) as info:
        adapter.parse_response(predictions({"raiFilteredReason": "Unsafe prompt."}),
                               make_call("imagen-4.0-generate-001", [0]))
    assert info.value.code == "moderation_blocked"
    assert "Unsafe prompt." in info.value.message


@pytest.mark.parametrize("body", [{"predictions": []}, {}, {"predictions": [{"mimeType": "image/png"}]}])
def test_no_prediction_is_retryable(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(ok(body), make_call("imagen-4.0-generate-001", [0]))
    assert (info.value.code, info.value.retryable) == ("no_images_generated", True)


@pytest.mark.parametrize("body", [b"nope", b'{"predictions": {"a": 1}}'])
def test_a_body_that_is_not_a_predict_response_is_retryable(body: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(ok(body), make_call("imagen-4.0-generate-001", [0]))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_response", True)


@pytest.mark.parametrize("item", [{"bytesBase64Encoded": "%%%", "mimeType": "image/png"},
                                  prediction(image_bytes("png"), "image/jpeg"),
                                  prediction(b"GIF89a-not-really")])
def test_a_broken_prediction_is_a_retryable_bad_image(item: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(predictions(item), make_call("imagen-4.0-generate-001", [0]))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_image", True)


def test_errors_are_google_errors() -> None:
    gone = error_response(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                          "message": "models/imagen-4.0-generate-001 is not found"}})
    error = adapter.parse_error(gone, retryable=False, redact=NO_SECRETS)
    assert isinstance(error, UpstreamError)
    assert (error.code, error.route_failed) == ("upstream_model_not_found", True)
    assert "Imagen API" in error.message
    busy = adapter.parse_error(error_response(503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "x"}}),
                               retryable=True, redact=NO_SECRETS)
    assert isinstance(busy, UpstreamOverloadedError)
