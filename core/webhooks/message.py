"""What a webhook says: the ended job's view, as a Standard Webhooks event, and the key it is
signed with."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

from core.job_view import render_job
from core.models import ApiKey, Job, JobImage
from core.webhooks.signing import decode_secret, key_secret


def event_body(job: Job, images: Sequence[JobImage], *, url_for: Callable[[JobImage], str], now: datetime) -> str:
    """``{"type": "job.<status>", "timestamp", "data": <the job view>}``, the event shape of the
    Standard Webhooks specification."""
    return json.dumps({"type": f"job.{job.status}", "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "data": render_job(job, images, url_for=url_for)}, separators=(",", ":"))


def signing_key(server_secret: str, key: ApiKey | None) -> bytes:
    """The bytes a job's webhooks are signed with: its key's own secret if it has one, else the
    server's ``IMAGEGATE_WEBHOOK_SECRET``."""
    server = decode_secret(server_secret)
    if key is not None and key.webhook_secret_salt:
        return decode_secret(key_secret(server, key_id=key.id, salt=key.webhook_secret_salt))
    return server
