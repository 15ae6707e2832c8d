"""Job events: the worker says "job X changed", waiting API requests wake up.

A message on a job's channel (``imagegate:job:<id>``) is the job's terminal status (``succeeded``,
``partial``, ``failed``, ``canceled``) when the change ended the job, else ``b"1"``. So a waiting
request whose job ended knows it without reading the database first; the database stays the
truth, and a lost event costs a caller at most one database re-check interval, never its answer.

Distributed mode publishes on Redis pub/sub (:class:`RedisEventPublisher`, ``redis.asyncio``: the
worker publishes from its event loop); embedded mode uses :class:`InProcessEventBus`, shared by the
API and the in-process worker, whose subscribers get ``(job_id, ended status or None)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "imagegate:job:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"

CHANGED = b"1"
"""The message of a change that did not end the job."""


def channel_for(job_id: str) -> str:
    return CHANNEL_PREFIX + job_id


def message_for(ended: str | None) -> bytes:
    """The message published for a change of a job: its terminal status if it ended, else ``b"1"``."""
    return ended.encode() if ended else CHANGED


def ended_from(message: bytes | str) -> str | None:
    """The terminal status a message carries, or None for a change that did not end the job."""
    text = message.decode() if isinstance(message, bytes) else message
    return None if text == CHANGED.decode() else text


class EventPublisher(Protocol):
    async def publish(self, job_id: str, ended: str | None = None) -> None:
        """Say that ``job_id`` changed; ``ended`` is its terminal status when the change ended it."""
        ...


class RedisEventPublisher:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def publish(self, job_id: str, ended: str | None = None) -> None:
        try:
            await self._client.publish(channel_for(job_id), message_for(ended))
        except aioredis.RedisError:
            # waiting callers re-check the database on their own; a lost event only delays them
            log.warning("could not publish the event of job %s", job_id, exc_info=True)

    async def ping(self) -> None:
        await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()


Subscriber = Callable[[str, str | None], None]
"""Called with (job id, the job's terminal status if the change ended it, else None)."""


class InProcessEventBus:
    """Thread-safe fan-out of job events to subscribers in this process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def notify(self, job_id: str, ended: str | None = None) -> None:
        """Call every subscriber now, on this thread (subscribers hop to their own loop)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(job_id, ended)
            except Exception:
                log.exception("job event subscriber failed")

    async def publish(self, job_id: str, ended: str | None = None) -> None:
        self.notify(job_id, ended)
