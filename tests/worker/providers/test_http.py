"""UpstreamClient: what is retried and after how long (statuses, ``Retry-After``,
``x-should-retry``, and the adapter's reading of its error body), bounded by attempts and time;
connection failures and timeouts; retryable parse errors; one credential refresh on 401; secrets
redacted from upstream messages; errors built complete, never altered; backoff with jitter.

The upstream is an httpx.MockTransport handler and the client gets a :class:`FakeClock`, which
records the delays instead of sleeping, so every wait the client decides is visible and nothing
waits for real. Error bodies are read by the real adapters.
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import random
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import httpx
import pytest

from core.errors import (
    ContentPolicyError,
    GatewayError,
    UpstreamError,
    UpstreamOverloadedError,
    UpstreamTimeoutError,
)
from tests.worker.providers.canned import google_error, quota_failure, retry_info
from worker.providers.clock import SystemClock
from worker.providers.gemini import GeminiAdapter
from worker.providers.http import (
    NO_HINT,
    RETRY_STATUSES,
    Redact,
    Redactor,
    RetryHint,
    RetryPolicy,
    UpstreamClient,
    UpstreamErrors,
    holding_answers,
    retry_decision,
)
from worker.providers.openai_images import OpenAIImagesAdapter
from worker.providers.vertex import VertexGeminiAdapter

URL = "https://upstream.test/v1/images/generations"

pytestmark = pytest.mark.anyio
Answer: TypeAlias = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]
OPENAI = OpenAIImagesAdapter()
GEMINI = GeminiAdapter()
VERTEX = VertexGeminiAdapter(project="p-1", location="global", version="v1")


class Upstream:
    """Serves ``answers`` in order (the last one again once they run out) and records requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


START = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
"""The fake clock's date: far from the real one, so a client reading the system clock fails."""


class FakeClock:
    """The client's clock, moved only by the client's sleeps and by the upstream (``advance``)."""

    def __init__(self, start: datetime = START) -> None:
        self.start = start
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


class Harness:
    def __init__(self, upstream: Upstream, policy: RetryPolicy, redact: Redactor | None = None,
                 clock: FakeClock | None = None) -> None:
        self.upstream = upstream
        self.clock = clock or FakeClock()
        self.client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=5.0, policy=policy, redact=redact,
                                     transport=httpx.MockTransport(upstream), clock=self.clock)

    @property
    def sleeps(self) -> list[float]:
        return self.clock.sleeps

    async def call(self, *, parse: Callable[[httpx.Response], Any] | None = None, errors: UpstreamErrors = OPENAI,
             on_unauthorized: Callable[[], None] | None = None) -> Any:
        async def build() -> httpx.Request:
            return httpx.Request("POST", URL, json={"prompt": "a fox"})

        async def refresh() -> None:
            assert on_unauthorized is not None
            on_unauthorized()

        return await self.client.call(
            build,
            parse or (lambda response: response.json()),
            errors=errors,
            on_unauthorized=refresh if on_unauthorized is not None else None,
            label="OpenAI Images API",
        )

    @property
    def attempts(self) -> int:
        return len(self.upstream.requests)


Make: TypeAlias = Callable[..., Harness]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    made: list[Harness] = []

    def factory(*answers: Answer, redact: Redactor | None = None, clock: FakeClock | None = None,
                **policy: Any) -> Harness:
        harness = Harness(Upstream(*answers), RetryPolicy(**{"max_attempts": 4, "budget_s": 600.0, **policy}),
                          redact, clock)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.client.aclose()


OK = httpx.Response(200, json={"created": 1, "data": []})


def openai_error(status: int, code: str | None = None, type_: str | None = None, message: str = "failed",
                 headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers,
                          json={"error": {"message": message, "type": type_, "param": None, "code": code}})


def in_jitter(delay: float, base: float) -> bool:
    return 0.75 * base <= delay <= base


# -- what is retried -------------------------------------------------------------------------


