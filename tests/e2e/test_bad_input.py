"""Bad requests get a clear OpenAI-style error naming the field, and leave no trace."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.harness import Stack

pytestmark = pytest.mark.integration

GEN = "/v1/images/generations"

CASES = [
    # (body, status, type, param, code)
    (b"{not json", 400, "invalid_request_error", None, "invalid_json"),
    (b"", 400, "invalid_request_error", None, "invalid_json"),
    (b"[1, 2]", 400, "invalid_request_error", None, "invalid_type"),
    (json.dumps({"model": "demo"}).encode(), 400, "invalid_request_error", "prompt",
     "missing_required_parameter"),
    (json.dumps({"prompt": ""}).encode(), 400, "invalid_request_error", "prompt", None),
    (json.dumps({"prompt": "x", "n": 0}).encode(), 400, "invalid_request_error", "n",
     "integer_below_min_value"),
    (json.dumps({"prompt": "x", "n": 11}).encode(), 400, "invalid_request_error", "n",
     "integer_above_max_value"),
    (json.dumps({"prompt": "x", "n": "many"}).encode(), 400, "invalid_request_error", "n", "invalid_type"),
    (json.dumps({"prompt": "x", "model": "no-such-model"}).encode(), 404, "invalid_request_error",
     "model", "model_not_found"),
    (json.dumps({"prompt": "x", "size": "huge"}).encode(), 400, "invalid_request_error", "size", None),
    (json.dumps({"prompt": "x", "size": "9000x9000"}).encode(), 400, "invalid_request_error", "size", None),
    (json.dumps({"prompt": "x", "aspect_ratio": "5:1"}).encode(), 400, "invalid_request_error",
     "aspect_ratio", None),
    (json.dumps({"prompt": "x", "output_format": "gif"}).encode(), 400, "invalid_request_error",
     "output_format", None),
    (json.dumps({"prompt": "x", "output_format": "jpeg", "background": "transparent"}).encode(), 400,
     "invalid_request_error", "background", None),
    (json.dumps({"prompt": "x", "output_compression": 101}).encode(), 400, "invalid_request_error",
     "output_compression", None),
    (json.dumps({"prompt": "x", "quality": "ultra"}).encode(), 400, "invalid_request_error", "quality", None),
    (json.dumps({"prompt": "x", "response_format": "png"}).encode(), 400, "invalid_request_error",
     "response_format", None),
]


@pytest.mark.parametrize(("body", "status", "type_", "param", "code"), CASES,
                         ids=[c[0][:40].decode(errors="replace") or "empty" for c in CASES])
def test_bad_input_is_a_clear_error_and_stores_nothing(
    stack: Stack, body: bytes, status: int, type_: str, param: str | None, code: str | None
) -> None:
    key = stack.create_key(f"bad-{stack.mode}-{abs(hash(body))}")
    before = stack.count_rows()
    response = httpx.post(stack.base_url + GEN, content=body,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == type_ and error["param"] == param
    if code is not None:
        assert error["code"] == code
    if param:
        assert param in error["message"]
    assert "Traceback" not in response.text
    assert stack.count_rows() == before


def test_oversized_body_is_413_before_it_is_read(stack: Stack) -> None:
    key = stack.create_key(f"big-{stack.mode}")
    before = stack.count_rows()
    huge = b'{"prompt": "' + b"x" * (65 * 1024 * 1024) + b'"}'
    response = httpx.post(stack.base_url + GEN, content=huge, timeout=60,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert stack.count_rows() == before


def test_the_sdk_raises_its_own_exception_classes(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.create_key(f"sdk-{stack.mode}"),
                           max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(model="demo", prompt="x", n=11)
    assert bad.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="nope", prompt="x")


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer ig-not-a-real-key"},
    {"x-api-key": "ig-not-a-real-key"},
    {"Authorization": "Basic Zm9vOmJhcg=="},
])
def test_missing_or_unknown_key_is_401(stack: Stack, headers: dict[str, str]) -> None:
    before = stack.count_rows()
    response = httpx.post(stack.base_url + GEN, json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] in ("invalid_api_key", "missing_api_key")
    assert "ig-not-a-real-key" not in response.text
    assert stack.count_rows() == before


def test_every_key_header_is_accepted_and_revoked_keys_are_refused(stack: Stack) -> None:
    name = f"headers-{stack.mode}"
    key = stack.cli("keys", "create", "--name", name).strip().splitlines()[-1]  # the CLI, as operators do
    body = {"prompt": "key places", "size": "64x64"}
    for kwargs in ({"headers": {"Authorization": f"Bearer {key}"}}, {"headers": {"x-api-key": key}},
                   {"headers": {"x-goog-api-key": key}}, {"params": {"key": key}}):
        response = httpx.post(stack.base_url + GEN, json=body, timeout=60, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, (kwargs, response.text)

    stack.cli("keys", "revoke", name)
    # another process revoked it: the gateway sees it within its key cache's life (2 s)
    deadline = time.monotonic() + 5
    while (response := httpx.post(stack.base_url + GEN, json=body, headers={"x-api-key": key})).status_code != 401:
        assert time.monotonic() < deadline, "the revocation was not seen within the key cache's life"
        time.sleep(0.2)
    assert "revoked" in response.json()["error"]["message"]
    listed = stack.cli("keys", "list")
    assert name in listed and "revoked" in listed and key not in listed
    # only a hash of the secret is stored
    engine = stack.db()
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM api_keys WHERE name = :n"), {"n": name}).one()
    finally:
        engine.dispose()
    assert all(key not in str(value) for value in row)
    assert row.secret_hash == hashlib.sha256(key.encode()).hexdigest()
