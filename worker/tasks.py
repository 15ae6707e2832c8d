"""Celery tasks: thin, ids only; the work is in :mod:`worker.run_job`. Each is a coroutine task
(:class:`worker.pool.CoroutineTask`), run on the worker process's event loop by
:class:`worker.pool.AsyncioPool`."""

from __future__ import annotations

import asyncio

import redis
import sqlalchemy.exc
from celery import Celery

from core.db import create_sync_engine, sync_sessionmaker
from core.models.types import utcnow
from core.queue import DELIVER_WEBHOOK_TASK, GENERATE_IMAGE_TASK, RETENTION_TASK
from core.retention import run_retention
from worker.pool import coroutine_task
from worker.run_job import run_image
from worker.runtime import WorkerRuntime
from worker.webhooks import deliver_webhook

# Infrastructure faults (database or Redis briefly unreachable, the database pool exhausted) retry
# the task. run_image raises them only before its claim is committed, when no upstream call has
# been made: once an attempt holds an outcome it records it itself, outlasting an outage, so a
# retry never makes an image twice. Anything the upstream does is handled inside run_image and
# recorded on the image.
INFRA_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
                redis.ConnectionError)


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the tasks on ``app`` alone, bound to ``runtime``: not shared, since Celery would
    otherwise also register them on every app finalized later in the process, and a gateway
    started after another in one process (tests) would run its images with the first one's
    runtime."""

    async def generate_image(job_image_id: str) -> str:
        return await run_image(runtime, job_image_id)

    coroutine_task(
        app,
        generate_image,
        name=GENERATE_IMAGE_TASK,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        autoretry_for=INFRA_ERRORS,
        retry_backoff=1,
        retry_backoff_max=30,
        max_retries=10,
    )

    async def deliver(delivery_id: str) -> str:
        return await deliver_webhook(runtime, delivery_id)

    coroutine_task(app, deliver, name=DELIVER_WEBHOOK_TASK, shared=False, acks_late=True, ignore_result=True,
                   autoretry_for=INFRA_ERRORS, retry_backoff=1, retry_backoff_max=30, max_retries=10)

    async def retention_sweep() -> int:
        # a periodic batch job (one pass an interval): it runs on a thread of its own, with a
        # short-lived synchronous engine, rather than on the loop the images share
        return await asyncio.to_thread(_retention_pass, runtime)

    coroutine_task(app, retention_sweep, name=RETENTION_TASK, shared=False, acks_late=True, ignore_result=True)


def _retention_pass(runtime: WorkerRuntime) -> int:
    settings = runtime.settings
    engine = create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=0)
    try:
        report = run_retention(sync_sessionmaker(engine), runtime.store, settings, now=utcnow())
    finally:
        engine.dispose()
    return report.jobs_expired
