"""Every dialect's error shapes through HTTP, on the embedded app in this process: a bad or missing
key, a missing field, a bad value naming the field, an unknown model, an exhausted budget, a rate
limit and a body over the size limit, each answered as that dialect's clients expect
(``to_wire_error`` of ``api/dialects/<dialect>/translate.py``), with nothing stored.

Keys travel as each dialect's SDK sends them: ``Authorization: Bearer`` (OpenAI, ``/generate``),
``x-api-key`` (Anthropic), ``x-goog-api-key`` (Gemini).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.inproc.gateway import DEMO_PRICES, Gateway, running_gateway, write_toml

pytestmark = pytest.mark.anyio

MAX_BODY_MB = 0.25
GOOGLE_TYPE = "type.googleapis.com/google.rpc."


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """Demo priced (a budget can run out), a small body limit (a body over it is cheap to send), and
    unknown models refused on every dialect (Anthropic's default serves them by the default model,
    tests/inproc/test_clients.py)."""
    tmp = tmp_path_factory.mktemp("errors")
    async with running_gateway(tmp, prices_file=write_toml(tmp / "prices.toml", DEMO_PRICES),
                               max_body_mb=MAX_BODY_MB, anthropic_unknown_model="error") as gateway:
        yield gateway


@dataclass(frozen=True)
class Dialect:
    name: str
    family: str  # the error shape: "openai", "anthropic" or "google"
    path: Callable[[str], str]
    body: Callable[[str], dict[str, Any]]
    key_header: str
    headers: tuple[tuple[str, str], ...] = ()

    def auth(self, secret: str | None) -> dict[str, str]:
        headers = dict(self.headers)
        if secret is not None:
            headers[self.key_header] = f"Bearer {secret}" if self.key_header == "Authorization" else secret
        return headers

    async def post(self, gw: Gateway, secret: str | None, *, model: str = "demo",
                   body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        if "content" not in kwargs:
            kwargs["json"] = self.body(model) if body is None else body
        return await gw.http.post(self.path(model), headers=self.auth(secret), **kwargs)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


DIALECTS = [
    Dialect("openai_images", "openai", lambda m: "/v1/images/generations",
            lambda m: {"model": m, "prompt": "x", "size": "64x64"}, "Authorization"),
    Dialect("openai_chat", "openai", lambda m: "/v1/chat/completions",
            lambda m: {"model": m, "messages": _user("x"), "image_config": {"image_size": "1K"}}, "Authorization"),
    Dialect("anthropic_messages", "anthropic", lambda m: "/v1/messages",
            lambda m: {"model": m, "max_tokens": 16, "messages": _user("x")}, "x-api-key",
            (("anthropic-version", "2023-06-01"),)),
    Dialect("simple", "anthropic", lambda m: "/generate", lambda m: {"model": m, "prompt": "x"}, "Authorization"),
    Dialect("gemini", "google", lambda m: f"/v1beta/models/{m}:generateContent",
            lambda m: {"contents": [{"parts": [{"text": "x"}]}]}, "x-goog-api-key"),
]
EACH = pytest.mark.parametrize("dialect", DIALECTS, ids=[d.name for d in DIALECTS])

# what each case must look like, by error family: (HTTP status, fields of the error object); for
# Google, "reason" is its ErrorInfo's reason and "field" its BadRequest's field
Expected = dict[str, tuple[int, dict[str, Any]]]


def check(dialect: Dialect, response: httpx.Response, expected: Expected) -> dict[str, Any]:
    """The error object of ``response`` once its envelope and ``expected[dialect.family]`` are checked."""
    status, fields = expected[dialect.family]
    assert response.status_code == status, response.text
    body = response.json()
    assert "Traceback" not in response.text
    if dialect.family == "openai":
        assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
        error: dict[str, Any] = body["error"]
    elif dialect.family == "anthropic":
        assert set(body) == {"type", "error"} and body["type"] == "error"
        assert {"type", "message"} <= set(body["error"]) <= {"type", "message", "job_id"}
        assert response.headers["request-id"].startswith("req")
        error = body["error"]
    else:
        assert set(body) == {"error"}
        error = body["error"]
        assert {"code", "message", "status"} <= set(error) <= {"code", "message", "status", "details"}
        assert error["code"] == status
        details = error.get("details", [])
        assert all(d["@type"].startswith(GOOGLE_TYPE) for d in details)
        error = {**error, "reason": next((d["reason"] for d in details if d["@type"].endswith("ErrorInfo")), None),
                 "field": next((v["field"] for d in details if d["@type"].endswith("BadRequest")
                                for v in d["fieldViolations"]), None),
                 "retry_delay": next((d["retryDelay"] for d in details if d["@type"].endswith("RetryInfo")), None)}
    for name, value in fields.items():
        if name == "mentions":
            assert value in error["message"], error
        else:
            assert error[name] == value, (name, error)
    return error


@EACH
async def test_an_unknown_key(gw: Gateway, dialect: Dialect) -> None:
    before = gw.count_rows()
    response = await dialect.post(gw, "ig-not-a-real-key")
    check(dialect, response, {
        "openai": (401, {"type": "invalid_request_error", "code": "invalid_api_key"}),
        "anthropic": (401, {"type": "authentication_error"}),
        "google": (400, {"status": "INVALID_ARGUMENT", "reason": "API_KEY_INVALID"}),  # Google's answer to a bad key
    })
    assert "ig-not-a-real-key" not in response.text
    assert gw.count_rows() == before


@EACH
async def test_no_key(gw: Gateway, dialect: Dialect) -> None:
    response = await dialect.post(gw, None)
    check(dialect, response, {
        "openai": (401, {"type": "invalid_request_error", "code": "missing_api_key"}),
        "anthropic": (401, {"type": "authentication_error"}),
        "google": (401, {"status": "UNAUTHENTICATED", "reason": "CREDENTIALS_MISSING"}),
    })
    assert response.headers["www-authenticate"] == "Bearer"


MISSING = {"openai_images": ({"model": "demo"}, "prompt"), "openai_chat": ({"model": "demo"}, "messages"),
           "anthropic_messages": ({"model": "demo", "max_tokens": 16}, "messages"),
           "simple": ({"system": "no prompt"}, "prompt"), "gemini": ({}, "contents")}


@EACH
async def test_a_missing_field_is_named(gw: Gateway, dialect: Dialect) -> None:
    key = await gw.create_key()
    body, field = MISSING[dialect.name]
    before = gw.count_rows()
    response = await dialect.post(gw, key.secret, body=body)
    check(dialect, response, {
        "openai": (400, {"type": "invalid_request_error", "param": field, "code": "missing_required_parameter",
                         "mentions": f"'{field}'"}),
        "anthropic": (400, {"type": "invalid_request_error", "mentions": f"'{field}'"}),
        "google": (400, {"status": "INVALID_ARGUMENT", "field": field, "reason": "MISSING_REQUIRED_PARAMETER"}),
    })
    assert gw.count_rows() == before


BAD_VALUE = {  # the body, the field as the dialect names it, and what the message says of it
    "openai_images": ({"model": "demo", "prompt": "x", "n": 11}, "n", "'n'"),
    # the param and the message both say the field as the chat request names it
    "openai_chat": ({"model": "demo", "messages": _user("x"), "image_config": {"aspect_ratio": "wide"}},
                    "image_config.aspect_ratio", "'image_config.aspect_ratio': 'wide'"),
    "anthropic_messages": ({"model": "demo", "max_tokens": 16, "messages": _user("x"), "n": 11}, "n", "'n'"),
    "simple": ({"prompt": 42}, "prompt", "'prompt'"),
    "gemini": ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"aspectRatio": "5:1"}}},
               "generationConfig.imageConfig.aspectRatio", "'generationConfig.imageConfig.aspectRatio'"),
}


@EACH
async def test_a_bad_value_is_refused_naming_the_field(gw: Gateway, dialect: Dialect) -> None:
    key = await gw.create_key()
    body, field, mention = BAD_VALUE[dialect.name]
    before = gw.count_rows()
    response = await dialect.post(gw, key.secret, body=body)
    check(dialect, response, {
        "openai": (400, {"type": "invalid_request_error", "param": field, "mentions": mention}),
        "anthropic": (400, {"type": "invalid_request_error", "mentions": mention}),
        "google": (400, {"status": "INVALID_ARGUMENT", "field": field, "mentions": mention}),
    })
    assert gw.count_rows() == before


@EACH
async def test_an_unknown_model_is_not_found(gw: Gateway, dialect: Dialect) -> None:
    key = await gw.create_key()
    before = gw.count_rows()
    response = await dialect.post(gw, key.secret, model="no-such-model")
    check(dialect, response, {
        "openai": (404, {"type": "invalid_request_error", "param": "model", "code": "model_not_found",
                         "mentions": "no-such-model"}),
        "anthropic": (404, {"type": "not_found_error", "mentions": "no-such-model"}),
        "google": (404, {"status": "NOT_FOUND", "reason": "MODEL_NOT_FOUND", "mentions": "no-such-model"}),
    })
    assert gw.count_rows() == before


@EACH
async def test_an_exhausted_budget_refuses_before_anything_is_stored(gw: Gateway, dialect: Dialect) -> None:
    key = await gw.create_key(budget_usd="0.01")  # a demo image holds $0.05
    before = gw.count_rows()
    response = await dialect.post(gw, key.secret)
    error = check(dialect, response, {
        "openai": (429, {"type": "insufficient_quota", "code": "insufficient_quota"}),
        "anthropic": (402, {"type": "billing_error"}),
        "google": (429, {"status": "RESOURCE_EXHAUSTED", "reason": "INSUFFICIENT_QUOTA", "retry_delay": None}),
    })
    assert "$0.01" in error["message"]
    assert "retry-after" not in response.headers  # waiting does not refill a budget
    assert gw.count_rows() == before and gw.committed(key) == 0


@EACH
async def test_a_rate_limit_answers_429_with_retry_after(gw: Gateway, dialect: Dialect) -> None:
    key = await gw.create_key(rpm=1)
    first = await dialect.post(gw, key.secret)
    assert first.status_code == 200, first.text
    before = gw.count_rows()
    response = await dialect.post(gw, key.secret)
    error = check(dialect, response, {
        "openai": (429, {"type": "requests", "code": "rate_limit_exceeded"}),
        "anthropic": (429, {"type": "rate_limit_error"}),
        "google": (429, {"status": "RESOURCE_EXHAUSTED", "reason": "RATE_LIMIT_EXCEEDED"}),
    })
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert 0 < int(response.headers["retry-after-ms"]) <= 60_000
    assert response.headers["x-ratelimit-limit-requests"] == "1"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    if dialect.family == "google":
        assert error["retry_delay"].endswith("s")
    assert gw.count_rows() == before


def _big_body(dialect: Dialect) -> bytes:
    return b'{"prompt": "' + b"x" * int(MAX_BODY_MB * 1024 * 1024 + 1) + b'"}'


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@EACH
@pytest.mark.parametrize("sent", ["with its length", "chunked"])
async def test_a_body_over_the_limit_is_413(gw: Gateway, dialect: Dialect, sent: str) -> None:
    key = await gw.create_key()
    before = gw.count_rows()
    body = _big_body(dialect)
    content: bytes | AsyncIterator[bytes] = body if sent == "with its length" else _chunks(body)
    response = await dialect.post(gw, key.secret, content=content)
    check(dialect, response, {
        "openai": (413, {"type": "invalid_request_error", "code": "request_too_large", "mentions": "0.25 MiB"}),
        "anthropic": (413, {"type": "request_too_large", "mentions": "0.25 MiB"}),
        "google": (400, {"status": "INVALID_ARGUMENT", "reason": "REQUEST_TOO_LARGE"}),  # as Google answers it
    })
    assert gw.count_rows() == before
