"""OpenAI's error answers, shared by the OpenAI Images adapter and the OpenAI-compatible chat one.

OpenAI answers a failure with ``{"error": {message, type, param, code}}``
(https://platform.openai.com/docs/guides/error-codes). What it means beyond the status:

- ``insufficient_quota`` (as ``code`` or ``type``) on a 429: the account's credit is spent, so
  no retry helps (another route of the fallback chain may still serve the request);
- ``moderation_blocked`` / ``content_policy_violation``: the safety system refused the prompt; a
  content-policy error for the caller, never retried.
"""

from __future__ import annotations

import json

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ContentPolicyError, GatewayError, UpstreamError, UpstreamOverloadedError
from worker.providers.http import NO_HINT, Redact, RetryHint

MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


class OpenAIError(BaseModel):
    """The ``error`` object of an OpenAI answer; empty when the body is not one."""

    model_config = ConfigDict(extra="ignore")
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | None = None


def read_openai_error(response: httpx.Response) -> OpenAIError:
    try:
        return OpenAIError.model_validate(json.loads(response.content or b"{}").get("error", {}))
    except (ValueError, ValidationError, AttributeError):
        return OpenAIError()


class OpenAIErrors:
    """The error half of an adapter for an OpenAI-shaped API; the adapter names itself in ``label``."""

    label: str

    def retry_hint(self, response: httpx.Response) -> RetryHint:
        error = read_openai_error(response)
        if error.code in MODERATION_CODES:
            return RetryHint.never("refused by the upstream's safety system")
        if response.status_code == 429 and "insufficient_quota" in (error.code, error.type):
            return RetryHint.never("upstream quota exhausted")
        return NO_HINT

    def parse_error(self, response: httpx.Response, *, retryable: bool, redact: Redact) -> GatewayError:
        """The GatewayError the caller gets (the upstream's text redacted)."""
        status, label = response.status_code, self.label
        error = read_openai_error(response)
        text = redact(error.message)
        detail = f"{error.code or error.type or status}: {text}".strip().rstrip(":")
        if error.code in MODERATION_CODES:
            return ContentPolicyError(text or "The request was rejected by the upstream's safety system.",
                                      code=error.code)
        if status in (429, 503, 529):
            return UpstreamOverloadedError(f"The {label} is overloaded or rate-limited ({detail}).",
                                           retryable=retryable, upstream_status=status)
        if status in (401, 403):
            return UpstreamError(f"The {label} refused the gateway's credentials ({error.code or status}).",
                                 code="upstream_auth_failed", retryable=retryable, upstream_status=status)
        if status == 404:
            return UpstreamError(f"The {label} does not know the model ({detail}).",
                                 code="upstream_model_not_found", retryable=retryable, upstream_status=404)
        if status == 400:
            return UpstreamError(f"The {label} refused the call ({detail}).", code="upstream_invalid_request",
                                 retryable=retryable, upstream_status=400)
        return UpstreamError(f"The {label} failed ({detail}).", code="upstream_error", retryable=retryable,
                             upstream_status=status)
