"""Per-API-key rate limiting: requests per minute and images per minute.

Algorithm — a weighted sliding log, one log per API key and dimension:

* every admitted request adds one entry to the key's *requests* log and ``n`` entries (one per image)
  to its *images* log, each stamped with the admission time;
* an entry counts while it is younger than the window (``window_s``, 60 s in production); at time
  ``now`` it has expired once ``stamp <= now - window``;
* a request fits a dimension when ``in_window + cost <= limit``, and it is admitted — and only then
  recorded, in both dimensions at once — when it fits **every** limited dimension. A refused request
  consumes nothing;
* when it does not fit, ``excess = in_window + cost - limit`` of the oldest entries must expire first,
  so it fits once the ``excess``-th oldest entry does: ``retry_after = stamp[excess-1] + window - now``
  (the largest over the refusing dimensions). A request larger than the limit itself never fits:
  ``retry_after_s`` is then ``None`` (the caller should answer it as a bad request, not "retry").

A sliding log is exact (never more than ``limit`` units in any window of ``window_s``, no burst at a
fixed-window boundary) and gives an exact retry time. Its memory is bounded by the limit: a log never
holds more than ``limit`` live entries. Storing one entry per image (rather than one weighted entry per
request) keeps "the k-th oldest unit" a single ``ZRANGE`` by rank in Redis.

``RedisRateLimiter`` keeps each log in a sorted set (member = unique id, score = Redis server time in
ms) and runs the whole check — trim, count, decide, record — in one Lua script, so it is atomic across
every API process, and all of them agree on the time whatever their own clocks say (the script reads
``redis.call('TIME')``). Keys expire one window after their newest entry. Both keys of an API key share
a ``{key_id}`` hash tag, so the script also runs on Redis Cluster. An unlimited dimension is not
recorded at all (a limit added later starts from an empty log).

``InMemoryRateLimiter`` is the same algorithm in Python for embedded mode (one process), with an
injectable monotonic clock.

An admitted request that is refused later (its budget, one of its images) gets its units back
(:meth:`RateLimiter.refund`): only requests that become jobs use up a key's allowance.

While Redis cannot be reached, :class:`FailOpenRateLimiter` keeps limiting with the in-process log
of each API process instead of refusing: a key is then limited per process (with N API processes,
up to N times its limit in all) until Redis answers again; keys are never refused because Redis is
down.

Headers follow OpenAI's: ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` (after this request) and
``x-ratelimit-reset-*`` — the time until the log is empty again, i.e. the full budget is back (OpenAI:
"until the rate limit resets to its initial state") — formatted like ``"1s"``, ``"6m0s"``, ``"12.5s"``,
``"20ms"``; ``*`` is ``requests`` or ``images``, and only dimensions with a limit get headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import redis.exceptions

from api.ratelimit.base import (
    DEFAULT_WINDOW_S,
    Admission,
    RateDecision,
    RateLimiter,
    RateLimits,
    format_duration,
)
from api.ratelimit.local import InMemoryRateLimiter
from api.ratelimit.shared import RedisRateLimiter

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WINDOW_S",
    "Admission",
    "FailOpenRateLimiter",
    "InMemoryRateLimiter",
    "RateDecision",
    "RateLimiter",
    "RateLimits",
    "RedisRateLimiter",
    "format_duration",
    "limiter_for",
]


class FailOpenRateLimiter:
    """The shared Redis limiter, and while Redis cannot be reached, this process's own log."""

    def __init__(self, shared: RedisRateLimiter, local: InMemoryRateLimiter | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.shared = shared
        self.local = local or InMemoryRateLimiter()
        self._clock = clock
        self._warned_at: float | None = None

    async def check(self, key_id: str, *, images: int, limits: RateLimits) -> RateDecision:
        try:
            return await self.shared.check(key_id, images=images, limits=limits)
        except (redis.exceptions.RedisError, OSError) as exc:
            now = self._clock()
            if self._warned_at is None or now - self._warned_at > 60:
                log.warning("rate limits: Redis cannot be reached (%s); limiting in this process until it answers",
                            type(exc).__name__)
                self._warned_at = now
            return await self.local.check(key_id, images=images, limits=limits)

    async def refund(self, admission: Admission) -> None:
        limiter = admission.via if isinstance(admission.via, RedisRateLimiter | InMemoryRateLimiter) else None
        if limiter is None:
            return
        try:
            await limiter.refund(admission)
        except (redis.exceptions.RedisError, OSError):
            log.warning("rate limits: could not give back an admission while Redis cannot be reached")


def limiter_for(redis_client: aioredis.Redis | None) -> RateLimiter:
    """The shared Redis limiter in distributed mode (failing open to this process's own while
    Redis cannot be reached), the in-process one in embedded mode."""
    if redis_client is not None:
        return FailOpenRateLimiter(RedisRateLimiter(redis_client))
    return InMemoryRateLimiter()
