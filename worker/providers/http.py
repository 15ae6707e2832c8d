"""The one place that sends to upstreams: timeouts, retries, Retry-After, error mapping.

An image call is slow (5-130 s), so the connect timeout is short and the read timeout long.
Retries follow wire-formats §9: 408, 409, 429, 500, 502, 503, 504, 529 and connection errors are
retried with exponential backoff and jitter, honouring ``retry-after-ms``, ``Retry-After``
(seconds or an HTTP date), Google's ``RetryInfo.retryDelay`` and ``x-should-retry``; 400, 401,
403, 404, a daily quota, an exhausted OpenAI quota and a content-policy block are not. Attempts and
total time are bounded. Upstream keys never reach a log line or an error message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx

from core.errors import ContentPolicyError, GatewayError, UpstreamError, UpstreamTimeoutError
from worker.providers.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    budget_s: float = 600.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base x 2^(attempt-1), capped, minus up to 25 %."""
        delay = min(self.backoff_max_s, self.backoff_base_s * (2.0 ** (attempt - 1)))
        return delay * random.uniform(0.75, 1.0)


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float | None = None
    reason: str = ""


def _header_delay(headers: httpx.Headers, *, now: datetime) -> float | None:
    """The wait ``retry-after-ms`` or ``Retry-After`` asks for; an HTTP date counts from ``now``."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _body(response: httpx.Response) -> dict[str, object]:
    try:
        data = json.loads(response.content or b"null")
    except ValueError:
        return {}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Google's streamed-array error form
    return data if isinstance(data, dict) else {}


def _google_details(body: dict[str, object]) -> list[dict[str, object]]:
    error = body.get("error")
    if not isinstance(error, dict):
        return []
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _google_retry_delay(body: dict[str, object]) -> float | None:
    for detail in _google_details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            text = str(detail.get("retryDelay", ""))
            if text.endswith("s"):
                try:
                    return max(0.0, float(text[:-1]))
                except ValueError:
                    return None
    return None


def _google_daily_quota(body: dict[str, object]) -> bool:
    for detail in _google_details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            violations = detail.get("violations")
            if isinstance(violations, list):
                for violation in violations:
                    if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                        return True
    return False


def retry_decision(response: httpx.Response, *, now: datetime) -> RetryDecision:
    """Whether a non-2xx answer is worth another attempt, and after how long (wire-formats §9.1)."""
    status = response.status_code
    should = response.headers.get("x-should-retry", "").lower()
    body = _body(response)
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    assert isinstance(error, dict)
    if should == "false":
        return RetryDecision(False, reason="x-should-retry: false")
    if status == 429 and (error.get("code") == "insufficient_quota" or error.get("type") == "insufficient_quota"):
        return RetryDecision(False, reason="upstream quota exhausted")
    if status == 429 and _google_daily_quota(body):
        return RetryDecision(False, reason="upstream daily quota exhausted")
    if status in RETRY_STATUSES or should == "true":
        delay = _header_delay(response.headers, now=now)
        if delay is None:
            delay = _google_retry_delay(body)
        return RetryDecision(True, delay, reason=f"HTTP {status}")
    return RetryDecision(False, reason=f"HTTP {status}")


class Redactor:
    """Removes configured secrets from any text that may reach a log or a caller."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


class UpstreamClient:
    """A shared, thread-safe HTTP client for every provider of a worker process."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        policy: RetryPolicy,
        max_connections: int = 200,
        redact: Redactor | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.policy = policy
        self.read_timeout_s = read_timeout_s
        self.redact = redact or Redactor([])
        self.clock = clock
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        build: Callable[[], httpx.Request],
        parse: Callable[[httpx.Response], T],
        *,
        error_from: Callable[[httpx.Response], GatewayError],
        on_unauthorized: Callable[[], None] | None = None,
        label: str = "upstream",
    ) -> T:
        """Send ``build()``, retrying per the policy, and return ``parse(response)``.

        ``error_from`` renders a non-2xx answer as a GatewayError (the provider knows its error
        shape); ``parse`` may itself raise a retryable UpstreamError (no image, broken body).
        ``on_unauthorized`` refreshes credentials once on a 401 (Vertex OAuth tokens).
        """
        policy, clock = self.policy, self.clock
        deadline = clock.monotonic() + policy.budget_s
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            delay: float | None = None
            try:
                response = self._client.send(build())
            except httpx.TimeoutException:
                error: GatewayError = UpstreamTimeoutError(
                    f"The {label} did not answer within {self.read_timeout_s:g} s.", retryable=True)
            except httpx.TransportError as exc:
                error = UpstreamError(f"Could not reach the {label}: {type(exc).__name__}.",
                                      retryable=True, code="upstream_unreachable")
            else:
                if response.is_success:
                    try:
                        return parse(response)
                    except UpstreamError as exc:
                        error = exc
                        if not exc.retryable:
                            raise
                else:
                    if response.status_code == 401 and on_unauthorized is not None and not refreshed:
                        refreshed = True
                        on_unauthorized()
                        attempt -= 1
                        continue
                    error = error_from(response)
                    error.message = self.redact(error.message)
                    error.args = (error.message,)
                    decision = retry_decision(response, now=clock.now())
                    if isinstance(error, ContentPolicyError) or not decision.retry:
                        raise error
                    error.retryable = True  # type: ignore[misc]
                    delay = decision.delay_s
            log.info("%s attempt %d failed: %s", label, attempt, error.code)
            if attempt >= policy.max_attempts:
                raise error
            wait = delay if delay is not None else policy.backoff(attempt)
            if clock.monotonic() + wait > deadline:
                raise error
            clock.sleep(wait)
