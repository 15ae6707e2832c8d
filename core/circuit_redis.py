"""Circuits shared by every worker of a distributed gateway, in Redis.

Each route is one hash (``failures``, ``open_until``, ``probe_until``, times in milliseconds of
the callers' clocks) changed only by the Lua scripts below, so that concurrent workers see each
transition whole: the scripts are :mod:`core.circuit`'s pure transitions, step for step. The probe
is claimed inside the permit script (a compare-and-set on ``probe_until``, which is a lease: it
lapses if the prober dies), so exactly one caller gets it. A set indexes the routes that have a
circuit, for /health and the metrics.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from core.circuit import CircuitPolicy, CircuitStore, Clock, MemoryCircuitStore, Permit, RouteState, RouteView
from core.config import Settings

_PERMIT = """
local s = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'probe_until')
local failures = tonumber(s[1]) or 0
local open_until = tonumber(s[2]) or 0
local probe_until = tonumber(s[3]) or 0
local now = tonumber(ARGV[1])
if open_until == 0 then return {'call', failures} end
if now < open_until or probe_until > now then return {'skip', failures} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {'probe', failures}
"""

_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until')) or 0
redis.call('SADD', KEYS[2], ARGV[5])
if ARGV[4] == '1' or (open_until == 0 and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'open_until', tonumber(ARGV[1]) + tonumber(ARGV[3]), 'probe_until', 0)
end
return failures
"""


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisCircuitStore:
    """The circuits of every worker sharing ``namespace`` (the gateway's queue name)."""

    def __init__(
        self,
        client: aioredis.Redis,
        policy: CircuitPolicy,
        *,
        namespace: str,
        clock: Clock = time.time,
        owned: bool = True,
    ) -> None:
        self.policy = policy
        self._owned = owned
        self._redis = client
        self._clock = clock
        self._prefix = f"imagegate:{namespace}:circuit:"
        self._index = f"imagegate:{namespace}:circuits"
        self._permit = client.register_script(_PERMIT)
        self._failure = client.register_script(_FAILURE)

    async def permit(self, route: str) -> tuple[Permit, int]:
        granted, failures = await self._permit(
            keys=[self._prefix + route], args=[_ms(self._clock()), _ms(self.policy.probe_lease_s)]
        )
        return Permit(granted.decode() if isinstance(granted, bytes) else granted), int(failures)

    async def record(self, route: str, *, failed: bool, probe: bool) -> None:
        key = self._prefix + route
        if failed:
            await self._failure(
                keys=[key, self._index],
                args=[_ms(self._clock()), self.policy.failures, _ms(self.policy.cooldown_s), 1 if probe else 0, route],
            )
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(self._index, route)
            await pipe.execute()

    async def views(self) -> list[RouteView]:
        members = await self._redis.smembers(self._index)
        routes = sorted(r.decode() if isinstance(r, bytes) else r for r in members)
        if not routes:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for route in routes:
                pipe.hmget(self._prefix + route, "failures", "open_until", "probe_until")
            rows: list[list[Any]] = await pipe.execute()
        now = self._clock()
        views = []
        for route, (failures, open_until, probe_until) in zip(routes, rows, strict=True):
            if failures is None:
                continue
            state = RouteState(int(failures), int(open_until or 0) / 1000, int(probe_until or 0) / 1000)
            views.append(RouteView.of(route, state, now))
        return views

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()


def circuit_policy(settings: Settings) -> CircuitPolicy:
    return CircuitPolicy(
        failures=settings.circuit_failures,
        cooldown_s=settings.circuit_cooldown_s,
        probe_lease_s=settings.circuit_probe_lease_s,
    )


def open_circuits(settings: Settings, client: aioredis.Redis | None = None) -> CircuitStore:
    """The gateway's circuits: in Redis, shared by every worker, in distributed mode (on ``client``
    if given, else a client of its own); the process's own otherwise."""
    policy = circuit_policy(settings)
    if settings.redis_url:
        return RedisCircuitStore(
            client or aioredis.Redis.from_url(settings.redis_url),
            policy,
            namespace=settings.queue,
            owned=client is None,
        )
    return MemoryCircuitStore(policy)
