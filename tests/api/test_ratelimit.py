"""Per-API-key rate limiting: the sliding log in Redis (the real server, database 5) and in memory.

Most scenarios run against both limiters. A scenario receives the limiter and ``advance(seconds)``:
the in-memory limiter's injected clock moves forward, while with Redis (whose server clock the script
reads) real time passes — scenarios that wait use a tiny window.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.ratelimit import (
    FailOpenRateLimiter,
    InMemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RateLimits,
    RedisRateLimiter,
    format_duration,
    limiter_for,
)
from tests.conftest import REDIS_HOST, REDIS_PORT, need_service

REDIS_DB = 5

Advance = Callable[[float], Awaitable[None]]
Scenario = Callable[[RateLimiter, Advance], Coroutine[Any, Any, Any]]


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    # redis-py's asyncio pool holds at most 100 connections by default and raises (not waits) beyond;
    # the concurrency tests want 200 checks in flight at once.
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, max_connections=256)
    try:
        yield client
    finally:
        await client.aclose()


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)


def run_on(backend: str, scenario: Scenario, *, window_s: float = 60.0) -> Any:
    if backend == "memory":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.now += seconds

        return asyncio.run(scenario(InMemoryRateLimiter(window_s=window_s, clock=clock), advance_clock))

    need_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"imagegate:test:rl:{uuid.uuid4().hex}:"

    async def advance_time(seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def main() -> Any:
        async with redis_client() as client:
            try:
                return await scenario(RedisRateLimiter(client, prefix=prefix, window_s=window_s), advance_time)
            finally:
                await delete_prefix(client, prefix)

    return asyncio.run(main())


BACKENDS = pytest.mark.parametrize("backend", ["memory", "redis"])


# ------------------------------------------------------------------------------------------------
# Both limiters


@BACKENDS
def test_rpm_allows_the_limit_then_refuses(backend: str) -> None:
    limits = RateLimits(rpm=3)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return [await limiter.check("key_a", images=1, limits=limits) for _ in range(4)]

    decisions = run_on(backend, scenario)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.headers["x-ratelimit-remaining-requests"] for d in decisions] == ["2", "1", "0", "0"]
    assert all(d.retry_after_s is None for d in decisions[:3])
    refused = decisions[3]
    assert refused.retry_after_s is not None
    assert 0 < refused.retry_after_s <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in refused.headers
    assert not any("images" in name for name in refused.headers)  # no image limit, no image headers


@BACKENDS
def test_images_per_minute_refusal_consumes_nothing(backend: str) -> None:
    limits = RateLimits(images_per_minute=10)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return [await limiter.check("key_a", images=n, limits=limits) for n in (8, 3, 2, 1)]

    eight, three, two, one = run_on(backend, scenario)
    assert eight.allowed and eight.headers["x-ratelimit-remaining-images"] == "2"
    assert not three.allowed
    assert three.retry_after_s is not None and 0 < three.retry_after_s <= 60
    assert three.headers["x-ratelimit-remaining-images"] == "2"  # nothing consumed by the refusal
    assert two.allowed and two.headers["x-ratelimit-remaining-images"] == "0"
    assert not one.allowed
    assert not any("requests" in name for name in eight.headers)  # no request limit, no request headers


@BACKENDS
def test_a_request_refused_by_one_dimension_consumes_neither(backend: str) -> None:
    limits = RateLimits(rpm=2, images_per_minute=10)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return [
            await limiter.check("key_a", images=9, limits=limits),  # allowed: 1 request, 9 images
            await limiter.check("key_a", images=2, limits=limits),  # images refuse: the request isn't counted
            await limiter.check("key_a", images=1, limits=limits),  # fits both: allowed
            await limiter.check("key_a", images=0, limits=limits),  # requests refuse
        ]

    first, by_images, fits, by_requests = run_on(backend, scenario)
    assert first.allowed
    assert not by_images.allowed
    assert by_images.headers["x-ratelimit-remaining-requests"] == "1"
    assert fits.allowed
    assert fits.headers["x-ratelimit-remaining-requests"] == "0"
    assert fits.headers["x-ratelimit-remaining-images"] == "0"
    assert not by_requests.allowed
    assert by_requests.retry_after_s is not None


@BACKENDS
def test_a_request_larger_than_the_limit_never_fits(backend: str) -> None:
    limits = RateLimits(images_per_minute=10)

    async def scenario(limiter: RateLimiter, advance: Advance) -> tuple[RateDecision, RateDecision]:
        return (
            await limiter.check("key_a", images=11, limits=limits),
            await limiter.check("key_a", images=10, limits=limits),
        )

    too_big, whole_budget = run_on(backend, scenario)
    assert not too_big.allowed
    assert too_big.retry_after_s is None  # no wait makes it fit
    assert too_big.headers["x-ratelimit-remaining-images"] == "10"
    assert whole_budget.allowed


@BACKENDS
def test_requests_are_allowed_again_once_the_window_passes(backend: str) -> None:
    limits = RateLimits(rpm=2, images_per_minute=4)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[bool]:
        seen = [(await limiter.check("key_a", images=2, limits=limits)).allowed for _ in range(3)]
        refused = await limiter.check("key_a", images=2, limits=limits)
        assert refused.retry_after_s is not None and refused.retry_after_s <= 1.0
        await advance(1.1)
        seen += [(await limiter.check("key_a", images=2, limits=limits)).allowed for _ in range(3)]
        return seen

    assert run_on(backend, scenario, window_s=1.0) == [True, True, False, True, True, False]


@BACKENDS
def test_the_window_slides(backend: str) -> None:
    """Entries leave one by one as each grows older than the window — not all at a boundary."""
    limits = RateLimits(rpm=2)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[bool]:
        seen = [(await limiter.check("key_a", images=0, limits=limits)).allowed]  # t = 0
        await advance(0.5)
        seen.append((await limiter.check("key_a", images=0, limits=limits)).allowed)  # t = 0.5
        seen.append((await limiter.check("key_a", images=0, limits=limits)).allowed)  # full
        await advance(0.6)  # t = 1.1: the first entry has left, the second has not
        seen.append((await limiter.check("key_a", images=0, limits=limits)).allowed)
        seen.append((await limiter.check("key_a", images=0, limits=limits)).allowed)
        return seen

    assert run_on(backend, scenario, window_s=1.0) == [True, True, False, True, False]


@BACKENDS
def test_concurrent_checks_admit_exactly_the_limit(backend: str) -> None:
    limits = RateLimits(rpm=50)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return await asyncio.gather(*(limiter.check("key_a", images=1, limits=limits) for _ in range(200)))

    decisions = run_on(backend, scenario)
    assert sum(d.allowed for d in decisions) == 50
    remaining = sorted(int(d.headers["x-ratelimit-remaining-requests"]) for d in decisions if d.allowed)
    assert remaining == list(range(50))  # each admission saw a distinct count


@BACKENDS
def test_concurrent_image_checks_admit_exactly_the_limit(backend: str) -> None:
    """200 concurrent requests of 4 images against 100 images a minute: 25 are admitted, so the
    images admitted are the limit exactly, neither more (an overshoot) nor fewer (a lost count)."""
    limits = RateLimits(images_per_minute=100)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return await asyncio.gather(*(limiter.check("key_a", images=4, limits=limits) for _ in range(200)))

    decisions = run_on(backend, scenario)
    assert 4 * sum(d.allowed for d in decisions) == 100
    assert all(d.retry_after_s is not None for d in decisions if not d.allowed)


@BACKENDS
def test_concurrent_checks_of_mixed_sizes_never_overshoot(backend: str) -> None:
    """Requests of 1 to 7 images at once, asking 340 images of a 100-image limit: the images
    admitted never exceed the limit, and every refused request really did not fit (the count only
    grows during the test, so a refused request does not fit what was admitted in the end either)."""
    limits = RateLimits(rpm=1000, images_per_minute=100)
    sizes = [1, 2, 3, 4, 7] * 20

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return await asyncio.gather(*(limiter.check("key_a", images=n, limits=limits) for n in sizes))

    decisions = run_on(backend, scenario)
    admitted = sum(n for n, d in zip(sizes, decisions, strict=True) if d.allowed)
    refused = [n for n, d in zip(sizes, decisions, strict=True) if not d.allowed]
    assert sum(sizes) > 100 and refused
    assert admitted <= 100
    assert all(admitted + n > 100 for n in refused)


@BACKENDS
def test_keys_are_independent(backend: str) -> None:
    limits = RateLimits(rpm=1, images_per_minute=5)

    async def scenario(limiter: RateLimiter, advance: Advance) -> list[bool]:
        return [
            (await limiter.check("key_a", images=5, limits=limits)).allowed,
            (await limiter.check("key_a", images=1, limits=limits)).allowed,
            (await limiter.check("key_b", images=5, limits=limits)).allowed,
            (await limiter.check("key_b", images=1, limits=limits)).allowed,
        ]

    assert run_on(backend, scenario) == [True, False, True, False]


@BACKENDS
def test_unlimited_keys_get_no_headers(backend: str) -> None:
    async def scenario(limiter: RateLimiter, advance: Advance) -> list[RateDecision]:
        return [await limiter.check("key_a", images=100, limits=RateLimits()) for _ in range(5)]

    for decision in run_on(backend, scenario):
        assert decision == RateDecision(allowed=True, retry_after_s=None, headers={})


@BACKENDS
def test_reset_headers(backend: str) -> None:
    limits = RateLimits(rpm=5, images_per_minute=20)

    async def scenario(limiter: RateLimiter, advance: Advance) -> RateDecision:
        return await limiter.check("key_a", images=4, limits=limits)

    decision = run_on(backend, scenario)
    assert decision.headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "1m0s",  # the full budget is back one window after this request
        "x-ratelimit-limit-images": "20",
        "x-ratelimit-remaining-images": "16",
        "x-ratelimit-reset-images": "1m0s",
    }


@BACKENDS
def test_negative_image_counts_are_rejected(backend: str) -> None:
    async def scenario(limiter: RateLimiter, advance: Advance) -> None:
        await limiter.check("key_a", images=-1, limits=RateLimits(images_per_minute=5))

    with pytest.raises(ValueError):
        run_on(backend, scenario)


# ------------------------------------------------------------------------------------------------
# In memory: exact timings through the injected clock


def test_in_memory_retry_after_and_reset_are_exact() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    limits = RateLimits(rpm=2, images_per_minute=10)

    async def scenario() -> None:
        assert (await limiter.check("key_a", images=8, limits=limits)).allowed  # t = 0
        clock.now += 10
        refused = await limiter.check("key_a", images=3, limits=limits)  # t = 10
        assert not refused.allowed
        assert refused.retry_after_s == pytest.approx(50.0)  # when the 8 images of t = 0 leave
        assert refused.headers["x-ratelimit-reset-images"] == "50s"
        assert (await limiter.check("key_a", images=2, limits=limits)).allowed  # t = 10: full
        clock.now += 5
        both = await limiter.check("key_a", images=1, limits=limits)  # t = 15
        assert not both.allowed
        # Requests free up at t = 60, images (the 1st of 10) too; the later of the two is the answer.
        assert both.retry_after_s == pytest.approx(45.0)
        assert both.headers["x-ratelimit-reset-requests"] == "55s"
        clock.now += 45  # t = 60: the t = 0 entries have expired
        again = await limiter.check("key_a", images=8, limits=limits)
        assert again.allowed
        assert again.headers["x-ratelimit-remaining-images"] == "0"

    asyncio.run(scenario())


def test_in_memory_retry_after_waits_for_the_oldest_units_that_must_leave() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    limits = RateLimits(images_per_minute=10)

    async def scenario() -> None:
        for n in (3, 3, 3):  # t = 0, 10, 20
            assert (await limiter.check("key_a", images=n, limits=limits)).allowed
            clock.now += 10
        refused = await limiter.check("key_a", images=5, limits=limits)  # t = 30: 9 used, needs 4 gone
        assert refused.retry_after_s == pytest.approx(40.0)  # the 4th oldest unit is from t = 10
        clock.now += 39.9
        assert not (await limiter.check("key_a", images=5, limits=limits)).allowed
        clock.now += 0.1
        assert (await limiter.check("key_a", images=5, limits=limits)).allowed

    asyncio.run(scenario())


def test_in_memory_forgets_idle_keys() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock=clock)
    limits = RateLimits(rpm=5, images_per_minute=5)

    async def scenario() -> None:
        for i in range(20):
            await limiter.check(f"key_{i}", images=1, limits=limits)
        clock.now += 61
        await limiter.check("key_new", images=1, limits=limits)

    asyncio.run(scenario())
    assert set(limiter._logs) == {("key_new", "requests"), ("key_new", "images")}


# ------------------------------------------------------------------------------------------------
# Redis specifics


def test_redis_limiters_in_different_processes_share_the_count() -> None:
    """Two clients (as two API processes would have) draw on one budget."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"imagegate:test:rl:{uuid.uuid4().hex}:"
    limits = RateLimits(rpm=4)

    async def scenario() -> list[bool]:
        async with redis_client() as one, redis_client() as two:
            try:
                a, b = RedisRateLimiter(one, prefix=prefix), RedisRateLimiter(two, prefix=prefix)
                return [(await limiter.check("key_a", images=1, limits=limits)).allowed for limiter in (a, b) * 3]
            finally:
                await delete_prefix(one, prefix)

    assert asyncio.run(scenario()) == [True, True, True, True, False, False]


