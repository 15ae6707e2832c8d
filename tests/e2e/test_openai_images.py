"""The OpenAI Images generations endpoint, driven by the official openai SDK, in both modes."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.harness import Stack

pytestmark = pytest.mark.integration


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def _decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def test_one_image_png_default(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"one-{stack.mode}"))
    result = client.images.generate(model="demo", prompt="a lighthouse at dusk")
    assert len(result.data) == 1
    image = _decode(result.data[0].b64_json or "")
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert result.data[0].revised_prompt and "lighthouse" in result.data[0].revised_prompt
    assert result.size == "1024x1024" and result.output_format == "png"
    assert result.usage is not None and result.usage.total_tokens == 0


def test_ten_images_in_one_call_with_format_and_size(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"ten-{stack.mode}"))
    raw = client.images.with_raw_response.generate(
        model="demo", prompt="ten foxes", n=10, size="640x384", output_format="webp",
        output_compression=70)
    result = raw.parse()
    assert len(result.data) == 10
    decoded = [_decode(d.b64_json or "") for d in result.data]
    assert {(i.format, i.size) for i in decoded} == {("WEBP", (640, 384))}
    # every image of the job is its own picture
    assert len({d.b64_json for d in result.data}) == 10
    assert raw.headers["x-imagegate-images"] == "10/10"
    assert raw.headers["x-imagegate-job-id"].startswith("job_")


def test_aspect_ratio_wins_over_size_and_jpeg(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"ratio-{stack.mode}"))
    result = client.images.generate(
        model="imagegate/demo", prompt="wide", size="1024x1024",
        output_format="jpeg", extra_body={"aspect_ratio": "16:9", "quality": "low"})
    image = _decode(result.data[0].b64_json or "")
    assert image.format == "JPEG"
    assert image.size == (512, 288)


def test_url_response_format_serves_a_signed_gateway_url(stack: Stack) -> None:
    key = stack.create_key(f"url-{stack.mode}")
    client = _client(stack, key)
    result = client.images.generate(model="demo", prompt="by url", response_format="url", n=2)
    urls = [d.url or "" for d in result.data]
    assert all(u.startswith(stack.base_url + "/v1/files/img_") for u in urls)
    assert all(d.b64_json is None for d in result.data)
    # a signed URL opens without credentials, like OpenAI's
    response = httpx.get(urls[0])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (1024, 1024)
    # a tampered signature is not enough, and neither is the bare path
    assert httpx.get(urls[0].replace("signature=", "signature=0")).status_code == 401
    bare = urls[0].split("?")[0]
    assert httpx.get(bare).status_code == 401
    assert httpx.get(bare, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_default_model_is_demo(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"default-{stack.mode}"))
    for model in (None, "auto"):
        kwargs = {} if model is None else {"model": model}
        result = client.images.generate(prompt="no model named", size="256x256", **kwargs)
        assert _decode(result.data[0].b64_json or "").size == (256, 256)


def test_models_list(stack: Stack) -> None:
    client = _client(stack, stack.create_key(f"models-{stack.mode}"))
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "demo-image" in ids
    demo = next(m for m in models.data if m.id == "demo-image")
    assert demo.owned_by == "imagegate" and demo.object == "model"
    assert client.models.retrieve("demo").id == "demo-image"


def test_health(stack: Stack) -> None:
    body = httpx.get(stack.base_url + "/health").json()
    assert body == {"status": "ok", "mode": stack.mode, "checks": {"database": "ok", "broker": "ok"}, "circuits": {}}
