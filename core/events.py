"""Job events: the worker says "job X changed", waiting API requests wake up.

An event names its job on its channel (``imagegate:job:<id>``) and says in its payload whether
the change ended the job: the job's terminal status (``succeeded``, ``partial``, ``failed``,
``canceled``) when it did, else :data:`NOT_ENDED` (``b"1"``). A waiting request that hears the
status reads the job once, for its answer; one that hears ``b"1"`` reads nothing. The database
stays the truth: a lost event costs a caller at most one database re-check interval, never its
answer. Distributed mode publishes on Redis pub/sub; embedded mode uses
:class:`InProcessEventBus`, shared by the API and the in-process worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import redis

from core.jobs import JobStatus

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "imagegate:job:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
NOT_ENDED = b"1"
"""The payload of an event about a change that did not end its job."""


def channel_for(job_id: str) -> str:
    return CHANNEL_PREFIX + job_id


def payload(ended: str | None) -> bytes:
    """An event's payload: the job's terminal status if the change ended it, else NOT_ENDED."""
    if ended is None:
        return NOT_ENDED
    if not JobStatus(ended).is_terminal:
        raise ValueError(f"not a terminal job status: {ended!r}")
    return ended.encode()


def ended_status(data: bytes | str) -> JobStatus | None:
    """The terminal status an event's payload carries; None for NOT_ENDED or anything else."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    try:
        status = JobStatus(text)
    except ValueError:
        return None
    return status if status.is_terminal else None


class EventPublisher(Protocol):
    def publish(self, job_id: str, ended: str | None = None) -> None: ...


class RedisEventPublisher:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def publish(self, job_id: str, ended: str | None = None) -> None:
        """``ended``: the job's terminal status when this change ended it."""
        data = payload(ended)
        try:
            self._client.publish(channel_for(job_id), data)
        except redis.RedisError:
            # waiting callers re-check the database on their own; a lost event only delays them
            log.warning("could not publish the event of job %s", job_id, exc_info=True)


class InProcessEventBus:
    """Thread-safe fan-out of job events to subscribers in this process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str], None]] = []
        self._status_subscribers: list[Callable[[str, JobStatus | None], None]] = []

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """``callback(job_id)`` on every event."""
        return self._add(self._subscribers, callback)

    def subscribe_status(self, callback: Callable[[str, JobStatus | None], None]) -> Callable[[], None]:
        """``callback(job_id, ended)`` on every event: ``ended`` is the job's terminal status when
        the change ended it."""
        return self._add(self._status_subscribers, callback)

    def _add(self, subscribers: list[Any], callback: Any) -> Callable[[], None]:
        with self._lock:
            subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in subscribers:
                    subscribers.remove(callback)

        return unsubscribe

    def publish(self, job_id: str, ended: str | None = None) -> None:
        status = ended_status(payload(ended))
        with self._lock:
            plain, with_status = list(self._subscribers), list(self._status_subscribers)
        for callback in plain:
            self._call(callback, job_id)
        for status_callback in with_status:
            self._call(status_callback, job_id, status)

    @staticmethod
    def _call(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("job event subscriber failed")
