"""Google's error answers (worker.providers.google_errors), as the Gemini, Imagen and Vertex AI
adapters read them: the GatewayError each becomes, and what each says about retrying
(``RetryInfo.retryDelay``, a ``PerDay`` ``QuotaFailure``). Pure: httpx.Response objects only."""

from __future__ import annotations

import httpx
import pytest

from core.errors import UpstreamError, UpstreamOverloadedError
from tests.worker.providers.canned import NO_SECRETS, error_response, google_error, quota_failure, retry_info
from worker.providers.gemini import GeminiAdapter
from worker.providers.google_errors import GoogleErrors, read_google_error
from worker.providers.http import NO_HINT, Redactor, RetryHint
from worker.providers.imagen import ImagenAdapter
from worker.providers.vertex import VertexGeminiAdapter, VertexImagenAdapter

WHERE: dict[str, str] = {"project": "p-1", "location": "global", "version": "v1"}
ADAPTERS: list[GoogleErrors] = [GeminiAdapter(), ImagenAdapter(), VertexGeminiAdapter(**WHERE),
                                VertexImagenAdapter(**WHERE)]
gemini = ADAPTERS[0]
each_adapter = pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.label)


HELP = {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://ai.google.dev/"}]}


def parse(response: httpx.Response, *, retryable: bool = False) -> UpstreamError:
    error = gemini.parse_error(response, retryable=retryable, redact=NO_SECRETS)
    assert isinstance(error, UpstreamError)
    return error


# -- what an error body says about retrying --------------------------------------------------


@each_adapter
def test_a_spent_daily_quota_is_never_retried(adapter: GoogleErrors) -> None:
    daily = google_error(429, "RESOURCE_EXHAUSTED", details=[
        quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), retry_info("3600s")])
    hint = adapter.retry_hint(daily)
    assert hint.final is True
    assert "daily quota" in hint.reason


@each_adapter
def test_a_per_minute_quota_is_retried_after_its_retry_delay(adapter: GoogleErrors) -> None:
    per_minute = google_error(429, "RESOURCE_EXHAUSTED", details=[
        quota_failure("GenerateRequestsPerMinutePerProjectPerModel"), HELP, retry_info("34s")])
    assert adapter.retry_hint(per_minute) == RetryHint.after(34.0)


@each_adapter
@pytest.mark.parametrize("form", ["object", "streamed-array"])
def test_retry_info_in_either_body_form(adapter: GoogleErrors, form: str) -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE",
                       "details": [retry_info("1.5s")]}}
    assert adapter.retry_hint(error_response(503, error if form == "object" else [error])) == RetryHint.after(1.5)


@pytest.mark.parametrize(
    ("response", "hint"),
    [
        (google_error(503, "UNAVAILABLE"), NO_HINT),
        (google_error(503, "UNAVAILABLE", details=[retry_info("soon")]), NO_HINT),
        (google_error(503, "UNAVAILABLE", details=[retry_info("-3s")]), RetryHint.after(0.0)),
        (google_error(503, "UNAVAILABLE", details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                    "retryDelay": 5}]), NO_HINT),
        # a daily quota counts on a 429 only: the status of another answer decides alone
        (google_error(403, "PERMISSION_DENIED", details=[quota_failure("RequestsPerDay")]), NO_HINT),
        (error_response(502, b"<html>Bad gateway</html>"), NO_HINT),
        (error_response(500, b""), NO_HINT),
    ],
    ids=["no-details", "unreadable-delay", "negative-delay", "delay-not-a-string", "daily-quota-on-403",
         "html", "empty"],
)
def test_retry_hint(response: httpx.Response, hint: RetryHint) -> None:
    assert gemini.retry_hint(response) == hint


def test_details_that_are_not_objects_are_passed_over() -> None:
    response = error_response(503, {"error": {"code": 503, "message": "busy", "details": ["x", retry_info("2s")]}})
    assert read_google_error(response).message == "busy"
    assert gemini.retry_hint(response) == RetryHint.after(2.0)


# -- the error the caller gets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name", "error_type", "code", "route_failed"),
    [
        (400, "INVALID_ARGUMENT", UpstreamError, "upstream_invalid_request", False),
        (401, "UNAUTHENTICATED", UpstreamError, "upstream_auth_failed", True),
        (403, "PERMISSION_DENIED", UpstreamError, "upstream_auth_failed", True),
        (404, "NOT_FOUND", UpstreamError, "upstream_model_not_found", True),
        (429, "RESOURCE_EXHAUSTED", UpstreamOverloadedError, "upstream_overloaded", True),
        (500, "INTERNAL", UpstreamError, "upstream_error", False),
        (503, "UNAVAILABLE", UpstreamOverloadedError, "upstream_overloaded", False),
        (504, "DEADLINE_EXCEEDED", UpstreamError, "upstream_timeout", False),
    ],
)
def test_the_gateway_error_of_each_status(
    status: int, name: str, error_type: type[UpstreamError], code: str, route_failed: bool
) -> None:
    error = parse(google_error(status, name, "Something went wrong upstream."))
    assert type(error) is error_type
    assert (error.code, error.upstream_status) == (code, status)
    assert error.route_failed is route_failed  # as built not retryable: the status alone decides
    assert "Gemini API" in error.message
    if status not in (401, 403):
        assert name in error.message
        assert "Something went wrong upstream." in error.message


@pytest.mark.parametrize("retryable", [True, False])
@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503, 504])
def test_the_error_is_built_as_retryable_as_the_client_decided(status: int, retryable: bool) -> None:
    error = parse(google_error(status, "ANY"), retryable=retryable)
    assert error.retryable is retryable
    if retryable:
        assert error.route_failed is True


@each_adapter
def test_each_adapter_names_itself(adapter: GoogleErrors) -> None:
    error = adapter.parse_error(google_error(500, "INTERNAL"), retryable=False, redact=NO_SECRETS)
    assert adapter.label in error.message


def test_the_upstreams_text_is_redacted() -> None:
    key = "AIzaSyTESTKEY0123456789"
    response = google_error(400, "INVALID_ARGUMENT", f"API key {key} not valid.")
    error = gemini.parse_error(response, retryable=False, redact=Redactor([key]))
    assert error.message == "The Gemini API refused the call (INVALID_ARGUMENT: API key [redacted] not valid.)."
    assert key not in str(error)


def test_auth_error_does_not_echo_the_upstream_message() -> None:
    error = parse(google_error(403, "PERMISSION_DENIED", "Key AIza-secret lacks access"))
    assert "AIza-secret" not in error.message
    assert "PERMISSION_DENIED" in error.message


def test_404_names_the_upstream_message() -> None:
    message = "models/gemini-2.5-flash-image is not found for API version v1beta"
    assert message in parse(google_error(404, "NOT_FOUND", message)).message


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b"[]", b'{"error": "flat string"}'])
def test_error_body_that_is_not_google_json(body: bytes) -> None:
    error = parse(error_response(502, body))
    assert (error.code, error.upstream_status) == ("upstream_error", 502)
    assert "502" in error.message


def test_streamed_array_error_form() -> None:
    body = [{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]
    error = parse(error_response(503, body))
    assert isinstance(error, UpstreamOverloadedError)
    assert "The model is overloaded." in error.message


def test_invalid_api_key_is_a_credentials_failure() -> None:
    response = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details=[
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
         "metadata": {"service": "generativelanguage.googleapis.com"}}])
    error = parse(response)
    assert (error.code, error.upstream_status) == ("upstream_auth_failed", 401)
    assert error.route_failed is True
