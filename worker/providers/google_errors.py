"""Google's error answers, shared by the Gemini API, Imagen and Vertex AI adapters.

Google APIs answer a failure with ``{"error": {code, message, status, details}}`` (a
``google.rpc.Status``; streaming endpoints wrap it in a one-element array), whose ``details`` are
typed messages (https://cloud.google.com/apis/design/errors#error_details,
https://ai.google.dev/gemini-api/docs/troubleshooting). Three of them matter here:

- ``RetryInfo.retryDelay`` ("34s"): how long to wait before a retry;
- ``QuotaFailure`` with a ``quotaId`` containing ``PerDay``: the daily quota is spent, so a 429
  is not retried (another route of the fallback chain may still serve the request);
- ``ErrorInfo.reason`` ``API_KEY_INVALID``: Google answers a bad API key with 400.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import GatewayError, UpstreamError, UpstreamOverloadedError
from worker.providers.http import NO_HINT, Redact, RetryHint


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


Detail = TypeVar("Detail", bound=_Wire)


class ErrorInfo(_Wire):
    reason: str = ""


class RetryInfo(_Wire):
    retry_delay: str = Field("", alias="retryDelay")
    """A protobuf Duration in its JSON form: seconds with an ``s`` suffix ("34s", "1.5s")."""

    @property
    def seconds(self) -> float | None:
        if not self.retry_delay.endswith("s"):
            return None
        try:
            return float(self.retry_delay[:-1])
        except ValueError:
            return None


class QuotaViolation(_Wire):
    quota_id: str = Field("", alias="quotaId")


class QuotaFailure(_Wire):
    violations: list[QuotaViolation] = []


class GoogleError(_Wire):
    """The ``error`` object of a Google answer; empty when the body is not one."""

    code: int | None = None
    message: str = ""
    status: str | None = None
    details: list[dict[str, Any]] = []
    """``google.protobuf.Any`` messages: open by design, each read by its ``@type`` below."""

    @field_validator("details", mode="before")
    @classmethod
    def _only_objects(cls, value: object) -> object:
        return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else value

    def _details(self, kind: type[Detail]) -> list[Detail]:
        """The details of type ``google.rpc.<kind>`` (the models are named after them)."""
        found = []
        for detail in self.details:
            if str(detail.get("@type", "")).endswith(f"google.rpc.{kind.__name__}"):
                try:
                    found.append(kind.model_validate(detail))
                except ValidationError:
                    continue
        return found

    @property
    def reasons(self) -> set[str]:
        return {info.reason for info in self._details(ErrorInfo)}

    @property
    def retry_delay_s(self) -> float | None:
        delays = [info.seconds for info in self._details(RetryInfo) if info.seconds is not None]
        return delays[0] if delays else None

    @property
    def daily_quota_spent(self) -> bool:
        return any("PerDay" in violation.quota_id
                   for failure in self._details(QuotaFailure) for violation in failure.violations)


def read_google_error(response: httpx.Response) -> GoogleError:
    """The error object of ``response``, or an empty one when its body is not Google JSON."""
    try:
        payload = json.loads(response.content or b"{}")
        if isinstance(payload, list):
            payload = payload[0] if payload else {}
        return GoogleError.model_validate(payload.get("error", {}))
    except (ValueError, ValidationError, AttributeError):
        return GoogleError()


class GoogleErrors:
    """The error half of an adapter for a Google API; the adapter names itself in ``label``."""

    label: str

    def retry_hint(self, response: httpx.Response) -> RetryHint:
        error = read_google_error(response)
        if response.status_code == 429 and error.daily_quota_spent:
            return RetryHint.never("upstream daily quota exhausted")
        delay = error.retry_delay_s
        return NO_HINT if delay is None else RetryHint.after(delay)

    def parse_error(self, response: httpx.Response, *, retryable: bool, redact: Redact) -> GatewayError:
        """The GatewayError the caller gets (the upstream's text redacted)."""
        status, label = response.status_code, self.label
        error = read_google_error(response)
        detail = f"{error.status or status}: {redact(error.message)}".strip().rstrip(":")
        message = f"The {label} refused the call ({detail})."
        if status in (429, 503, 529):
            return UpstreamOverloadedError(f"The {label} is overloaded or rate-limited ({detail}).",
                                           retryable=retryable, upstream_status=status)
        if status == 404:
            return UpstreamError(message, code="upstream_model_not_found", retryable=retryable, upstream_status=404)
        if status in (401, 403) or "API_KEY_INVALID" in error.reasons:
            # Google answers a bad API key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID
            return UpstreamError(f"The {label} refused the gateway's credentials ({error.status or status}).",
                                 code="upstream_auth_failed", retryable=retryable,
                                 upstream_status=401 if status == 400 else status)
        if status == 400:
            return UpstreamError(message, code="upstream_invalid_request", retryable=retryable, upstream_status=400)
        if status == 504:
            return UpstreamError(message, code="upstream_timeout", retryable=retryable, upstream_status=504)
        return UpstreamError(message, code="upstream_error", retryable=retryable, upstream_status=status)