async def test_the_retried_statuses_are_the_documented_ones() -> None:
    assert frozenset({408, 409, 429, 500, 502, 503, 504, 529}) == RETRY_STATUSES


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
async def test_retryable_status_is_retried_then_succeeds(make: Make, status: int) -> None:
    harness = make(openai_error(status, code="whatever"), OK)

    assert await harness.call() == {"created": 1, "data": []}

    assert harness.attempts == 2
    assert len(harness.sleeps) == 1
    assert in_jitter(harness.sleeps[0], 1.0)  # first backoff: base 1 s, minus up to 25 %


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_error_is_not_retried(make: Make, status: int) -> None:
    harness = make(openai_error(status, code="bad"), OK)

    with pytest.raises(UpstreamError) as info:
        await harness.call()

    assert harness.attempts == 1
    assert harness.sleeps == []
    assert info.value.upstream_status == status
    assert info.value.retryable is False


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(503, UpstreamOverloadedError, "upstream_overloaded"), (500, UpstreamError, "upstream_error"),
     (529, UpstreamOverloadedError, "upstream_overloaded"), (408, UpstreamError, "upstream_error")],
)
async def test_retries_spent_raise_the_last_error_as_retryable(
    make: Make, status: int, error_type: type[UpstreamError], code: str
) -> None:
    harness = make(openai_error(status, message="busy"), max_attempts=3)

    with pytest.raises(error_type) as info:
        await harness.call()

    assert harness.attempts == 3
    assert len(harness.sleeps) == 2
    assert info.value.code == code
    assert info.value.retryable is True
    assert info.value.route_failed is True  # the fallback chain may take over


async def test_content_policy_refusal_is_never_retried(make: Make) -> None:
    harness = make(openai_error(400, code="moderation_blocked", type_="image_generation_user_error",
                                message="Your request was rejected by the safety system."), OK)

    with pytest.raises(ContentPolicyError) as info:
        await harness.call()

    assert harness.attempts == 1
    assert info.value.code == "moderation_blocked"


async def test_content_policy_refusal_is_not_retried_even_on_a_retryable_status(make: Make) -> None:
    harness = make(openai_error(409, code="moderation_blocked"), OK)
    with pytest.raises(ContentPolicyError):
        await harness.call()
    assert harness.attempts == 1


async def test_x_should_retry_false_stops_a_retryable_status(make: Make) -> None:
    harness = make(openai_error(503, headers={"x-should-retry": "false"}), OK)

    with pytest.raises(UpstreamOverloadedError) as info:
        await harness.call()

    assert harness.attempts == 1
    assert info.value.retryable is False


async def test_x_should_retry_true_retries_a_status_otherwise_final(make: Make) -> None:
    harness = make(openai_error(400, headers={"x-should-retry": "true"}), OK)

    assert await harness.call() == {"created": 1, "data": []}
    assert harness.attempts == 2


async def test_exhausted_openai_quota_is_not_retried(make: Make) -> None:
    harness = make(openai_error(429, code="insufficient_quota", type_="insufficient_quota",
                                message="You exceeded your current quota."), OK)

    with pytest.raises(UpstreamError) as info:
        await harness.call()

    assert harness.attempts == 1
    assert info.value.retryable is False
    assert info.value.upstream_status == 429


async def test_openai_rate_limit_is_retried(make: Make) -> None:
    harness = make(openai_error(429, code="rate_limit_exceeded", type_="requests",
                                headers={"retry-after": "2"}), OK)
    assert await harness.call() == {"created": 1, "data": []}
    assert harness.sleeps == [2.0]


async def test_google_daily_quota_is_not_retried(make: Make) -> None:
    daily = google_error(429, "RESOURCE_EXHAUSTED", details=[
        quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                                                     retry_info("3600s")])
    harness = make(daily, OK)

    with pytest.raises(UpstreamOverloadedError) as info:
        await harness.call(errors=GEMINI)

    assert harness.attempts == 1
    assert harness.sleeps == []
    assert info.value.retryable is False


async def test_google_daily_quota_lets_the_fallback_chain_take_over(make: Make) -> None:
    daily = google_error(429, "RESOURCE_EXHAUSTED", details=[quota_failure("GenerateRequestsPerDayPerProjectPerModel")])
    harness = make(daily)
    with pytest.raises(UpstreamError) as info:
        await harness.call(errors=GEMINI)
    assert harness.attempts == 1
    assert info.value.route_failed is True


