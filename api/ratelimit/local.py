"""The sliding log in one process (embedded mode, and each API process while Redis is away)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

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
        check_images(images)
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
        for dimension, limit, cost in zip(DIMENSIONS, limits_of(limits), costs, strict=True):
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
        appended: list[tuple[str, tuple[float, int]]] = []
        for i, (dimension, maybe_log, limit, cost) in enumerate(
            zip(DIMENSIONS, logs, limits_of(limits), costs, strict=True)
        ):
            if maybe_log is None or limit is None:
                continue
            log = maybe_log
            if allowed and cost > 0:
                log.entries.append((now, cost))
                log.total += cost
                appended.append((dimension, (now, cost)))
            if log.entries:
                self._logs[(key_id, dimension)] = log
                reset_s[i] = min(window, max(0.0, log.entries[-1][0] + window - now))
            else:
                self._logs.pop((key_id, dimension), None)
            remaining[i] = limit - log.total
        response_headers = headers(limits, (remaining[0], remaining[1]), (reset_s[0], reset_s[1]))
        if allowed:
            return RateDecision(allowed=True, headers=response_headers, admission=Admission(
                key_id=key_id, uid="", images=images, limits=limits, entries=tuple(appended), via=self))
        retry_after = None if None in retries else max(r for r in retries if r is not None)
        return RateDecision(allowed=False, retry_after_s=retry_after, headers=response_headers)

    async def refund(self, admission: Admission) -> None:
        async with self._lock:
            for dimension, entry in admission.entries:
                log = self._logs.get((admission.key_id, dimension))
                if log is not None and entry in log.entries:
                    log.entries.remove(entry)
                    log.total -= entry[1]

    def _sweep(self, now: float, horizon: float) -> None:
        """Once a window, drop the logs of idle keys (what key expiry does in Redis)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window_s
        for name, log in list(self._logs.items()):
            log.trim(horizon)
            if not log.entries:
                del self._logs[name]
