"""Job events: the worker says "job X changed", waiting API requests wake up and re-read it.

Events carry only a job id; the database stays the truth, so a lost event costs a caller at most
one database re-check interval, never its answer. Distributed mode publishes on Redis pub/sub;
embedded mode uses :class:`InProcessEventBus`, shared by the API and the in-process worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

import redis

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "imagegate:job:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"


def channel_for(job_id: str) -> str:
    return CHANNEL_PREFIX + job_id


class EventPublisher(Protocol):
    def publish(self, job_id: str) -> None: ...


class RedisEventPublisher:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def publish(self, job_id: str) -> None:
        try:
            self._client.publish(channel_for(job_id), b"1")
        except redis.RedisError:
            # waiting callers re-check the database on their own; a lost event only delays them
            log.warning("could not publish the event of job %s", job_id, exc_info=True)


class InProcessEventBus:
    """Thread-safe fan-out of job ids to subscribers in this process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str], None]] = []

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, job_id: str) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(job_id)
            except Exception:
                log.exception("job event subscriber failed")
