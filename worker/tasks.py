"""Celery tasks: thin, ids only; the work is in :mod:`worker.run_job`."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy.exc
from celery import Celery, Task

from core import logcontext
from core.models.types import utcnow
from core.queue import DELIVER_WEBHOOK_TASK, GENERATE_IMAGE_TASK, REQUEST_ID_HEADER, RETENTION_TASK
from core.retention import run_retention
from worker.run_job import run_image
from worker.runtime import WorkerRuntime
from worker.webhooks import deliver_webhook

# Infrastructure faults (database or Redis briefly unreachable) retry the task. run_image raises
# them only before its claim is committed, when no upstream call has been made: once an attempt
# holds an outcome it records it itself, outlasting an outage, so a retry never makes an image
# twice. Anything the upstream does is handled inside run_image and recorded on the image.
INFRA_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, redis.ConnectionError)


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the tasks on ``app`` alone, bound to ``runtime``: not shared, since Celery would
    otherwise also register this closure on every app finalized later in the process, and a
    gateway started after another in one process (tests) would run its images with the first
    one's runtime."""

    @app.task(
        name=GENERATE_IMAGE_TASK,
        bind=True,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        autoretry_for=INFRA_ERRORS,
        retry_backoff=1,
        retry_backoff_max=30,
        max_retries=10,
    )
    def generate_image(self: Task, job_image_id: str) -> Any:
        # the id of the request that made the job, from the task's headers (see api/enqueue.py)
        with logcontext.bound(request_id=getattr(self.request, REQUEST_ID_HEADER, None)):
            return run_image(runtime, job_image_id)

    @app.task(name=DELIVER_WEBHOOK_TASK, shared=False, acks_late=True, ignore_result=True,
              autoretry_for=INFRA_ERRORS, retry_backoff=1, retry_backoff_max=30, max_retries=10)
    def deliver(delivery_id: str) -> Any:
        return deliver_webhook(runtime, delivery_id)

    @app.task(name=RETENTION_TASK, shared=False, acks_late=True, ignore_result=True)
    def retention_sweep() -> Any:
        report = run_retention(runtime.sessions, runtime.store, runtime.settings, now=utcnow())
        return report.jobs_expired
