"""``POST /generate``, the CG-Image simple route, over raw HTTP in both modes."""

from __future__ import annotations

import base64
import io
import re

import httpx
import pytest
from PIL import Image

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

SEED_BODY = {"prompt": "Generate an image of a sunset over mountains",
             "system": "You are an image generation assistant"}


def _post(stack: Stack, key: str | None, body: object, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(stack.base_url + "/generate", json=body, headers=headers, timeout=120)


def test_seed_000_request_and_response_shape(stack: Stack) -> None:
    key = stack.create_key(f"simple-seed-{stack.mode}")
    response = _post(stack, key, SEED_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("img-")
    assert {k: body[k] for k in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
        "type": "message", "role": "assistant", "model": "demo-image", "stop_reason": "end_turn", "stop_sequence": None}
    assert body["usage"] == {"input_tokens": 0, "output_tokens": 0}
    [block] = body["content"]
    assert block["type"] == "text" and block["text"].startswith("Here's your image:\n\n")
    [url] = re.findall(r"!\[Generated Image\]\((data:image/png;base64,[^)]+)\)", block["text"])
    assert body["_images"] == [{"mimeType": "image/png", "data": url}]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert (image.format, image.size) == ("PNG", (1024, 1024))

    job = httpx.get(stack.base_url + f"/v1/jobs/{response.headers['x-imagegate-job-id']}",
                    headers={"Authorization": f"Bearer {key}"}).json()
    assert job["dialect"] == "simple"
    assert (job["request"]["prompt"], job["request"]["system"]) == (SEED_BODY["prompt"], SEED_BODY["system"])


def test_prefer_respond_async(stack: Stack) -> None:
    response = _post(stack, stack.create_key(f"simple-async-{stack.mode}"), {"prompt": "later"},
                     Prefer="respond-async")
    assert response.status_code == 202
    assert response.json()["dialect"] == "simple"


@pytest.mark.parametrize(("body", "status", "kind"), [
    ({"system": "no prompt"}, 400, "invalid_request_error"),
    ({"prompt": ""}, 400, "invalid_request_error"),
    ([1, 2], 400, "invalid_request_error"),
    ({"prompt": "x", "model": "no-such-model"}, 404, "not_found_error"),
])
def test_errors_in_the_anthropic_shape(stack: Stack, body: object, status: int, kind: str) -> None:
    response = _post(stack, stack.create_key(f"simple-err-{stack.mode}-{status}-{len(str(body))}"), body)
    assert response.status_code == status
    error = response.json()
    assert error == {"type": "error", "error": {"type": kind, "message": error["error"]["message"]}}


def test_bad_key_and_no_key(stack: Stack) -> None:
    for key in ("ig-wrong", None):
        response = _post(stack, key, SEED_BODY)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_content_policy_block_is_invalid_request(gw: Stack, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "safety_prompt", times=5)
    response = _post(gw, gw.create_key("simple-policy"), SEED_BODY | {"model": "gemini-3-pro-image"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.count("gemini") == 1
