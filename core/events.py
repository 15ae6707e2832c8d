"""Job events: the worker says "job X changed", waiting API requests wake up.

An event names its job on its channel (``imagegate:job:<id>``) and says in its payload whether
the change ended the job: the job's terminal status (``succeeded``, ``partial``, ``failed``,
``canceled``) when it did, else :data:`NOT_ENDED` (``b"1"``). A waiting request that hears the
status reads the job once, for its answer; one that hears ``b"1"`` reads nothing. The database
stays the truth: a lost event costs a caller at most one database re-check interval, never its
answer. Distributed mode publishes on Redis pub/sub (:class:`RedisEventPublisher`,
``redis.asyncio``: the worker publishes from its event loop); embedded mode uses
:class:`InProcessEventBus`, shared by the API and the in-process worker.

Partial images (the drafts a GPT image upstream streams on the way to each final image) travel
apart from the "job changed" events: their bytes go to the image store, and a
:class:`PartialImage` naming the stored object is appended to the job's partial-image log — a
Redis stream (``imagegate:partials:<job id>``, kept for :data:`PARTIALS_TTL_S`) in distributed
mode, a list held by the bus in embedded mode. A log rather than pub/sub: a streaming request
reads it from the start, so a draft appended before the request began to listen is not lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis

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
    async def publish(self, job_id: str, ended: str | None = None) -> None:
        """Say that ``job_id`` changed; ``ended`` is its terminal status when the change ended it."""
        ...


PARTIALS_PREFIX = "imagegate:partials:"
PARTIALS_TTL_S = 900
"""How long a job's partial-image log is kept after its last draft."""
PARTIALS_MAX = 500
"""At most this many drafts are kept per job (10 images x 3 drafts x a few attempts)."""


def partials_key(job_id: str) -> str:
    return PARTIALS_PREFIX + job_id


@dataclass(frozen=True)
class PartialImage:
    """A draft of image ``index`` of a job, stored at ``object_key``; ``partial_index``,
    ``output_format``, ``size``, ``quality`` and ``background`` are what the upstream said of it."""

    job_id: str
    index: int
    partial_index: int
    object_key: str
    output_format: str
    size: str
    quality: str
    background: str
    created_at: int

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> PartialImage:
        return cls(**json.loads(data))


class PartialImagePublisher(Protocol):
    async def publish_partial(self, partial: PartialImage) -> None:
        """Append a stored draft to its job's partial-image log (best effort: a lost draft costs
        the caller one preview, never its image)."""
        ...


class JobEvents(EventPublisher, PartialImagePublisher, Protocol):
    """What a worker publishes: job changes and partial images."""


class RedisEventPublisher:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def publish(self, job_id: str, ended: str | None = None) -> None:
        """``ended``: the job's terminal status when this change ended it."""
        data = payload(ended)
        try:
            await self._client.publish(channel_for(job_id), data)
        except aioredis.RedisError:
            # waiting callers re-check the database on their own; a lost event only delays them
            log.warning("could not publish the event of job %s", job_id, exc_info=True)

    async def publish_partial(self, partial: PartialImage) -> None:
        key = partials_key(partial.job_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"partial": partial.to_json()}, maxlen=PARTIALS_MAX, approximate=True)
                pipe.expire(key, PARTIALS_TTL_S)
                await pipe.execute()
        except aioredis.RedisError:
            log.warning("could not publish a partial image of job %s", partial.job_id, exc_info=True)

    async def ping(self) -> None:
        await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()


class InProcessEventBus:
    """Thread-safe fan-out of job events to subscribers in this process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str], None]] = []
        self._partials: dict[str, tuple[float, list[PartialImage]]] = {}
        self._partial_subscribers: list[Callable[[str], None]] = []
        self._status_subscribers: list[Callable[[str, JobStatus | None], None]] = []

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """``callback(job_id)`` on every event."""
        return _add(self._lock, self._subscribers, callback)

    def subscribe_status(self, callback: Callable[[str, JobStatus | None], None]) -> Callable[[], None]:
        """``callback(job_id, ended)`` on every event: ``ended`` is the job's terminal status when
        the change ended it."""
        return _add(self._lock, self._status_subscribers, callback)

    def notify(self, job_id: str, ended: str | None = None) -> None:
        """Call every subscriber now, on this thread (subscribers hop to their own loop)."""
        status = ended_status(payload(ended))
        with self._lock:
            subscribers, with_status = list(self._subscribers), list(self._status_subscribers)
        for plain in subscribers:
            try:
                plain(job_id)
            except Exception:
                log.exception("job event subscriber failed")
        for callback in with_status:
            try:
                callback(job_id, status)
            except Exception:
                log.exception("job event subscriber failed")

    async def publish(self, job_id: str, ended: str | None = None) -> None:
        self.notify(job_id, ended)

    def add_partial(self, partial: PartialImage) -> None:
        """Append a draft to its job's log and wake its readers, on this thread."""
        now = time.monotonic()
        with self._lock:
            for job_id in [j for j, (at, _) in self._partials.items() if now - at > PARTIALS_TTL_S]:
                del self._partials[job_id]
            drafts = self._partials.get(partial.job_id, (now, []))[1]
            if len(drafts) < PARTIALS_MAX:  # positions are cursors: drafts are only ever appended
                drafts.append(partial)
            self._partials[partial.job_id] = (now, drafts)
            subscribers = list(self._partial_subscribers)
        for callback in subscribers:
            try:
                callback(partial.job_id)
            except Exception:
                log.exception("partial image subscriber failed")

    async def publish_partial(self, partial: PartialImage) -> None:
        self.add_partial(partial)

    def partials_after(self, job_id: str, cursor: int) -> tuple[list[PartialImage], int]:
        """The drafts of ``job_id`` from position ``cursor`` on, and the next cursor."""
        with self._lock:
            drafts = list(self._partials.get(job_id, (0.0, []))[1])
        return drafts[cursor:], max(cursor, len(drafts))

    def subscribe_partials(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """``callback(job_id)`` after each draft appended (on the publishing thread)."""
        return _add(self._lock, self._partial_subscribers, callback)


T = TypeVar("T")


def _add(lock: threading.Lock, subscribers: list[T], callback: T) -> Callable[[], None]:
    with lock:
        subscribers.append(callback)

    def unsubscribe() -> None:
        with lock:
            if callback in subscribers:
                subscribers.remove(callback)

    return unsubscribe
