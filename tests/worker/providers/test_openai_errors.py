"""OpenAI's error answers (worker.providers.openai_errors), as the OpenAI Images and the
OpenAI-compatible chat adapters read them: the GatewayError each becomes, and what each says about
retrying (``insufficient_quota``, the moderation codes). Pure: httpx.Response objects only."""

from __future__ import annotations

import httpx
import pytest

from core.errors import ContentPolicyError, UpstreamError, UpstreamOverloadedError
from tests.worker.providers.canned import NO_SECRETS, error_response
from worker.providers.http import NO_HINT, Redactor, RetryHint
from worker.providers.openai_chat import OpenAIChatAdapter
from worker.providers.openai_errors import OpenAIErrors
from worker.providers.openai_images import OpenAIImagesAdapter

ADAPTERS: list[OpenAIErrors] = [OpenAIImagesAdapter(), OpenAIChatAdapter()]
images = ADAPTERS[0]
each_adapter = pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.label)


def openai_error(status: int, code: str | None, message: str = "Something failed.",
                 type_: str | None = "invalid_request_error") -> httpx.Response:
    return error_response(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})


def parse(response: httpx.Response, *, retryable: bool = False) -> UpstreamError:
    error = images.parse_error(response, retryable=retryable, redact=NO_SECRETS)
    assert isinstance(error, UpstreamError)
    return error


# -- what an error body says about retrying --------------------------------------------------


@each_adapter
@pytest.mark.parametrize(("code", "type_"), [("insufficient_quota", "insufficient_quota"),
                                             ("insufficient_quota", None), (None, "insufficient_quota")])
def test_an_exhausted_quota_is_never_retried(adapter: OpenAIErrors, code: str | None, type_: str | None) -> None:
    hint = adapter.retry_hint(openai_error(429, code, "You exceeded your current quota.", type_))
    assert hint.final is True
    assert "quota" in hint.reason


@each_adapter
@pytest.mark.parametrize("status", [400, 409, 500])
@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
def test_a_safety_refusal_is_never_retried(adapter: OpenAIErrors, status: int, code: str) -> None:
    assert adapter.retry_hint(openai_error(status, code, type_="image_generation_user_error")).final is True


@pytest.mark.parametrize(
    "response",
    [
        openai_error(429, "rate_limit_exceeded", type_="requests"),
        openai_error(400, "insufficient_quota"),  # a spent quota counts on a 429 only
        openai_error(500, None, type_="server_error"),
        error_response(502, b"<html>Bad gateway</html>"),
        error_response(429, {"error": {"message": "Rate limit", "code": 429}}),  # OpenRouter's numeric code
    ],
    ids=["rate-limit", "quota-on-400", "server-error", "html", "numeric-code"],
)
def test_other_errors_leave_it_to_the_status(response: httpx.Response) -> None:
    assert images.retry_hint(response) == NO_HINT


def test_no_opinion_is_no_delay_either() -> None:
    assert images.retry_hint(openai_error(503, None)) == RetryHint()


# -- the error the caller gets ---------------------------------------------------------------


@each_adapter
@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
def test_safety_refusal_is_a_content_policy_error(adapter: OpenAIErrors, code: str) -> None:
    message = "Your request was rejected as a result of our safety system."
    error = adapter.parse_error(openai_error(400, code, message, "image_generation_user_error"), retryable=False,
                                redact=NO_SECRETS)
    assert isinstance(error, ContentPolicyError)
    assert (error.code, error.message, error.status) == (code, message, 400)


@pytest.mark.parametrize(
    ("status", "code", "error_type", "gateway_code", "route_failed"),
    [
        (400, "invalid_value", UpstreamError, "upstream_invalid_request", False),
        (401, "invalid_api_key", UpstreamError, "upstream_auth_failed", True),
        (403, None, UpstreamError, "upstream_auth_failed", True),
        (404, "model_not_found", UpstreamError, "upstream_model_not_found", True),
        (429, "rate_limit_exceeded", UpstreamOverloadedError, "upstream_overloaded", True),
        (500, None, UpstreamError, "upstream_error", False),
        (503, None, UpstreamOverloadedError, "upstream_overloaded", False),
        (529, None, UpstreamOverloadedError, "upstream_overloaded", False),
    ],
)
def test_the_gateway_error_of_each_status(
    status: int, code: str | None, error_type: type[UpstreamError], gateway_code: str, route_failed: bool
) -> None:
    error = parse(openai_error(status, code, "The upstream said no."))
    assert type(error) is error_type
    assert (error.code, error.upstream_status, error.route_failed) == (gateway_code, status, route_failed)
    assert "OpenAI Images API" in error.message


@pytest.mark.parametrize("retryable", [True, False])
@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_the_error_is_built_as_retryable_as_the_client_decided(status: int, retryable: bool) -> None:
    assert parse(openai_error(status, None), retryable=retryable).retryable is retryable


@each_adapter
def test_each_adapter_names_itself(adapter: OpenAIErrors) -> None:
    error = adapter.parse_error(error_response(500, b""), retryable=False, redact=NO_SECRETS)
    assert adapter.label in error.message


@pytest.mark.parametrize("code", ["invalid_value", "moderation_blocked"])
def test_the_upstreams_text_is_redacted(code: str) -> None:
    secret = "sk-proj-SECRET0123456789abcdef"
    response = openai_error(400, code, f"Malformed header value: Bearer {secret}.")
    error = images.parse_error(response, retryable=False, redact=Redactor([secret]))
    assert "Malformed header value: Bearer [redacted]." in error.message
    assert secret not in str(error)


def test_error_messages_carry_the_upstream_detail_except_for_credentials() -> None:
    bad = parse(openai_error(400, "invalid_value", "Invalid size '999x999'."))
    assert "invalid_value: Invalid size '999x999'." in bad.message
    auth = parse(openai_error(401, "invalid_api_key", "Incorrect API key provided: sk-abc."))
    assert "sk-abc" not in auth.message


@pytest.mark.parametrize("body", [b"<html>Bad Gateway</html>", b"", b"[]"])
def test_error_body_that_is_not_json(body: bytes) -> None:
    error = parse(error_response(502, body))
    assert (error.code, error.upstream_status) == ("upstream_error", 502)
