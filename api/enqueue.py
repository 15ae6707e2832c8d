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

    def send_sync(self, image_ids: Sequence[str], *, request_id: str | None = None) -> None:
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        with self.app.producer_or_acquire() as producer:
            for image_id in image_ids:
                self.app.send_task(GENERATE_IMAGE_TASK, args=[image_id], queue=self.queue, producer=producer,
                                   headers=headers)

    async def send(self, image_ids: Sequence[str]) -> bool:
        """Send one task per image, carrying the request's id. False if the broker could not be
        reached (the job stays queued in the database and the sweeper sends it once the broker is
        back)."""
        try:
            await anyio.to_thread.run_sync(partial(self.send_sync, list(image_ids),
                                                   request_id=logcontext.current("request_id")))
        except Exception as exc:
            log.warning("broker unreachable (%s: %s); %d image task(s) left for the sweeper",
                        type(exc).__name__, exc, len(image_ids))
            return False
        return True

    def close(self) -> None:
        self.app.close()
