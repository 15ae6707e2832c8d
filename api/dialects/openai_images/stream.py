"""Streamed answers of ``POST /v1/images/generations`` and ``/v1/images/edits`` (``stream: true``):
server-sent events as the OpenAI API sends them and the openai SDK's ``ImageGenStreamEvent`` /
``ImageEditStreamEvent`` types describe them (https://platform.openai.com/docs/api-reference/images-streaming).

- ``image_generation.partial_image`` (``image_edit.partial_image`` for an edit): a draft that a
  GPT image upstream streamed (``partial_images`` of them per image at most), passed on as it
  arrives. An upstream that draws no drafts (Gemini, Imagen, the demo) sends none.
- ``image_generation.completed`` (``image_edit.completed``): each image as soon as it is stored,
  with its own ``usage``, so a job of n images sends n completed events as they finish; a
  failed image sends none.
- ``event: error`` with ``{"type": "error", "error": {message, type, param, code}}`` (the error
  object of the non-streamed answer, which the openai SDK raises as an ``APIError``) when no
  image of the job was delivered, or the wait ran out (``IMAGEGATE_SYNC_TIMEOUT_S``).
- ``: keep-alive`` comments while nothing else is sent, at least every :data:`KEEP_ALIVE_S`.

The stream ends after the job does. Where a draft comes from: the worker stores it and appends
it to the job's partial-image log (:mod:`core.events`); this module reads that log (a Redis
stream, or the in-process bus) and the job's image rows, waking on either. A draft's object is
removed once it has been sent. Billing is the job's, exactly as for a non-streamed answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio
import redis.asyncio as aioredis
from pydantic import BaseModel

from api.dialects.openai_images import translate
from api.flow import JobResult, JobStream, Stream, load_result
from api.results import JobCheck, delivered_images
from api.state import AppState
from core.db import DATABASE_UNAVAILABLE
from core.errors import GatewayError
from core.events import InProcessEventBus, PartialImage, partials_key
from core.jobs import ImageStatus, JobStatus

log = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"
KEEP_ALIVE_S = 5.0
"""The longest a stream stays silent: proxies and clients give up on a quiet connection."""


def sse(event: str, data: BaseModel | dict[str, Any]) -> bytes:
    body = data.model_dump_json().encode() if isinstance(data, BaseModel) else _json(data)
    return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def error_event(error: GatewayError) -> bytes:
    return sse("error", {"type": "error", **translate.to_wire_error(error).body})


class PartialFeed(Protocol):
    """A job's partial-image log, read from its start."""

    async def drain(self) -> list[PartialImage]:
        """The drafts appended since the last drain."""
        ...

    async def wait(self, timeout_s: float) -> None:
        """Returns once a draft may have been appended, or after ``timeout_s``."""
        ...

    def close(self) -> None: ...


class RedisPartialFeed:
    """The Redis stream ``imagegate:partials:<job id>`` (distributed mode)."""

    def __init__(self, client: aioredis.Redis, job_id: str) -> None:
        self._client = client
        self._key = partials_key(job_id)
        self._cursor = "0-0"

    async def drain(self) -> list[PartialImage]:
        found = await self._client.xread({self._key: self._cursor}, count=1000)
        return self._take(found)

    async def wait(self, timeout_s: float) -> None:
        # reads without taking: drain() takes what is there
        await self._client.xread({self._key: self._cursor}, count=1, block=max(1, int(timeout_s * 1000)))

    def _take(self, found: Any) -> list[PartialImage]:
        drafts = []
        for _key, entries in found or []:
            for entry_id, fields in entries:
                self._cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                raw = fields.get(b"partial", fields.get("partial"))
                try:
                    drafts.append(PartialImage.from_json(raw))
                except (TypeError, ValueError):
                    log.warning("a partial image entry of %s cannot be read", self._key)
        return drafts

    def close(self) -> None:
        pass


class InProcessPartialFeed:
    """The in-process bus's log (embedded mode)."""

    def __init__(self, bus: InProcessEventBus, job_id: str) -> None:
        self._bus = bus
        self._job_id = job_id
        self._cursor = 0
        self._arrived = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_partial(job_id: str) -> None:
            if job_id == self._job_id:
                loop.call_soon_threadsafe(self._arrived.set)

        self._unsubscribe = bus.subscribe_partials(on_partial)

    async def drain(self) -> list[PartialImage]:
        self._arrived.clear()
        drafts, self._cursor = self._bus.partials_after(self._job_id, self._cursor)
        return drafts

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout=timeout_s)

    def close(self) -> None:
        self._unsubscribe()


def open_feed(state: AppState, job_id: str) -> PartialFeed | None:
    if state.redis is not None:
        return RedisPartialFeed(state.redis, job_id)
    if state.event_bus is not None:
        return InProcessPartialFeed(state.event_bus, job_id)
    return None


class _Progress:
    """What the stream last saw of the job, and the check that remembers a database outage for
    the error at the deadline."""

    def __init__(self, state: AppState, job_id: str) -> None:
        self.check = JobCheck(state, job_id)
        self.seen: tuple[str, int] | None = None


def streamer(*, edit: bool, partials: bool) -> Stream:
    """The stream of a job submitted by ``/v1/images/generations`` (``edit`` false) or
    ``/v1/images/edits``; ``partials``: the job asked its upstream for drafts."""

    async def stream(job: JobStream) -> AsyncIterator[bytes]:
        async for chunk in _ImageStream(job, edit=edit, partials=partials).events():
            yield chunk

    return stream