async def test_google_per_minute_quota_is_retried_after_its_retry_delay(make: Make) -> None:
    per_minute = google_error(429, "RESOURCE_EXHAUSTED", details=[
        quota_failure("GenerateRequestsPerMinutePerProjectPerModel"),
        {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
        retry_info("34s")])
    harness = make(per_minute, OK)

    await harness.call(errors=GEMINI)

    assert harness.sleeps == [34.0]


# -- how long to wait ------------------------------------------------------------------------


async def test_retry_after_seconds(make: Make) -> None:
    harness = make(openai_error(503, headers={"retry-after": "7"}), OK)
    await harness.call()
    assert harness.sleeps == [7.0]


async def test_retry_after_fractional_seconds(make: Make) -> None:
    harness = make(openai_error(429, headers={"retry-after": "2.5"}), OK)
    await harness.call()
    assert harness.sleeps == [2.5]


def http_date(when: datetime) -> str:
    return email.utils.format_datetime(when, usegmt=True)


async def test_retry_after_http_date_counts_from_the_clocks_date(make: Make) -> None:
    harness = make(openai_error(503, headers={"retry-after": http_date(START + timedelta(seconds=30))}), OK)

    await harness.call()

    assert harness.sleeps == [30.0]  # from the injected clock's date, not the system's


async def test_retry_after_http_date_of_a_later_attempt_counts_from_then(make: Make) -> None:
    clock = FakeClock()
    deadline = http_date(START + timedelta(seconds=100))

    def slow_busy(request: httpx.Request) -> httpx.Response:
        clock.advance(40.0)  # the upstream takes 40 s to say it is busy until START + 100 s
        return openai_error(503, headers={"retry-after": deadline})

    harness = make(slow_busy, max_attempts=3, clock=clock)
    with pytest.raises(UpstreamOverloadedError):
        await harness.call()

    assert harness.sleeps == [60.0, 0.0]  # at 40 s: 60 s to go; at 140 s the date has passed


async def test_retry_after_http_date_in_the_past_means_now(make: Make) -> None:
    harness = make(openai_error(503, headers={"retry-after": http_date(START - timedelta(minutes=5))}), OK)
    await harness.call()
    assert harness.sleeps == [0.0]


async def test_retry_after_ms_is_preferred_over_retry_after(make: Make) -> None:
    harness = make(openai_error(429, headers={"retry-after-ms": "250", "retry-after": "7"}), OK)
    await harness.call()
    assert harness.sleeps == [0.25]


async def test_unreadable_retry_after_falls_back_to_backoff(make: Make) -> None:
    harness = make(openai_error(503, headers={"retry-after": "soon", "retry-after-ms": "x"}), OK)
    await harness.call()
    [delay] = harness.sleeps
    assert in_jitter(delay, 1.0)


@pytest.mark.parametrize("body_form", ["object", "streamed-array"])
async def test_google_retry_info_in_the_body(make: Make, body_form: str) -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE",
                       "details": [retry_info("1.5s")]}}
    body = error if body_form == "object" else [error]
    harness = make(httpx.Response(503, json=body), OK)

    await harness.call(errors=GEMINI)

    assert harness.sleeps == [1.5]


async def test_retry_after_header_wins_over_retry_info(make: Make) -> None:
    response = google_error(429, "RESOURCE_EXHAUSTED", details=[retry_info("30s")])
    response.headers["retry-after"] = "3"
    harness = make(response, OK)
    await harness.call(errors=GEMINI)
    assert harness.sleeps == [3.0]


@pytest.mark.parametrize(
    ("response", "hint", "retry", "delay"),
    [
        (openai_error(500), NO_HINT, True, None),
        (openai_error(400), NO_HINT, False, None),
        (openai_error(429, headers={"retry-after-ms": "1500"}), NO_HINT, True, 1.5),
        (httpx.Response(502, content=b"<html>Bad gateway</html>"), NO_HINT, True, None),
        (httpx.Response(404, content=b""), NO_HINT, False, None),
        (httpx.Response(503), RetryHint.after(0.5), True, 0.5),
        (httpx.Response(503, headers={"retry-after": "2"}), RetryHint.after(0.5), True, 2.0),  # the header wins
        (httpx.Response(400), RetryHint.after(0.5), False, None),  # a hint's delay never makes a 400 retried
        (httpx.Response(429), RetryHint.never("quota"), False, None),
        (httpx.Response(400, headers={"x-should-retry": "true"}), RetryHint.never("quota"), False, None),
        (httpx.Response(503, headers={"x-should-retry": "false"}), RetryHint.after(1.0), False, None),
    ],
)
async def test_retry_decision(response: httpx.Response, hint: RetryHint, retry: bool, delay: float | None) -> None:
    decision = retry_decision(response, hint, now=START)
    assert (decision.retry, decision.delay_s) == (retry, delay)


