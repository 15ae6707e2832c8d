"""Sending image tasks to the worker by name (the API never imports worker code).

With Redis as the broker, a task is put on its queue by the API's event loop itself, one ``LPUSH``
per submit whatever the number of tasks: the message is the one Celery's ``send_task`` would
publish (Celery's own :meth:`celery.app.amqp.AMQP.as_task_v2` makes its headers and body, in
Celery's message protocol 2, https://docs.celeryq.dev/en/stable/internals/protocol.html), in the
envelope kombu's Redis transport puts on the queue's list (``kombu/transport/redis.py``,
``Channel._put``: the list named after the queue, for priority 0). No thread hop and no kombu
producer per request; ``tests/api/test_enqueue.py`` checks the message against one Celery sends.

Embedded mode's broker is kombu's in-process transport (``imagegate/inprocess_broker.py``): no
I/O, so Celery's client publishes there directly, on the event loop.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from core import logcontext
from core.config import Settings
from core.queue import GENERATE_IMAGE_TASK, REQUEST_ID_HEADER, celery_config

log = logging.getLogger(__name__)

BROKER_CONNECT_TIMEOUT_S = 5
BROKER_TIMEOUT_S = 10


class Enqueuer:
    """A send-only client of the task queue (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue
        self.app = Celery("imagegate-api", set_as_current=False)
        self.app.conf.update(celery_config(settings))
        self._redis: aioredis.Redis | None = None
        if settings.redis_url:
            self._redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=BROKER_CONNECT_TIMEOUT_S,
                                                  socket_timeout=BROKER_TIMEOUT_S)

    def send_sync(self, image_ids: Sequence[str], task: str = GENERATE_IMAGE_TASK, *,
                  request_id: str | None = None) -> None:
        """Publish through Celery's own client (blocking: embedded mode's in-process broker, and
        tests that compare the two)."""
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        with self.app.producer_or_acquire() as producer:
            for ident in image_ids:
                self.app.send_task(task, args=[ident] if ident else [], queue=self.queue, producer=producer,
                                   headers=headers)

    def message(self, task: str, ident: str, *, request_id: str | None) -> bytes:
        """The queue entry of one task: what kombu's Redis transport stores for Celery's
        ``send_task(task, args=[ident], queue=...)``."""
        task_id = str(uuid.uuid4())
        # as send_task calls it: no result to ignore or store (the task's own option is unknown
        # here), replies addressed to this client
        made = self.app.amqp.as_task_v2(task_id, task, args=[ident] if ident else [], kwargs={}, ignore_result=None,
                                        reply_to=self.app.thread_oid)
        headers: dict[str, Any] = dict(made.headers)
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        body = base64.b64encode(json.dumps(made.body).encode()).decode("ascii")
        properties = {**made.properties, "delivery_mode": 2,
                      "delivery_info": {"exchange": "", "routing_key": self.queue}, "priority": 0,
                      "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
        return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                           "headers": headers, "properties": properties}).encode()

    async def send(self, image_ids: Sequence[str], *, task: str = GENERATE_IMAGE_TASK) -> bool:
        """Send one task per image (or per id, for another ``task``; an empty id: a task without
        arguments), carrying the request's id. False if the broker could not be reached (the job
        stays queued in the database and the sweeper sends it once the broker is back)."""
        request_id = logcontext.current("request_id")
        try:
            if self._redis is None:
                self.send_sync(list(image_ids), task, request_id=request_id)
            elif image_ids:
                await self._redis.lpush(self.queue, *[self.message(task, i, request_id=request_id) for i in image_ids])
        except Exception as exc:
            log.warning("broker unreachable (%s: %s); %d %s task(s) left for the sweeper",
                        type(exc).__name__, exc, len(image_ids), task)
            return False
        return True

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        self.app.close()