def test_redis_keys_expire_after_the_window() -> None:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"imagegate:test:rl:{uuid.uuid4().hex}:"
    limits = RateLimits(rpm=10, images_per_minute=10)

    async def scenario() -> None:
        async with redis_client() as client:
            try:
                limiter = RedisRateLimiter(client, prefix=prefix, window_s=60)
                await limiter.check("key_a", images=3, limits=limits)
                requests_key, images_key = limiter.keys_for("key_a")
                assert requests_key == prefix + "{key_a}:requests"
                assert await client.zcard(requests_key) == 1
                assert await client.zcard(images_key) == 3  # one member per image
                for key in (requests_key, images_key):
                    assert 0 < await client.pttl(key) <= 60_000
                refused = await limiter.check("key_a", images=8, limits=limits)
                assert not refused.allowed
                assert await client.zcard(images_key) == 3  # the refusal wrote nothing

                short = RedisRateLimiter(client, prefix=prefix + "short:", window_s=0.2)
                await short.check("key_a", images=2, limits=limits)
                await asyncio.sleep(0.4)
                assert await client.exists(*short.keys_for("key_a")) == 0
            finally:
                await delete_prefix(client, prefix)

    asyncio.run(scenario())


def test_redis_limiter_reloads_a_script_the_server_forgot() -> None:
    """EVALSHA of an unknown script falls back to loading it (as after a Redis restart)."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"imagegate:test:rl:{uuid.uuid4().hex}:"

    async def scenario() -> bool:
        async with redis_client() as client:
            try:
                limiter = RedisRateLimiter(client, prefix=prefix)
                limiter._script.sha = "0" * 40  # a script the server has never seen
                decision = await limiter.check("key_a", images=1, limits=RateLimits(rpm=1))
                return decision.allowed
            finally:
                await delete_prefix(client, prefix)

    assert asyncio.run(scenario())


# ------------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.0004, "1ms"),  # rounded up: never tell a client to come back too early
        (0.02, "20ms"),
        (0.1, "100ms"),
        (1, "1s"),
        (12.5, "12.5s"),
        (8.64, "8.64s"),
        (59.999, "59.999s"),
        (60, "1m0s"),
        (86.4, "1m26.4s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_limits_reject_negative_values() -> None:
    with pytest.raises(ValueError):
        RateLimits(rpm=-1)
    with pytest.raises(ValueError):
        RateLimits(images_per_minute=-5)
    assert RateLimits().unlimited
    assert not RateLimits(rpm=0).unlimited


def test_zero_limit_refuses_everything_for_good() -> None:
    limiter = InMemoryRateLimiter(clock=FakeClock())
    decision = asyncio.run(limiter.check("key_a", images=0, limits=RateLimits(rpm=0)))
    assert not decision.allowed
    assert decision.retry_after_s is None


def test_limiter_for_picks_by_deployment_mode() -> None:
    assert isinstance(limiter_for(None), InMemoryRateLimiter)
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)  # no connection is made
    limiter = limiter_for(client)
    assert isinstance(limiter, FailOpenRateLimiter) and isinstance(limiter.shared, RedisRateLimiter)
    assert isinstance(limiter, RateLimiter)