class _ImageStream:
    def __init__(self, job: JobStream, *, edit: bool, partials: bool) -> None:
        self.state = job.state
        self.job_id = job.job.id
        self.edit = edit
        self.feed = open_feed(job.state, self.job_id) if partials else None
        self.progress = _Progress(job.state, self.job_id)
        self.sent: set[int] = set()
        self.drafts: list[str] = []

    async def events(self) -> AsyncIterator[bytes]:
        # every event of the job wakes the stream (an image stored, not only the job's end), so
        # each image is sent as soon as it is stored
        with self.state.waiter.changes(self.job_id) as self.changes:
            async for chunk in self._events():
                yield chunk

    async def _events(self) -> AsyncIterator[bytes]:
        state = self.state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + state.settings.sync_timeout_s
        last_sent = loop.time()
        waits: dict[str, asyncio.Task[Any]] = {}
        try:
            while True:
                sent = False
                async for chunk in self._news():
                    sent = True
                    yield chunk
                if self.progress.seen is not None and JobStatus(self.progress.seen[0]).is_terminal:
                    return
                now = loop.time()
                if sent:
                    last_sent = now
                elif now - last_sent >= KEEP_ALIVE_S:
                    last_sent = now
                    yield KEEP_ALIVE
                if now >= deadline:
                    raise self.progress.check.timed_out(state.settings.sync_timeout_s)
                self._arm(waits)
                timeout = max(0.05, min(last_sent + KEEP_ALIVE_S, deadline) - loop.time())
                done, _ = await asyncio.wait(waits.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for name in [n for n, task in waits.items() if task in done]:
                    self._settle(waits.pop(name), name)
        except GatewayError as error:
            yield error_event(error)
        except Exception:
            log.exception("the streamed images of job %s failed", self.job_id)
            yield error_event(
                GatewayError("The server had an error while processing your request.", job_id=self.job_id)
            )
        finally:
            for task in waits.values():
                task.cancel()
            with anyio.CancelScope(shield=True):
                await self._clean_up()

    def _arm(self, waits: dict[str, asyncio.Task[Any]]) -> None:
        """The waits that end a quiet spell: an event of the job (or the keep-alive interval, after
        which the job is read again all the same), a draft."""
        if "job" not in waits:
            waits["job"] = asyncio.ensure_future(self.changes.next(timeout=KEEP_ALIVE_S))
        if self.feed is not None and "partials" not in waits:
            waits["partials"] = asyncio.ensure_future(self.feed.wait(KEEP_ALIVE_S))

    def _settle(self, task: asyncio.Task[Any], name: str) -> None:
        error = task.exception()
        if error is not None and name == "partials":
            # drafts are previews: without the log the stream goes on with the final images
            log.warning(
                "job %s: the partial-image log cannot be read (%s); no more drafts", self.job_id, type(error).__name__
            )
            if self.feed is not None:
                self.feed.close()
            self.feed = None
        elif error is not None:
            raise error

    async def _news(self) -> AsyncIterator[bytes]:
        """The drafts and images that have appeared since the last look, in that order."""
        try:
            result = await load_result(self.state, self.job_id)
        except DATABASE_UNAVAILABLE:
            await self.progress.check()
            return
        self.progress.seen = (result.job.status, result.job.done)
        # read after the images: every draft of an image recorded by now is in the log
        for partial in await self._drafts():
            if partial.index in self.sent:
                continue  # a late draft of an image already sent
            try:
                data = await self.state.store.aget(partial.object_key)
            except FileNotFoundError:
                continue
            self.drafts.append(partial.object_key)
            draft = translate.partial_event(
                edit=self.edit,
                partial=partial,
                b64_json=base64.b64encode(data).decode("ascii"),
                created_at=partial.created_at,
            )
            yield sse(draft.type, draft)
        fresh = [i for i in result.delivered if i.index not in self.sent]
        for image in sorted(fresh, key=lambda i: i.index):
            [delivered] = await delivered_images(self.state, [image], as_b64=True)
            self.sent.add(image.index)
            event = translate.completed_event(
                edit=self.edit, applied=result.applied, image=delivered, created_at=int(time.time())
            )
            yield sse(event.type, event)
        if JobStatus(result.job.status).is_terminal and not self.sent:
            failure = _failure(result)
            if failure is not None:
                raise failure

    async def _drafts(self) -> list[PartialImage]:
        if self.feed is None:
            return []
        try:
            return await self.feed.drain()
        except Exception as exc:
            log.warning(
                "job %s: the partial-image log cannot be read (%s); no more drafts", self.job_id, type(exc).__name__
            )
            self.feed.close()
            self.feed = None
            return []

    async def _clean_up(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self.drafts:
            try:
                await asyncio.to_thread(self.state.store.delete, self.drafts)
            except Exception:
                log.warning("job %s: its sent drafts could not be removed", self.job_id, exc_info=True)


def _failure(result: JobResult) -> GatewayError | None:
    """The job's error, when no image of it was delivered (a canceled job says so)."""
    if all(i.status == ImageStatus.CANCELED for i in result.images):
        return GatewayError(
            "The job was canceled before any image was made.", code="job_canceled", job_id=result.job.id
        )
    return result.failure()
