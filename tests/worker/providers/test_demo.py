"""The demo provider draws real images: the requested format and size, deterministic per
prompt and index, one per index of the call, and as slow as configured."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from core.errors import InvalidRequestError
from core.generation import AppliedParams, GenerationRequest, InputImage, ProviderImage
from tests.pngs import blank_png
from worker.providers.base import InputBytes, ProviderCall
from worker.providers.demo import DemoProvider

EDIT = GenerationRequest(prompt="edit", input_images=[InputImage(object_key="inputs/in.png", mime_type="image/png")])
"""An edit of one input image (the call's ``inputs`` carry its bytes)."""

PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def applied(**overrides: object) -> AppliedParams:
    fields: dict[str, object] = {
        "model": "demo", "provider": "demo", "upstream_model": "demo", "width": 320,
        "height": 200, "aspect_ratio": "8:5", "quality": "auto", "output_format": "png",
    }
    fields.update(overrides)
    return AppliedParams(**fields)  # type: ignore[arg-type]


def generate_one(
    provider: DemoProvider, request: GenerationRequest, params: AppliedParams, index: int
) -> ProviderImage:
    [image] = provider.generate(ProviderCall(request, params, [index]))
    return image


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize(("width", "height"), [(320, 200), (97, 211), (64, 64)])
def test_generates_the_requested_format_and_size(fmt: str, width: int, height: int) -> None:
    request = GenerationRequest(prompt="a small boat on a lake", n=2)
    result = generate_one(DemoProvider(), request, applied(output_format=fmt, width=width, height=height), 1)
    image = decode(result.data)
    assert image.format == PIL_FORMAT[fmt]
    assert image.size == (width, height)
    assert (result.width, result.height) == (width, height)
    assert result.mime_type == f"image/{fmt}"
    assert result.text == "a small boat on a lake (demo image 2 of 2)"
    assert result.usage.total_tokens == 0


def test_size_left_to_the_upstream_gives_1024_square() -> None:
    result = generate_one(DemoProvider(), GenerationRequest(prompt="x"), applied(width=None, height=None), 0)
    assert decode(result.data).size == (1024, 1024)
    assert (result.width, result.height) == (1024, 1024)


def test_one_image_per_index_of_the_call_in_order() -> None:
    request = GenerationRequest(prompt="three boats", n=3)
    provider = DemoProvider()
    images = provider.generate(ProviderCall(request, applied(width=64, height=48), [0, 1, 2]))
    assert [i.text for i in images] == [f"three boats (demo image {k} of 3)" for k in (1, 2, 3)]
    assert len({i.data for i in images}) == 3
    # each is the same picture a call for that index alone would give
    assert images[2].data == generate_one(provider, request, applied(width=64, height=48), 2).data


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background_has_alpha(fmt: str) -> None:
    result = generate_one(DemoProvider(), GenerationRequest(prompt="a logo"),
                          applied(output_format=fmt, background="transparent"), 0)
    image = decode(result.data)
    assert image.mode == "RGBA"
    alpha_min, _ = image.getchannel("A").getextrema()
    assert alpha_min == 0  # the background itself is fully transparent


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_opaque_background_has_no_transparent_pixel(fmt: str) -> None:
    result = generate_one(DemoProvider(), GenerationRequest(prompt="a logo"),
                          applied(output_format=fmt, background="opaque"), 0)
    image = decode(result.data).convert("RGBA")
    assert image.getchannel("A").getextrema() == (255, 255)


def test_same_prompt_and_index_give_identical_bytes() -> None:
    request = GenerationRequest(prompt="deterministic cat", n=3)
    first = generate_one(DemoProvider(), request, applied(), 2)
    second = generate_one(DemoProvider(), request, applied(), 2)
    assert first.data == second.data


def test_different_index_or_prompt_gives_different_bytes() -> None:
    provider = DemoProvider()
    request = GenerationRequest(prompt="deterministic cat", n=3)
    base = generate_one(provider, request, applied(), 0).data
    assert generate_one(provider, request, applied(), 1).data != base
    other = GenerationRequest(prompt="deterministic dog", n=3)
    assert generate_one(provider, other, applied(), 0).data != base


def test_jpeg_compression_changes_the_size() -> None:
    provider = DemoProvider()
    request = GenerationRequest(prompt="noise and circles")
    small = generate_one(provider, request, applied(output_format="jpeg", output_compression=5), 0)
    large = generate_one(provider, request, applied(output_format="jpeg", output_compression=95), 0)
    assert len(small.data) < len(large.data)


def test_latency_is_honoured() -> None:
    provider = DemoProvider(latency_s=0.2)
    started = time.monotonic()
    generate_one(provider, GenerationRequest(prompt="slow"), applied(width=64, height=64), 0)
    assert time.monotonic() - started >= 0.2


def test_an_input_image_past_the_pixel_limit_is_refused_before_it_is_decoded() -> None:
    provider = DemoProvider(max_input_pixels=1_000_000)
    call = ProviderCall(EDIT, applied(), [0],
                        inputs=[InputBytes(blank_png(2000, 1000), "image/png")])
    with pytest.raises(InvalidRequestError) as caught:
        provider.generate(call)
    assert caught.value.code == "image_too_large" and "2000x1000" in caught.value.message
    edited = provider.generate(ProviderCall(EDIT, applied(), [0],
                                            inputs=[InputBytes(blank_png(1000, 1000), "image/png")]))
    assert (edited[0].width, edited[0].height) == (320, 200)


def test_a_large_jpeg_input_is_scaled_to_the_output() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(buffer, format="JPEG")
    [image] = DemoProvider().generate(ProviderCall(EDIT, applied(), [0],
                                                   inputs=[InputBytes(buffer.getvalue(), "image/jpeg")]))
    assert (image.width, image.height) == (320, 200)
    corner = Image.open(io.BytesIO(image.data)).convert("RGB").getpixel((1, 1))
    assert all(abs(got - want) <= 8 for got, want in zip(corner, (10, 20, 30), strict=True))  # the input shows