# -- bounds: attempts and total time ---------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
async def test_max_attempts_is_respected(make: Make, max_attempts: int) -> None:
    harness = make(openai_error(500), max_attempts=max_attempts)
    with pytest.raises(UpstreamError):
        await harness.call()
    assert harness.attempts == max_attempts
    assert len(harness.sleeps) == max_attempts - 1


async def test_retry_after_beyond_the_budget_stops_at_once(make: Make) -> None:
    harness = make(openai_error(429, headers={"retry-after": "20"}), OK, budget_s=10.0)

    with pytest.raises(UpstreamOverloadedError) as info:
        await harness.call()

    assert harness.attempts == 1
    assert harness.sleeps == []
    assert info.value.retryable is True  # retryable, just not within this call's budget


async def test_backoff_beyond_the_remaining_budget_stops(make: Make) -> None:
    harness = make(openai_error(500), max_attempts=10, budget_s=4.4, backoff_base_s=2.0)
    with pytest.raises(UpstreamError) as info:
        await harness.call()

    # attempt 1 waits 1.5-2 s; attempt 2 would wait 3-4 s more, past the 4.4 s budget: it stops
    assert harness.attempts == 2
    assert len(harness.sleeps) == 1 and in_jitter(harness.sleeps[0], 2.0)
    assert info.value.retryable is True


async def test_time_spent_in_attempts_counts_against_the_budget(make: Make) -> None:
    clock = FakeClock()

    def slow_failure(request: httpx.Request) -> httpx.Response:
        clock.advance(50.0)  # each attempt takes 50 s upstream
        return openai_error(503, headers={"retry-after": "1"})

    harness = make(slow_failure, max_attempts=10, budget_s=120.0, clock=clock)
    with pytest.raises(UpstreamOverloadedError):
        await harness.call()

    assert harness.attempts == 3  # 50 + 1 + 50 + 1 + 50 s: no room for another attempt within 120 s
    assert harness.sleeps == [1.0, 1.0]


# -- connection errors and timeouts ----------------------------------------------------------


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


async def test_connection_error_is_retried_then_succeeds(make: Make) -> None:
    harness = make(connect_error(), OK)
    assert await harness.call() == {"created": 1, "data": []}
    assert harness.attempts == 2
    assert len(harness.sleeps) == 1


async def test_connection_errors_surface_as_a_retryable_upstream_error(make: Make) -> None:
    harness = make(connect_error(), max_attempts=3)

    with pytest.raises(UpstreamError) as info:
        await harness.call()

    assert type(info.value) is UpstreamError
    assert harness.attempts == 3
    assert info.value.retryable is True
    assert info.value.route_failed is True
    assert info.value.code == "upstream_unreachable"
    assert "OpenAI Images API" in info.value.message
    assert "111" not in info.value.message  # the socket error's text stays out of the caller's message


@pytest.mark.parametrize("timeout", [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect timed out"),
                                     httpx.WriteTimeout("write timed out")])
async def test_timeouts_surface_as_a_retryable_timeout_error(
    make: Make, timeout: httpx.TimeoutException
) -> None:
    harness = make(timeout, max_attempts=2)

    with pytest.raises(UpstreamTimeoutError) as info:
        await harness.call()

    assert harness.attempts == 2
    assert info.value.retryable is True
    assert info.value.code == "upstream_timeout"
    assert info.value.status == 504
    assert "5 s" in info.value.message  # the read timeout


async def test_timeout_then_success(make: Make) -> None:
    harness = make(httpx.ReadTimeout("read timed out"), OK)
    assert await harness.call() == {"created": 1, "data": []}


async def test_remote_protocol_error_is_retried(make: Make) -> None:
    harness = make(httpx.RemoteProtocolError("peer closed connection"), OK)
    assert await harness.call() == {"created": 1, "data": []}
    assert harness.attempts == 2


