"""The sliding log in Redis, shared by every API process (see :mod:`api.ratelimit`)."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from api.ratelimit.base import (
    DEFAULT_WINDOW_S,
    DIMENSIONS,
    Admission,
    RateDecision,
    RateLimits,
    check_images,
    headers,
    limits_of,
)

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
        self._client = client
        self._script = client.register_script(_LUA)

    def keys_for(self, key_id: str) -> list[str]:
        base = f"{self.prefix}{{{key_id}}}:"
        return [base + dimension for dimension in DIMENSIONS]

    async def check(self, key_id: str, *, images: int, limits: RateLimits) -> RateDecision:
        check_images(images)
        if limits.unlimited:
            return RateDecision(allowed=True)
        rpm, ipm = limits_of(limits)
        uid = uuid.uuid4().hex
        raw = await self._script(
            keys=self.keys_for(key_id),
            args=[
                self.window_ms,
                -1 if rpm is None else rpm,
                -1 if ipm is None else ipm,
                images,
                uid,
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
        response_headers = headers(limits, (remaining[0], remaining[1]), (reset_s[0], reset_s[1]))
        if allowed:
            return RateDecision(allowed=True, headers=response_headers,
                                admission=Admission(key_id=key_id, uid=uid, images=images, limits=limits, via=self))
        retry_after = None if -2 in retries else max(retries) / 1000
        return RateDecision(allowed=False, retry_after_s=retry_after, headers=response_headers)

    async def refund(self, admission: Admission) -> None:
        requests_key, images_key = self.keys_for(admission.key_id)
        async with self._client.pipeline(transaction=True) as pipe:
            if admission.limits.rpm is not None:
                pipe.zrem(requests_key, f"{admission.uid}:1")
            if admission.limits.images_per_minute is not None and admission.images:
                pipe.zrem(images_key, *[f"{admission.uid}:{i}" for i in range(1, admission.images + 1)])
            await pipe.execute()
