"""Waiting for a job without holding a thread.

A waiting request registers an :class:`asyncio.Event` for its job and sleeps on it; job events
(Redis pub/sub in distributed mode, the in-process bus in embedded mode) set it. Every
``recheck_s`` the database is read anyway, so a lost event delays an answer, never loses it.
One Redis connection per API process serves every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator

import redis.asyncio as aioredis

from core.events import CHANNEL_PATTERN, CHANNEL_PREFIX, InProcessEventBus

log = logging.getLogger(__name__)


class JobWaiter:
    def __init__(self, *, recheck_s: float = 2.0) -> None:
        self.recheck_s = recheck_s
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._followers: dict[str, set[asyncio.Event]] = defaultdict(set)
        """The event streams following a job (:meth:`changes`): woken by every event of it."""

    def notify(self, job_id: str) -> None:
        """Wake every request waiting on ``job_id`` (call on the event loop's thread)."""
        for event in self._events.get(job_id, ()):
            event.set()
        for event in self._followers.get(job_id, ()):
            event.set()

    async def wait(
        self, job_id: str, *, is_done: Callable[[], Awaitable[bool]], timeout: float
    ) -> bool:
        """Until ``is_done()`` says so (True) or ``timeout`` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        self._events[job_id].add(event)  # registered before the first check: no event is missed
        try:
            while True:
                if await is_done():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(remaining, self.recheck_s))
                event.clear()
        finally:
            waiters = self._events.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[job_id]

    @contextlib.contextmanager
    def changes(self, job_id: str) -> Iterator[JobChanges]:
        """Follow every event of ``job_id`` (not only its end) while the block runs: what a
        job's event stream (``GET /v1/jobs/{id}/events``) sleeps on between two reads of it."""
        changes = JobChanges()
        self._followers[job_id].add(changes.event)  # registered before the caller's first read
        try:
            yield changes
        finally:
            followers = self._followers.get(job_id)
            if followers is not None:
                followers.discard(changes.event)
                if not followers:
                    del self._followers[job_id]

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._events.values()) + sum(len(v) for v in self._followers.values())


class JobChanges:
    """The events of one job, as :meth:`JobWaiter.changes` hands them out."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def next(self, *, timeout: float) -> bool:
        """Until the job's next event (True), or ``timeout`` seconds without one (False). Events
        that came since the last call count: none is missed between two calls."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout=timeout)
        except TimeoutError:
            return False
        self.event.clear()
        return True


class RedisJobEvents:
    """Feeds a :class:`JobWaiter` from Redis pub/sub; reconnects on its own."""

    def __init__(self, client: aioredis.Redis, waiter: JobWaiter) -> None:
        self._client = client
        self._waiter = waiter
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="imagegate-job-events")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PATTERN)
                backoff = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    self._waiter.notify(channel.removeprefix(CHANNEL_PREFIX))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job event subscription lost; reconnecting in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def attach_in_process(bus: InProcessEventBus, waiter: JobWaiter) -> Callable[[], None]:
    """Embedded mode: worker threads publish on ``bus``; hop onto the loop to wake waiters."""
    loop = asyncio.get_running_loop()

    def on_event(job_id: str) -> None:
        loop.call_soon_threadsafe(waiter.notify, job_id)

    return bus.subscribe(on_event)