class Trickle(httpx.AsyncByteStream):
    """An answer sent a few bytes at a time, ``pause_s`` apart: every read is well inside a read
    timeout, the whole answer takes ``pieces`` x ``pause_s``."""

    def __init__(self, pieces: int, pause_s: float) -> None:
        self.pieces, self.pause_s = pieces, pause_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body = json.dumps({"created": 1, "data": []}).encode().ljust(self.pieces)
        for i in range(self.pieces):
            if i:
                await asyncio.sleep(self.pause_s)
            yield body[i:i + 1] if i < self.pieces - 1 else body[i:]


def trickling_client(*, pieces: int, pause_s: float, read_timeout_s: float, policy: RetryPolicy,
                     concurrent_reads: int = 16) -> tuple[UpstreamClient, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=Trickle(pieces, pause_s))

    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=read_timeout_s, policy=policy,
                            concurrent_reads=concurrent_reads, transport=httpx.MockTransport(answer))
    return client, sent


async def _build() -> httpx.Request:
    return httpx.Request("POST", URL, json={"prompt": "a fox"})


async def test_an_answer_trickling_past_the_timeout_is_cut_off_and_retried() -> None:
    """Each piece comes 0.1 s after the last, well inside the read timeout, but the answer as a
    whole would take 6 s: each attempt ends at the 0.5 s timeout and the last one's error is raised."""
    client, sent = trickling_client(pieces=60, pause_s=0.1, read_timeout_s=0.5,
                                    policy=RetryPolicy(max_attempts=2, backoff_base_s=0.01))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(UpstreamTimeoutError) as info:
            await client.call(_build, lambda r: r.json(), errors=OPENAI, label="OpenAI Images API")
    finally:
        await client.aclose()
    assert len(sent) == 2
    assert loop.time() - started < 3.0  # two attempts of 0.5 s, not one of 6 s
    assert info.value.retryable is True and info.value.code == "upstream_timeout"
    # worded as a read timeout is: at a whole answer's limit, either may fire first
    assert info.value.message == "The OpenAI Images API did not answer within 0.5 s."


async def test_a_streamed_answer_ends_within_the_retry_budget_not_the_read_timeout() -> None:
    """A streamed answer's events come as the image is drawn: 0.1 s apart, inside the 2 s read
    timeout, it may take longer than that timeout as a whole, but not longer than the budget."""
    async def read_all(response: httpx.Response) -> bytes:
        return b"".join([chunk async for chunk in response.aiter_bytes()])

    async def call(pieces: int, budget_s: float) -> bytes:
        client, _ = trickling_client(pieces=pieces, pause_s=0.1, read_timeout_s=2.0,
                                     policy=RetryPolicy(max_attempts=1, budget_s=budget_s))
        try:
            return await client.call(_build, read_all, errors=OPENAI, stream=True, label="OpenAI Images API")
        finally:
            await client.aclose()

    assert json.loads(await call(pieces=25, budget_s=60.0)) == {"created": 1, "data": []}  # 2.4 s
    with pytest.raises(UpstreamTimeoutError) as info:
        await call(pieces=600, budget_s=1.0)  # 60 s
    assert "1 s" in info.value.message


async def test_waiting_for_a_place_among_the_answers_read_is_not_the_upstreams_time() -> None:
    """With one answer read at a time, the second waits ~1.2 s for the first to be read, then
    takes ~1.2 s itself: 2.4 s from its request, but 1.2 s of the upstream's, inside the 2 s."""
    client, sent = trickling_client(pieces=13, pause_s=0.1, read_timeout_s=2.0, concurrent_reads=1,
                                    policy=RetryPolicy(max_attempts=1))
    try:
        results = await asyncio.gather(*(client.call(_build, lambda r: r.json(), errors=OPENAI) for _ in range(2)))
    finally:
        await client.aclose()
    assert results == [{"created": 1, "data": []}] * 2
    assert len(sent) == 2


# -- parse errors ----------------------------------------------------------------------------


async def test_retryable_parse_error_is_retried(make: Make) -> None:
    harness = make(httpx.Response(200, json={"data": []}), httpx.Response(200, json={"data": [1]}))

    def parse(response: httpx.Response) -> Any:
        if not response.json()["data"]:
            raise UpstreamError("The model returned no image.", code="no_images_generated", retryable=True)
        return response.json()

    assert await harness.call(parse=parse) == {"data": [1]}
    assert harness.attempts == 2
    assert len(harness.sleeps) == 1


