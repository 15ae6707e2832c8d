"""A job's progress as server-sent events (``GET /v1/jobs/{id}/events``).

The stream opens with ``job.snapshot`` (the job as ``GET /v1/jobs/{id}`` shows it), then sends one
event per change of an image's status, named after the new status, each carrying that image's
view (the fields of an entry of the job's ``images``, plus ``job_id``):

- ``image.running``: a worker started making it (``attempts`` counts the tries);
- ``image.succeeded``: it is stored, with its ``url``, size, bytes and ``cost_usd``;
- ``image.failed``: it failed for good, with its ``error``;
- ``image.canceled``; ``image.queued`` (back in the queue after a worker was lost);

then ``job.ended`` (the whole job view, with its final ``status``, ``progress`` and
``cost_usd``), and the server closes the stream. A job that has ended already answers its
snapshot and ``job.ended`` at once. ``: keep-alive`` comments are sent while nothing changes.

Changes are found by reading the job again whenever one of its events arrives (the same job
events that wake a waiting request, :meth:`api.wait.JobWaiter.changes`) and comparing its images'
statuses with the previous read; the job is also read every ``IMAGEGATE_EVENTS_KEEPALIVE_S``
seconds without an event, so a lost event delays a change, never loses it. A database that
cannot be reached for a while only delays the events: the stream goes on with keep-alives. The
reader leaving ends the stream and nothing else: the job goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from api.results import get_images, job_view
from api.state import AppState
from core.db import DATABASE_UNAVAILABLE
from core.jobs import JobStatus
from core.repo import jobs

log = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (``event:`` and a one-line ``data:``)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass
class ImageChanges:
    """What was last said of each image: its status, by image id."""

    seen: dict[str, str] = field(default_factory=dict)

    def since(self, view: dict[str, Any]) -> list[bytes]:
        """The events of the images whose status changed since the last view, in index order."""
        events = []
        for image in view["images"]:
            status = str(image["status"])
            if self.seen.get(image["id"]) != status:
                self.seen[image["id"]] = status
                events.append(sse(f"image.{status}", {"job_id": view["id"], **image}))
        return events


async def _read(state: AppState, job_id: str) -> dict[str, Any] | None:
    async with state.sessions() as session:
        job = await session.scalar(jobs.by_id(job_id))
        if job is None:
            return None
        images = await get_images(session, job_id)
    return await job_view(state, job, images, include_b64=False)


async def job_events(state: AppState, job_id: str) -> AsyncIterator[bytes]:
    """The stream of one job the caller owns (checked before): see the module docstring."""
    every_s = state.settings.events_keepalive_s
    loop = asyncio.get_running_loop()
    with state.waiter.changes(job_id) as changes:  # before the first read: no event is missed
        view: dict[str, Any] | None = None
        seen = ImageChanges()
        sent = loop.time()
        unreachable = False
        while view is None or not JobStatus(view["status"]).is_terminal:
            if view is not None or unreachable:
                await changes.next(timeout=max(0.0, sent + every_s - loop.time()))
                if loop.time() >= sent + every_s:
                    yield KEEP_ALIVE
                    sent = loop.time()
            try:
                current = await _read(state, job_id)
            except DATABASE_UNAVAILABLE as exc:
                if not unreachable:
                    log.warning(
                        "job %s: the database cannot be reached for its event stream (%s)", job_id, type(exc).__name__
                    )
                unreachable = True
                continue
            unreachable = False
            if current is None:  # deleted while followed (retention)
                yield sse("error", {"error": {"code": "job_not_found", "message": f"The job '{job_id}' is gone."}})
                return
            events = seen.since(current)
            for event in [sse("job.snapshot", current)] if view is None else events:
                yield event
                sent = loop.time()
            view = current
        yield sse("job.ended", view)
