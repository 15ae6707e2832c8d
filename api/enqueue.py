"""Sending image tasks to the worker by name (the API never imports worker code)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import anyio.to_thread
from celery import Celery

from core import logcontext
from core.config import Settings
from core.queue import GENERATE_IMAGE_TASK, REQUEST_ID_HEADER, celery_config

log = logging.getLogger(__name__)


class Enqueuer:
    """A send-only Celery client. Publishing is blocking I/O, so it runs on a worker thread."""

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue
        self.app = Celery("imagegate-api", set_as_current=False)
        self.app.conf.update(celery_config(settings))

    def send_sync(self, image_ids: Sequence[str], task: str = GENERATE_IMAGE_TASK, *,
                  request_id: str | None = None) -> None:
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        with self.app.producer_or_acquire() as producer:
            for ident in image_ids:
                self.app.send_task(task, args=[ident] if ident else [], queue=self.queue, producer=producer,
                                   headers=headers)

    async def send(self, image_ids: Sequence[str], *, task: str = GENERATE_IMAGE_TASK) -> bool:
        """Send one task per image (or per id, for another ``task``; an empty id: a task without
        arguments), carrying the request's id. False if the broker could not be reached (the job
        stays queued in the database and the sweeper sends it once the broker is back)."""
        try:
            await anyio.to_thread.run_sync(partial(self.send_sync, list(image_ids), task,
                                                   request_id=logcontext.current("request_id")))
        except Exception as exc:
            log.warning("broker unreachable (%s: %s); %d %s task(s) left for the sweeper",
                        type(exc).__name__, exc, len(image_ids), task)
            return False
        return True

    def close(self) -> None:
        self.app.close()
