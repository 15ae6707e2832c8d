"""Use case: make one attempt at a webhook delivery (the task ``webhooks.deliver``).

The delivery's body is fixed at its first attempt (the ended job's view), so every attempt sends
the same bytes under the same ``webhook-id``; each attempt is recorded, then the delivery is
delivered, due again after an exponential backoff, or given up after ``IMAGEGATE_WEBHOOK_GIVE_UP_S``.
"""

from __future__ import annotations

import logging
import time

from core import signing as url_signing
from core.db import transaction
from core.models import ApiKey, JobImage
from core.models.types import utcnow
from core.repo import jobs, keys, webhooks
from core.webhooks import signing
from core.webhooks.delivery import AttemptResult, next_attempt, post_webhook
from core.webhooks.message import event_body, signing_key
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


async def deliver_webhook(runtime: WorkerRuntime, delivery_id: str) -> str:
    """One attempt; returns what became of the delivery."""
    settings = runtime.settings
    async with transaction(runtime.sessions) as session:
        found = (await session.execute(webhooks.pending(delivery_id))).one_or_none()
        if found is None:
            return "not pending"
        delivery, key_id = found.tuple()
        key = await session.scalar(keys.by_id(key_id))
        payload = delivery.payload
        if payload is None:
            job = (await session.scalars(jobs.by_id(delivery.job_id))).one()
            images = list(await session.scalars(jobs.images_of(delivery.job_id)))
            payload = event_body(job, images, url_for=lambda image: _file_url(runtime, image), now=utcnow())
            await session.execute(webhooks.fix_payload(delivery_id, payload))
        session.expunge(delivery)
    body = payload.encode()
    if settings.webhook_secret is None:
        result = AttemptResult(None, "IMAGEGATE_WEBHOOK_SECRET is not set: webhooks cannot be signed", 0)
    else:
        secret = signing_key(settings.webhook_secret.get_secret_value(), key if isinstance(key, ApiKey) else None)
        headers = signing.headers(secret, msg_id=delivery.id, timestamp=int(time.time()), body=body)
        result = await post_webhook(delivery.url, body=body, headers=headers,
                                    allow=settings.fetch_allow_hosts, timeout_s=settings.webhook_timeout_s)
    now = utcnow()
    retry_at = None if result.delivered or settings.webhook_secret is None else next_attempt(
        attempts=delivery.attempts + 1, now=now, created_at=delivery.created_at,
        base_s=settings.webhook_retry_base_s, max_s=settings.webhook_retry_max_s,
        give_up_s=settings.webhook_give_up_s)
    async with transaction(runtime.sessions) as session:
        await webhooks.record_attempt(session, delivery, at=now, status_code=result.status_code, error=result.error,
                                duration_ms=result.duration_ms, delivered=result.delivered, retry_at=retry_at)
    outcome = "delivered" if result.delivered else ("retrying" if retry_at is not None else "given up")
    log.info("webhook %s of job %s: attempt %d %s (%s)", delivery.id, delivery.job_id, delivery.attempts + 1,
             outcome, result.status_code or result.error)
    return outcome


def _file_url(runtime: WorkerRuntime, image: JobImage) -> str:
    return url_signing.file_url(runtime.settings, runtime.url_signing_key, runtime.store, image.id, image.object_key)