async def test_retryable_parse_error_every_time_raises_it(make: Make) -> None:
    harness = make(httpx.Response(200, json={}), max_attempts=2)

    def parse(response: httpx.Response) -> Any:
        raise UpstreamError("no image", code="no_images_generated", retryable=True)

    with pytest.raises(UpstreamError) as info:
        await harness.call(parse=parse)
    assert (harness.attempts, info.value.code) == (2, "no_images_generated")


@pytest.mark.parametrize(
    "error",
    [UpstreamError("broken", code="upstream_bad_response", retryable=False),
     ContentPolicyError("blocked")],
)
async def test_non_retryable_parse_error_is_raised_at_once(make: Make, error: GatewayError) -> None:
    harness = make(httpx.Response(200, json={}), OK)

    def parse(response: httpx.Response) -> Any:
        raise error

    with pytest.raises(type(error)) as info:
        await harness.call(parse=parse)
    assert info.value is error
    assert harness.attempts == 1
    assert harness.sleeps == []


# -- credentials -----------------------------------------------------------------------------


async def test_401_refreshes_credentials_once_then_retries(make: Make) -> None:
    tokens = iter(["old-token", "new-token"])
    current = {"token": next(tokens)}
    refreshed: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer new-token":
            return OK
        return google_error(401, "UNAUTHENTICATED")

    async def refresh() -> None:
        refreshed.append(1)
        current["token"] = next(tokens)

    upstream = Upstream(answer)
    harness = Harness(upstream, RetryPolicy(max_attempts=1))
    async def build() -> httpx.Request:
        return httpx.Request("POST", URL, headers={"Authorization": f"Bearer {current['token']}"})

    result = await harness.client.call(build, lambda response: response.json(), errors=VERTEX,
                                       on_unauthorized=refresh)
    await harness.client.aclose()

    assert result == {"created": 1, "data": []}
    assert refreshed == [1]
    assert [r.headers["authorization"] for r in upstream.requests] == ["Bearer old-token", "Bearer new-token"]
    assert harness.sleeps == []  # the refresh does not count as an attempt nor wait


async def test_401_twice_is_an_auth_failure_after_one_refresh(make: Make) -> None:
    refreshed: list[int] = []
    harness = make(google_error(401, "UNAUTHENTICATED"))

    with pytest.raises(UpstreamError) as info:
        await harness.call(errors=VERTEX,
                     on_unauthorized=lambda: refreshed.append(1))

    assert refreshed == [1]
    assert harness.attempts == 2
    assert (info.value.code, info.value.upstream_status) == ("upstream_auth_failed", 401)
    assert info.value.route_failed is True


async def test_401_without_a_refresher_is_final(make: Make) -> None:
    harness = make(openai_error(401, code="invalid_api_key"))
    with pytest.raises(UpstreamError) as info:
        await harness.call()
    assert harness.attempts == 1
    assert info.value.code == "upstream_auth_failed"


# -- secrets ---------------------------------------------------------------------------------


SECRET = "sk-proj-SECRET0123456789abcdef"


async def test_a_secret_echoed_by_the_upstream_is_redacted(make: Make) -> None:
    harness = make(openai_error(400, code="invalid_request", message=f"Malformed header value: Bearer {SECRET}."),
                   redact=Redactor([SECRET, "AIza-other-key"]))

    with pytest.raises(UpstreamError) as info:
        await harness.call()

    assert SECRET not in info.value.message
    assert SECRET not in repr(info.value)
    assert "Malformed header value: Bearer [redacted]." in info.value.message


async def test_a_redacted_error_does_not_carry_the_secret_in_its_str(make: Make) -> None:
    harness = make(openai_error(400, message=f"Malformed header value: Bearer {SECRET}."), redact=Redactor([SECRET]))
    with pytest.raises(UpstreamError) as info:
        await harness.call()
    assert SECRET not in str(info.value)
    assert SECRET not in "".join(str(a) for a in info.value.args)


