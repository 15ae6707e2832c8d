"""A refused request gives back what the limiter counted for it, in memory and in Redis; while
Redis cannot be reached, keys are limited in the process instead of refused."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from api.ratelimit import FailOpenRateLimiter, InMemoryRateLimiter, RateLimiter, RateLimits, RedisRateLimiter
from tests.conftest import REDIS_HOST, REDIS_PORT, need_service
from tests.harness import free_port

LIMITS = RateLimits(rpm=2, images_per_minute=5)


async def _refund_scenario(limiter: RateLimiter) -> None:
    first = await limiter.check("key_a", images=3, limits=LIMITS)
    assert first.allowed and first.admission is not None
    # the second request does not fit the images limit until the first gives its 3 back
    assert not (await limiter.check("key_a", images=4, limits=LIMITS)).allowed
    await limiter.refund(first.admission)
    second = await limiter.check("key_a", images=4, limits=LIMITS)
    assert second.allowed
    assert second.headers["x-ratelimit-remaining-images"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "1"  # the refunded request too
    # refunding twice gives nothing more back
    await limiter.refund(first.admission)
    assert not (await limiter.check("key_a", images=2, limits=LIMITS)).allowed


def test_a_refund_in_memory() -> None:
    asyncio.run(_refund_scenario(InMemoryRateLimiter()))


def test_a_refund_in_redis() -> None:
    need_service("Redis", REDIS_HOST, REDIS_PORT)

    async def scenario() -> None:
        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=5)
        prefix = f"imagegate:test:refund:{uuid.uuid4().hex}:"
        try:
            await _refund_scenario(FailOpenRateLimiter(RedisRateLimiter(client, prefix=prefix)))
        finally:
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(scenario())


def test_while_redis_cannot_be_reached_keys_are_limited_in_the_process(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        # nothing listens on this port: every call to Redis fails at once
        client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
        limiter = FailOpenRateLimiter(RedisRateLimiter(client))
        try:
            decisions = [await limiter.check("key_b", images=1, limits=RateLimits(rpm=3)) for _ in range(4)]
            assert [d.allowed for d in decisions] == [True, True, True, False]
            assert decisions[0].admission is not None
            await limiter.refund(decisions[0].admission)
            assert (await limiter.check("key_b", images=1, limits=RateLimits(rpm=3))).allowed
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert sum("Redis cannot be reached" in r.message for r in caplog.records) == 1  # said once, not per call
