"""The upstream client's sense of time, injected so that tests can pass a fake one.

The client needs three things from a clock: a monotonic reading for its time budget, a sleep
between attempts, and the wall-clock date that an HTTP-date ``Retry-After`` counts from.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back (measures the call's budget)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` before the next attempt (without blocking the event loop)."""
        ...

    def now(self) -> datetime:
        """The current date and time, timezone-aware."""
        ...


class SystemClock:
    """The process's clocks: :func:`time.monotonic`, :func:`asyncio.sleep` and UTC now."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()
