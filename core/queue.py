"""The contract between the API and the worker: task names, queue, and broker settings.

The API enqueues by task name with ids only; the worker defines the tasks under these names.
Nothing here imports Celery: both sides build their Celery app from :func:`celery_config`.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings

GENERATE_IMAGE_TASK = "generation.run_image"
REQUEST_ID_HEADER = "imagegate_request_id"
"""A task header: the id of the request that made the job, for the worker's log lines."""
"""Args: ``(job_image_id: str)``. Generates, stores and settles one image of a job."""
DELIVER_WEBHOOK_TASK = "webhooks.deliver"
"""Args: ``(delivery_id: str)``. One attempt at a job's webhook (sent by the API's sweeper)."""
RETENTION_TASK = "retention.sweep"
"""No args. One pass of the clean-up (sent by Celery beat, or by the API in embedded mode)."""


EMBEDDED_BROKER_URL = "memory://localhost/"
EMBEDDED_POLLING_INTERVAL_S = 0.005
"""The in-memory transport polls; kombu's default of 1 s would add up to a second per image."""


def broker_url(settings: Settings) -> str:
    return settings.redis_url or EMBEDDED_BROKER_URL


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings common to the API's sending client and the worker."""
    transport_options: dict[str, Any]
    if settings.redis_url:
        transport_options = {
            # an unacked task (its worker died) comes back after this long; the sweeper
            # usually retakes its image sooner, and a duplicate delivery is harmless
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        }
    else:
        transport_options = {"polling_interval": EMBEDDED_POLLING_INTERVAL_S}
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": settings.queue,
        "task_routes": {name: {"queue": settings.queue}
                        for name in (GENERATE_IMAGE_TASK, DELIVER_WEBHOOK_TASK, RETENTION_TASK)},
        # read by ``imagegate worker --beat`` alone
        "beat_schedule": {"retention": {"task": RETENTION_TASK, "schedule": settings.retention_interval_s}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # an image running when the broker connection drops goes on: its outcome goes to the
        # database, and a redelivered task finds the image done or leased
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        # a publish to a broker that is down fails fast; the job is already committed and the
        # sweeper sends it once the broker is back
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2},
    }
