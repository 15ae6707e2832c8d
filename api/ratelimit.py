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

Headers follow OpenAI's: ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` (after this request) and
``x-ratelimit-reset-*`` — the time until the log is empty again, i.e. the full budget is back (OpenAI:
"until the rate limit resets to its initial state") — formatted like ``"1s"``, ``"6m0s"``, ``"12.5s"``,
``"20ms"``; ``*`` is ``requests`` or ``images``, and only dimensions with a limit get headers.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

__all__ = [
    "InMemoryRateLimiter",
    "RateDecision",
    "RateLimiter",
    "RateLimits",
    "RedisRateLimiter",
    "format_duration",
    "limiter_for",
]

DEFAULT_WINDOW_S = 60.0
DIMENSIONS = ("requests", "images")


@dataclass(frozen=True)
class RateLimits:
    """Limits of one API key; ``None`` means unlimited."""

    rpm: int | None = None
    images_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "images_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, not {value}")

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.images_per_minute is None


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float | None = None
    """When refused: seconds until the request would fit; ``None`` if allowed, or if it never can
    (it asks for more than the limit)."""
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class RateLimiter(Protocol):
    async def check(self, key_id: str, *, images: int, limits: RateLimits) -> RateDecision:
        """Count the request (1) and its ``images`` against ``key_id``'s limits — both, or nothing."""
        ...


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it (Go's ``time.Duration``), rounded up to ms.

    >>> [format_duration(s) for s in (0, 0.02, 1, 12.5, 60, 360, 3723.25)]
    ['0s', '20ms', '1s', '12.5s', '1m0s', '6m0s', '1h2m3.25s']
    """
    ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    text = f"{secs}.{frac:03d}".rstrip("0") + "s" if frac else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _check_images(images: int) -> None:
    if images < 0:
        raise ValueError(f"images must be >= 0, not {images}")


def _limits_of(limits: RateLimits) -> tuple[int | None, int | None]:
    return limits.rpm, limits.images_per_minute


def _headers(limits: RateLimits, remaining: tuple[int, int], reset_s: tuple[float, float]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for i, (dimension, limit) in enumerate(zip(DIMENSIONS, _limits_of(limits), strict=True)):
        if limit is None:
            continue
        headers[f"x-ratelimit-limit-{dimension}"] = str(limit)
        headers[f"x-ratelimit-remaining-{dimension}"] = str(max(0, remaining[i]))
        headers[f"x-ratelimit-reset-{dimension}"] = format_duration(reset_s[i])
    return headers


# --------------------------------------------------------------------------------------------------
# Redis

# KEYS: requests log, images log.  ARGV: window ms, request limit, image limit (-1 = unlimited), images,
# a unique id for this request's members.
# Returns {allowed, then per dimension: in-window count before, reset ms, retry ms (-1 fits, -2 never)}.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local costs = {1, tonumber(ARGV[4])}
local uid = ARGV[5]
local used = {0, 0}
local retry = {-1, -1}
local allowed = 1
for d = 1, 2 do
  if limits[d] >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[d], '-inf', now - window)
    used[d] = redis.call('ZCARD', KEYS[d])
    local excess = used[d] + costs[d] - limits[d]
    if excess > 0 then
      allowed = 0
      if costs[d] > limits[d] then
        retry[d] = -2
      else
        local oldest = redis.call('ZRANGE', KEYS[d], excess - 1, excess - 1, 'WITHSCORES')
        retry[d] = math.max(1, tonumber(oldest[2]) + window - now)
      end
    end
  end
end
local result = {allowed}
for d = 1, 2 do
  local reset = 0
  if limits[d] >= 0 then
    if allowed == 1 and costs[d] > 0 then
      local batch = {}
      for i = 1, costs[d] do
        batch[#batch + 1] = now
        batch[#batch + 1] = uid .. ':' .. i
        if #batch >= 1000 or i == costs[d] then
          redis.call('ZADD', KEYS[d], unpack(batch))
          batch = {}
        end
      end
      redis.call('PEXPIRE', KEYS[d], window)
    end
    local newest = redis.call('ZRANGE', KEYS[d], -1, -1, 'WITHSCORES')
    if newest[2] then
      reset = math.min(window, math.max(0, tonumber(newest[2]) + window - now))
    end
  end
  result[#result + 1] = used[d]
  result[#result + 1] = reset
  result[#result + 1] = retry[d]
end
return result
"""


class RedisRateLimiter:
    """The sliding log in Redis, shared by every API process (see the module docstring)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "imagegate:rl:", window_s: float = DEFAULT_WINDOW_S
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.prefix = prefix
        self.window_ms = max(1, round(window_s * 1000))
        # EVALSHA, falling back to SCRIPT LOAD + EVALSHA when the server does not know the script.
        self._script = client.register_script(_LUA)

    def keys_for(self, key_id: str) -> list[str]:
        base = f"{self.prefix}{{{key_id}}}:"
        return [base + dimension for dimension in DIMENSIONS]

    async def check(self, key_id: str, *, images: int, limits: RateLimits) -> RateDecision:
        _check_images(images)
        if limits.unlimited:
            return RateDecision(allowed=True)
        rpm, ipm = _limits_of(limits)
        raw = await self._script(
            keys=self.keys_for(key_id),
            args=[
                self.window_ms,
                -1 if rpm is None else rpm,
                -1 if ipm is None else ipm,
                images,
                uuid.uuid4().hex,
            ],
        )
        values = [int(v) for v in raw]
        allowed = values[0] == 1
        costs = (1, images)
        remaining = [0, 0]
        reset_s = [0.0, 0.0]
        retries: list[int] = []
        for i, limit in enumerate((rpm, ipm)):
            used, reset_ms, retry_ms = values[1 + 3 * i : 4 + 3 * i]
            if limit is None:
                continue
            remaining[i] = limit - used - (costs[i] if allowed else 0)
            reset_s[i] = reset_ms / 1000
            if retry_ms != -1:
                retries.append(retry_ms)
        headers = _headers(limits, (remaining[0], remaining[1]), (reset_s[0], reset_s[1]))
        if allowed:
            return RateDecision(allowed=True, headers=headers)
        retry_after = None if -2 in retries else max(retries) / 1000
        return RateDecision(allowed=False, retry_after_s=retry_after, headers=headers)


# --------------------------------------------------------------------------------------------------
# In memory


class _Log:
    """One key's log for one dimension: ``(stamp, units)`` oldest first, and their total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def trim(self, horizon: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]

    def free_at(self, excess: int) -> float:
        """The stamp of the ``excess``-th oldest unit (``1 <= excess <= total``)."""
        seen = 0
        for stamp, units in self.entries:
            seen += units
            if seen >= excess:
                return stamp
        raise AssertionError("excess exceeds the log")  # pragma: no cover


class InMemoryRateLimiter:
    """The same sliding log in one process (embedded mode); ``clock`` is monotonic seconds."""

    def __init__(self, *, window_s: float = DEFAULT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._clock = clock
        self._logs: dict[tuple[str, str], _Log] = {}
        self._lock = asyncio.Lock()
        self._next_sweep = clock() + window_s

    async def check(self, key_id: str, *, images: int, limits: RateLimits) -> RateDecision:
        _check_images(images)
        if limits.unlimited:
            return RateDecision(allowed=True)
        async with self._lock:
            return self._check(key_id, images, limits)

    def _check(self, key_id: str, images: int, limits: RateLimits) -> RateDecision:
        now = self._clock()
        window = self.window_s
        horizon = now - window
        self._sweep(now, horizon)
        costs = (1, images)
        logs: list[_Log | None] = []
        retries: list[float | None] = []
        for dimension, limit, cost in zip(DIMENSIONS, _limits_of(limits), costs, strict=True):
            if limit is None:
                logs.append(None)
                continue
            log = self._logs.get((key_id, dimension)) or _Log()
            log.trim(horizon)
            logs.append(log)
            excess = log.total + cost - limit
            if excess > 0:
                retries.append(None if cost > limit else max(0.001, log.free_at(excess) + window - now))
        allowed = not retries
        remaining = [0, 0]
        reset_s = [0.0, 0.0]
        for i, (dimension, maybe_log, limit, cost) in enumerate(
            zip(DIMENSIONS, logs, _limits_of(limits), costs, strict=True)
        ):
            if maybe_log is None or limit is None:
                continue
            log = maybe_log
            if allowed and cost > 0:
                log.entries.append((now, cost))
                log.total += cost
            if log.entries:
                self._logs[(key_id, dimension)] = log
                reset_s[i] = min(window, max(0.0, log.entries[-1][0] + window - now))
            else:
                self._logs.pop((key_id, dimension), None)
            remaining[i] = limit - log.total
        headers = _headers(limits, (remaining[0], remaining[1]), (reset_s[0], reset_s[1]))
        if allowed:
            return RateDecision(allowed=True, headers=headers)
        retry_after = None if None in retries else max(r for r in retries if r is not None)
        return RateDecision(allowed=False, retry_after_s=retry_after, headers=headers)

    def _sweep(self, now: float, horizon: float) -> None:
        """Once a window, drop the logs of idle keys (what key expiry does in Redis)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window_s
        for name, log in list(self._logs.items()):
            log.trim(horizon)
            if not log.entries:
                del self._logs[name]


def limiter_for(redis_client: aioredis.Redis | None) -> RateLimiter:
    """The shared Redis limiter in distributed mode, the in-process one in embedded mode."""
    if redis_client is not None:
        return RedisRateLimiter(redis_client)
    return InMemoryRateLimiter()
