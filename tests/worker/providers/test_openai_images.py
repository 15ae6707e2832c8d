"""The OpenAI Images adapter (https://platform.openai.com/docs/api-reference/images): generation
JSON per applied parameters, edits as multipart (``image[]`` repeated, ``mask``, scalar fields as
text parts), images and usage read back (usage shared out over the images). OpenAI error bodies
are tested in test_openai_errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from core.errors import UpstreamError
from core.generation import Part, Turn
from tests.worker.providers.canned import (
    NO_SECRETS,
    b64,
    error_response,
    image_bytes,
    json_body,
    make_call,
    multipart_parts,
    ok,
)
from worker.providers.base import InputBytes
from worker.providers.openai_images import OpenAIImagesAdapter, build_generation_body

BASE = "https://api.openai.test/v1"
adapter = OpenAIImagesAdapter()


# -- generations -----------------------------------------------------------------------------


def test_generation_request() -> None:
    call = make_call("gpt-image-2", indices=[0, 1, 2], size="1536x1024", quality="high")
    request = adapter.build_request(call, base_url=BASE, headers={"Authorization": "Bearer sk-test"})
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/images/generations")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json_body(request) == {"model": "gpt-image-2", "prompt": "a lighthouse at dusk", "n": 3,
                                  "size": "1536x1024", "quality": "high", "output_format": "png"}


@pytest.mark.parametrize(
    ("model", "fields", "expected"),
    [
        ("gpt-image-2", {}, {"size": "auto", "quality": "auto", "output_format": "png"}),
        ("gpt-image-2", {"aspect_ratio": "16:9", "quality": "hd"},
         {"size": "1536x864", "quality": "high", "output_format": "png"}),
        ("gpt-image-2", {"size": "3840x2160", "output_format": "webp", "output_compression": 80},
         {"size": "3840x2160", "quality": "auto", "output_format": "webp", "output_compression": 80}),
        ("gpt-image-2", {"output_format": "jpeg", "output_compression": 0},
         {"size": "auto", "quality": "auto", "output_format": "jpeg", "output_compression": 0}),
        ("gpt-image-2", {"output_format": "png", "output_compression": 80},
         {"size": "auto", "quality": "auto", "output_format": "png"}),
        ("gpt-image-2", {"background": "transparent", "output_format": "webp"},
         {"size": "auto", "quality": "auto", "output_format": "webp", "background": "transparent"}),
        ("gpt-image-2", {"background": "opaque"}, {"size": "auto", "quality": "auto", "output_format": "png"}),
        ("gpt-image-2", {"moderation": "low"}, {"size": "auto", "quality": "auto", "output_format": "png",
                                                "moderation": "low"}),
        ("gpt-image-2", {"moderation": "auto"}, {"size": "auto", "quality": "auto", "output_format": "png",
                                                 "moderation": "auto"}),
        ("gpt-image-2", {"moderation": "strict"}, {"size": "auto", "quality": "auto", "output_format": "png"}),
        ("gpt-image-1.5", {"size": "1792x1024", "quality": "standard"},
         {"size": "1536x1024", "quality": "medium", "output_format": "png"}),
        ("gpt-image-1-mini", {"aspect_ratio": "2:3", "quality": "low"},
         {"size": "1024x1536", "quality": "low", "output_format": "png"}),
        ("gpt-image-2.5-sunburst", {"quality": "xhigh", "aspect_ratio": "1:1"},
         {"size": "2048x2048", "quality": "xhigh", "output_format": "png"}),
        ("gpt-image-2", {"style": "vivid", "input_fidelity": "high"},
         {"size": "auto", "quality": "auto", "output_format": "png"}),
    ],
)
def test_generation_fields_follow_the_applied_parameters(
    model: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    call = make_call(model, **fields)
    assert build_generation_body(call) == {"model": call.applied.upstream_model, "prompt": "a lighthouse at dusk",
                                           "n": 1, **expected}


@pytest.mark.parametrize(("name", "upstream"), [("gpt-image-2-2026-04-21", "gpt-image-2-2026-04-21"),
                                                ("dall-e-3", "gpt-image-1.5"), ("gpt-image-1", "gpt-image-1.5"),
                                                ("openai/chatgpt-image-latest", "chatgpt-image-latest")])
def test_the_upstream_model_is_sent(name: str, upstream: str) -> None:
    assert build_generation_body(make_call(name))["model"] == upstream


# -- edits -----------------------------------------------------------------------------------


def test_edit_is_multipart_with_repeated_images_and_a_mask() -> None:
    first, second = image_bytes("png", 32, 32), image_bytes("jpeg", 32, 32, (1, 2, 3))
    mask = image_bytes("png", 32, 32, (0, 0, 0, 0), mode="RGBA")
    call = make_call("gpt-image-1.5", indices=[0, 1], prompt="Add a red hat", size="1024x1024", quality="high",
                     input_fidelity="high", output_format="jpeg", output_compression=70,
                     inputs=[InputBytes(first, "image/png"), InputBytes(second, "image/jpeg")],
                     mask=InputBytes(mask, "image/png"))
    request = adapter.build_request(call, base_url=BASE, headers={"Authorization": "Bearer sk-test"})

    assert (request.method, str(request.url)) == ("POST", f"{BASE}/images/edits")
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["authorization"] == "Bearer sk-test"
    parts = multipart_parts(request)
    files = [(name, filename, ctype, data) for name, filename, ctype, data in parts if filename]
    assert files == [
        ("image[]", "image-0.png", "image/png", first),
        ("image[]", "image-1.jpg", "image/jpeg", second),
        ("mask", "mask.png", "image/png", mask),
    ]
    fields = {name: data.decode() for name, filename, _, data in parts if not filename}
    assert fields == {"model": "gpt-image-1.5", "prompt": "Add a red hat", "n": "2", "size": "1024x1024",
                      "quality": "high", "output_format": "jpeg", "output_compression": "70",
                      "input_fidelity": "high"}
    assert "image" not in [name for name, *_ in parts]


def test_edit_without_a_mask_and_on_a_model_without_input_fidelity() -> None:
    picture = image_bytes("webp")
    call = make_call("gpt-image-2", prompt="Make it night", input_fidelity="high",
                     inputs=[InputBytes(picture, "image/webp")])
    parts = multipart_parts(adapter.build_request(call, base_url=BASE, headers={}))
    assert [(n, f, c) for n, f, c, _ in parts if f] == [("image[]", "image-0.webp", "image/webp")]
    names = [n for n, *_ in parts]
    assert "mask" not in names
    assert "input_fidelity" not in names  # gpt-image-2 takes no input_fidelity: it is omitted
    assert {n: d.decode() for n, f, _, d in parts if not f}["size"] == "auto"


def test_a_conversation_edits_its_last_picture() -> None:
    reference, earlier = image_bytes("png"), image_bytes("png", color=(9, 9, 9))
    call = make_call("gpt-image-2", prompt="now make it blue",
                     inputs=[InputBytes(reference, "image/png"), InputBytes(earlier, "image/png")],
                     history=[Turn(role="user", parts=[Part(text="a fox"), Part(image=0)]),
                              Turn(role="model", parts=[Part(image=1)])],
                     parts=[Part(text="now make it blue")])
    parts = multipart_parts(adapter.build_request(call, base_url=BASE, headers={}))
    assert [(n, d) for n, f, _, d in parts if f] == [("image[]", earlier)]  # the model's picture, not the reference
    assert {n: d.decode() for n, f, _, d in parts if not f}["prompt"] == "now make it blue"


# -- the response ----------------------------------------------------------------------------


def images_response(items: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return ok({"created": 1_790_000_000, "data": items, **extra})


def test_images_are_read_in_order_with_revised_prompts() -> None:
    pictures = [image_bytes("png", 40, 20, (i * 50, 0, 0)) for i in range(3)]
    items = [{"b64_json": b64(p), "revised_prompt": f"revised {i}"} for i, p in enumerate(pictures)]
    images = adapter.parse_response(images_response(items, output_format="png"),
                                    make_call("gpt-image-2", indices=[0, 1, 2]))
    assert [i.data for i in images] == pictures
    assert [i.text for i in images] == ["revised 0", "revised 1", "revised 2"]
    assert {(i.mime_type, i.width, i.height) for i in images} == {("image/png", 40, 20)}


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_the_declared_output_format_is_checked(fmt: str) -> None:
    picture = image_bytes(fmt)
    [image] = adapter.parse_response(images_response([{"b64_json": b64(picture)}], output_format=fmt),
                                     make_call("gpt-image-2", output_format=fmt))
    assert image.mime_type == f"image/{fmt}"


def test_without_output_format_the_applied_upstream_format_is_expected() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(images_response([{"b64_json": b64(image_bytes("png"))}]),
                               make_call("gpt-image-2", output_format="webp"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_image", True)


def test_usage_is_split_over_the_images_and_sums_to_the_total() -> None:
    usage = {"input_tokens": 50, "input_tokens_details": {"text_tokens": 41, "image_tokens": 9},
             "output_tokens": 3127, "output_tokens_details": {"text_tokens": 7, "image_tokens": 3120},
             "total_tokens": 3177}
    items = [{"b64_json": b64(image_bytes(color=(i, 0, 0)))} for i in range(3)]
    images = adapter.parse_response(images_response(items, usage=usage), make_call("gpt-image-2", indices=[0, 1, 2]))
    shares = [i.usage for i in images]
    totals = {name: sum(getattr(u, name) for u in shares) for name in shares[0].model_dump()}
    assert totals == {"input_tokens": 50, "input_text_tokens": 41, "input_image_tokens": 9,
                      "output_tokens": 3127, "output_text_tokens": 7, "output_image_tokens": 3120}
    assert sum(u.total_tokens for u in shares) == 3177
    for name in totals:  # shared evenly, in whole tokens
        values = [getattr(u, name) for u in shares]
        assert max(values) - min(values) <= 1


def test_usage_without_details_counts_output_as_image_tokens() -> None:
    usage = {"input_tokens": 20, "output_tokens": 1056, "total_tokens": 1076}
    [image] = adapter.parse_response(images_response([{"b64_json": b64(image_bytes())}], usage=usage),
                                     make_call("gpt-image-1.5"))
    assert image.usage.model_dump() == {"input_tokens": 20, "input_text_tokens": 0, "input_image_tokens": 0,
                                        "output_tokens": 1056, "output_text_tokens": 0, "output_image_tokens": 1056}


def test_no_usage_is_zero_usage() -> None:
    [image] = adapter.parse_response(images_response([{"b64_json": b64(image_bytes())}]), make_call("gpt-image-2"))
    assert image.usage.total_tokens == 0


def test_more_images_than_asked_are_dropped() -> None:
    items = [{"b64_json": b64(image_bytes(color=(i, 0, 0)))} for i in range(3)]
    images = adapter.parse_response(images_response(items), make_call("gpt-image-2", indices=[4, 5]))
    assert len(images) == 2


def test_usage_is_split_over_the_images_asked_for() -> None:
    # two asked, one delivered: the delivered image is billed its own share, not the missing one's
    usage = {"input_tokens": 10, "output_tokens": 101}
    items = [{"b64_json": b64(image_bytes())}, {"url": "https://x/1.png"}]
    images = adapter.parse_response(images_response(items, usage=usage), make_call("gpt-image-2", indices=[0, 1]))
    assert len(images) == 1
    assert (images[0].usage.input_tokens, images[0].usage.output_tokens) == (5, 51)


@pytest.mark.parametrize("items", [[], [{"url": "https://files.test/x.png"}], [{"b64_json": None}]])
def test_no_base64_image_is_retryable(items: list[dict[str, Any]]) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(images_response(items), make_call("gpt-image-2"))
    assert (info.value.code, info.value.retryable) == ("no_images_generated", True)


@pytest.mark.parametrize("body", [b"{}", b'{"data": []}', b"not json", b'{"created": "yesterday", "data": []}'])
def test_a_body_that_is_not_an_images_response_is_retryable(body: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(ok(body), make_call("gpt-image-2"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_response", True)


@pytest.mark.parametrize("data", ["***", b64(b"plain text"), b64(image_bytes("jpeg"))])
def test_a_broken_image_is_retryable(data: str) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(images_response([{"b64_json": data}], output_format="png"), make_call("gpt-image-2"))
    assert (info.value.code, info.value.retryable) == ("upstream_bad_image", True)


# -- errors ----------------------------------------------------------------------------------


def test_errors_are_openai_errors_labelled_for_the_images_api() -> None:
    # the mapping itself is tested in test_openai_errors
    body = {"error": {"message": "Invalid size '999x999'.", "type": "invalid_request_error", "code": "invalid_value"}}
    error = adapter.parse_error(error_response(400, body), retryable=False, redact=NO_SECRETS)
    assert isinstance(error, UpstreamError)
    assert error.message == "The OpenAI Images API refused the call (invalid_value: Invalid size '999x999'.)."
