"""Waiting for a job without holding a thread.

A waiting request registers an :class:`asyncio.Event` for its job and sleeps on it; job events
(Redis pub/sub in distributed mode, the in-process bus in embedded mode, see core/events.py) set
it. An event that carries the job's terminal status ends the wait with no database read (the
status is remembered, for a bounded number of jobs, so that a request that starts waiting after
the event still hears it); an event about a change that did not end the job wakes nobody. A job
this process has just submitted is announced with :meth:`JobWaiter.expect` before it is enqueued,
so its waiting request skips the first database check too: the caller's one read is the answer's.
Every ``recheck_s`` the database is read anyway, so a lost event delays an answer, never loses it.
One Redis connection per API process serves every waiter.

Publishers that send no statuses (every event ``b"1"``, as before the status was added) are
understood: until this process has heard one status, a ``b"1"`` event makes its waiters re-read
the job, as any change of unknown effect does (:meth:`JobWaiter.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import redis.asyncio as aioredis

from core.events import CHANNEL_PATTERN, CHANNEL_PREFIX, InProcessEventBus, ended_status
from core.jobs import JobStatus

log = logging.getLogger(__name__)
_V = TypeVar("_V")

REMEMBERED_JOBS = 10_000
"""How many ended (and expected) jobs a waiter remembers; the oldest are forgotten first."""


class JobWaiter:
    def __init__(self, *, recheck_s: float = 2.0, remember: int = REMEMBERED_JOBS) -> None:
        self.recheck_s = recheck_s
        self.remember = remember
        self.database_checks = 0
        """How often a waiting request read the job's state (not counting its answer's read)."""
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._ended: OrderedDict[str, JobStatus] = OrderedDict()
        self._expected: OrderedDict[str, None] = OrderedDict()
        self._statuses_heard = False
        self._followers: dict[str, set[asyncio.Event]] = defaultdict(set)
        """The event streams following a job (:meth:`changes`): woken by every event of it."""

    def expect(self, job_id: str) -> None:
        """The job was just committed here and is not enqueued yet: it cannot have ended, so
        the first wait on it reads nothing until an event or the first re-check."""
        self._remember(self._expected, job_id, None)

    def notify(self, job_id: str) -> None:
        """Something changed the job, maybe ended it: every request waiting on it re-reads it
        (call on the event loop's thread), and a request that starts waiting on it later reads it
        on entry, even if the job was expected."""
        self._expected.pop(job_id, None)
        self._wake(job_id)

    def ended(self, job_id: str, status: JobStatus) -> None:
        """The job has ended with ``status``: its waiters return without reading it."""
        self._expected.pop(job_id, None)
        self._remember(self._ended, job_id, status)
        self._wake(job_id)

    def heard(self, job_id: str, ended: JobStatus | None) -> None:
        """A published event: the job's terminal status, or None for a change that did not end it
        (or, from a publisher that sends no statuses, a change of unknown effect)."""
        if ended is not None:
            # only this gateway's own jobs say whether its workers send statuses: another
            # deployment on the same Redis (pub/sub ignores the database number) must not
            if job_id in self._expected or job_id in self._events:
                self._statuses_heard = True
            self.ended(job_id, ended)
        elif not self._statuses_heard:
            self.notify(job_id)
        else:
            self._wake_followers(job_id)  # progress: for the job's event streams, not its waiters

    def status_of(self, job_id: str) -> JobStatus | None:
        """The terminal status an event said the job ended with, if this waiter remembers it."""
        return self._ended.get(job_id)

    def _remember(self, where: OrderedDict[str, _V], job_id: str, value: _V) -> None:
        where[job_id] = value
        where.move_to_end(job_id)
        while len(where) > self.remember:
            where.popitem(last=False)

    def _wake(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()
        self._wake_followers(job_id)

    def _wake_followers(self, job_id: str) -> None:
        for event in self._followers.get(job_id, ()):
            event.set()

    async def wait(
        self, job_id: str, *, is_done: Callable[[], Awaitable[bool]], timeout: float
    ) -> bool:
        """Until the job's end is heard or ``is_done()`` says so (True), or ``timeout`` seconds
        pass (False). ``is_done`` reads the database: on entry (unless the job is expected), after
        a change of unknown effect, every ``recheck_s``, and at the deadline."""
        if job_id in self._ended:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        self._events[job_id].add(event)  # registered before the first check: no event is missed
        read = job_id not in self._expected
        self._expected.pop(job_id, None)
        try:
            while True:
                if job_id in self._ended:
                    return True
                if read:
                    self.database_checks += 1
                    if await is_done():
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(remaining, self.recheck_s))
                event.clear()
                read = True  # a re-check, or a change of unknown effect (an ending is seen above)
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
                    self._waiter.heard(channel.removeprefix(CHANNEL_PREFIX), ended_status(message["data"]))
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
    """Embedded mode: the worker (on its own thread's event loop) publishes on ``bus``; hop onto this loop
    to wake waiters."""
    loop = asyncio.get_running_loop()

    def on_event(job_id: str, ended: JobStatus | None) -> None:
        loop.call_soon_threadsafe(waiter.heard, job_id, ended)

    return bus.subscribe_status(on_event)