async def test_a_secret_in_a_google_error_is_redacted(make: Make) -> None:
    key = "AIzaSyTESTKEY0123456789"
    harness = make(google_error(400, "INVALID_ARGUMENT", message=f"API key {key} not valid."),
                   redact=Redactor([key]))
    with pytest.raises(UpstreamError) as info:
        await harness.call(errors=GEMINI)
    assert key not in info.value.message
    assert "API key [redacted] not valid." in info.value.message


async def test_a_secret_in_a_retryable_error_is_redacted(make: Make) -> None:
    harness = make(openai_error(500, message=f"internal error for key {SECRET}"), max_attempts=2,
                   redact=Redactor([SECRET]))
    with pytest.raises(UpstreamError) as info:
        await harness.call()
    assert SECRET not in info.value.message
    assert "internal error for key [redacted]" in info.value.message


# -- errors are built complete, never altered -----------------------------------------------


class RecordingAdapter(OpenAIImagesAdapter):
    """The OpenAI Images adapter, keeping every error it built with a copy of what it held then."""

    def __init__(self) -> None:
        self.built: list[tuple[GatewayError, dict[str, object], tuple[object, ...]]] = []

    def parse_error(self, response: httpx.Response, *, retryable: bool, redact: Redact) -> GatewayError:
        error = super().parse_error(response, retryable=retryable, redact=redact)
        self.built.append((error, dict(vars(error)), error.args))
        return error


async def test_the_error_raised_after_retries_is_the_last_one_built_untouched(make: Make) -> None:
    adapter = RecordingAdapter()
    harness = make(openai_error(500, message=f"internal error for key {SECRET}"), max_attempts=3,
                   redact=Redactor([SECRET]))

    with pytest.raises(UpstreamError) as info:
        await harness.call(errors=adapter)

    assert len(adapter.built) == 3
    assert len({id(error) for error, _, _ in adapter.built}) == 3  # a fresh error for each attempt
    assert info.value is adapter.built[-1][0]
    for error, fields, args in adapter.built:
        assert (vars(error), error.args) == (fields, args)  # as built: the client changed nothing
    expected = "The OpenAI Images API failed (500: internal error for key [redacted])."
    assert (info.value.message, info.value.args, info.value.retryable) == (expected, (expected,), True)


async def test_a_final_error_is_built_final_and_redacted(make: Make) -> None:
    adapter = RecordingAdapter()
    harness = make(openai_error(400, message=f"bad key {SECRET}"), redact=Redactor([SECRET]))

    with pytest.raises(UpstreamError) as info:
        await harness.call(errors=adapter)

    [(error, fields, _)] = adapter.built
    assert info.value is error and vars(error) == fields
    assert (error.retryable, error.message) == (False, "The OpenAI Images API refused the call "
                                                       "(400: bad key [redacted]).")


async def test_redactor() -> None:
    redact = Redactor([SECRET, "AIzaKEY123", "", "abc", None])  # type: ignore[list-item]
    assert redact(f"a {SECRET} b AIzaKEY123 c {SECRET}") == "a [redacted] b [redacted] c [redacted]"
    assert redact("abc is too short to be a secret") == "abc is too short to be a secret"
    assert Redactor([])("nothing to hide") == "nothing to hide"


# -- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 9))
async def test_backoff_grows_with_jitter_and_is_capped(attempt: int) -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=30.0)
    random.seed(attempt)
    base = min(30.0, 2.0 ** (attempt - 1))
    delays = [policy.backoff(attempt) for _ in range(300)]
    assert all(in_jitter(d, base) for d in delays)
    assert max(delays) - min(delays) > 0.1 * base  # jittered, not a constant
    assert min(delays) < 0.8 * base and max(delays) > 0.95 * base  # spread over the whole range


async def test_backoff_through_the_client_doubles_each_attempt(make: Make) -> None:
    harness = make(openai_error(500), max_attempts=6, backoff_base_s=0.5, backoff_max_s=4.0)
    with pytest.raises(UpstreamError):
        await harness.call()
    bases = [0.5, 1.0, 2.0, 4.0, 4.0]
    assert len(harness.sleeps) == len(bases)
    for delay, base in zip(harness.sleeps, bases, strict=True):
        assert in_jitter(delay, base), (delay, base)


async def test_successful_call_sends_the_built_request(make: Make) -> None:
    harness = make(OK)
    await harness.call()
    [request] = harness.upstream.requests
    assert (request.method, str(request.url)) == ("POST", URL)
    assert json.loads(request.content) == {"prompt": "a fox"}
    assert harness.sleeps == []


# -- the system clock ------------------------------------------------------------------------


async def test_the_system_clock_tells_an_aware_date_and_a_monotonic_time() -> None:
    clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0.0)
    assert clock.monotonic() >= before
    assert clock.now().tzinfo is not None  # an HTTP-date Retry-After is aware: the two subtract
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5


# -- clients per host, bounded reads ------------------------------------------------------------


async def test_each_upstream_host_has_its_own_client() -> None:
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=5.0, policy=RetryPolicy(), max_connections=3)
    try:
        a = client._client_for(httpx.URL("https://a.test/v1/images/generations"))
        assert a is client._client_for(httpx.URL("https://a.test/v1/images/edits"))
        assert a is not client._client_for(httpx.URL("https://b.test/v1beta/models"))
        assert a is not client._client_for(httpx.URL("http://a.test/v1"))  # another scheme: another origin
    finally:
        await client.aclose()


class SlowBody(httpx.AsyncByteStream):
    """An answer whose body takes a while to read, counting the bodies being read at once."""

    reading = 0
    peak = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        SlowBody.reading += 1
        SlowBody.peak = max(SlowBody.peak, SlowBody.reading)
        try:
            yield b'{"created": 1, '
            await asyncio.sleep(0.03)
            yield b'"data": []}'
        finally:
            SlowBody.reading -= 1


async def test_at_most_concurrent_reads_answers_are_read_at_once() -> None:
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=5.0, policy=RetryPolicy(), concurrent_reads=2,
                            transport=httpx.MockTransport(lambda request: httpx.Response(200, stream=SlowBody())))

    async def build() -> httpx.Request:
        return httpx.Request("POST", URL, json={"prompt": "a fox"})

    try:
        results = await asyncio.gather(*(client.call(build, lambda r: r.json(), errors=OPENAI) for _ in range(10)))
    finally:
        await client.aclose()
    assert results == [{"created": 1, "data": []}] * 10
    assert SlowBody.peak == 2


async def test_an_answer_read_in_an_attempt_keeps_its_place_until_the_attempt_ends() -> None:
    """Inside holding_answers (the worker's run of an attempt), an answer read stays counted until
    the block ends (its images stored and recorded), so answers arriving faster than the worker
    records them wait in their sockets instead of piling up in memory."""
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=5.0, policy=RetryPolicy(), concurrent_reads=2,
                            transport=httpx.MockTransport(lambda request: httpx.Response(200, json={"data": []})))
    in_hand = peak = 0

    async def build() -> httpx.Request:
        return httpx.Request("POST", URL, json={"prompt": "a fox"})

    async def attempt() -> object:
        nonlocal in_hand, peak
        with holding_answers():
            result = await client.call(build, lambda r: r.json(), errors=OPENAI)
            in_hand += 1
            peak = max(peak, in_hand)
            await asyncio.sleep(0.02)  # storing and recording its images
            in_hand -= 1
        return result

    try:
        results = await asyncio.gather(*(attempt() for _ in range(10)))
    finally:
        await client.aclose()
    assert results == [{"data": []}] * 10
    assert peak == 2


async def test_an_answer_and_its_body_are_freed_as_the_call_returns_without_the_garbage_collector() -> None:
    """httpx binds an answer's stream to the answer, a reference cycle; the client breaks it, so a
    thousand answers ending together do not wait in memory for the collector's next pass."""
    body = b'{"data": [' + b'"x",' * 100_000 + b'"x"]}'
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=5.0, policy=RetryPolicy(),
                            transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    answers: list[weakref.ref[httpx.Response]] = []

    def parse(response: httpx.Response) -> int:
        answers.append(weakref.ref(response))
        return len(response.content)

    async def build() -> httpx.Request:
        return httpx.Request("POST", URL, json={"prompt": "a fox"})

    gc.disable()
    try:
        assert await client.call(build, parse, errors=OPENAI) == len(body)
        assert answers and answers[0]() is None, "the answer is kept alive by a reference cycle"
    finally:
        gc.enable()
        await client.aclose()
