"""The webhook outbox repository: the delivery written as a job ends, and the statements that
claim, load and record deliveries.

A delivery is written in the very transaction that ends its job (:func:`new_delivery`), so a
job that ended always has its webhook on the way, whatever process dies afterwards. The API's
sweeper claims due deliveries (:func:`claim_due`: their next attempt is moved a lease ahead, so a
task lost on the way is sent again once it passes) and sends one task per delivery; the worker
makes the attempt and records it (:func:`record_attempt`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CTE, ColumnElement, Insert, Select, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate, Update

from core.ids import new_id
from core.models import DeliveryStatus, Job, WebhookAttempt, WebhookDelivery
from core.repo.binds import bound

CLAIM_LEASE = timedelta(seconds=120)
"""How long a sent delivery task has to make its attempt before the delivery is sent again
(above ``IMAGEGATE_WEBHOOK_TIMEOUT_S``'s default)."""


def new_delivery(job_id: str, url: str, *, now: datetime) -> Insert:
    """The job's webhook, put in the outbox (the caller's transaction ends the job); the row's id
    is the ``webhook-id`` of every attempt."""
    return insert(WebhookDelivery).values(
        id=new_id("msg"), job_id=job_id, url=url, status=DeliveryStatus.PENDING, attempts=0, created_at=now,
        next_attempt_at=now)


def new_delivery_if(counted: CTE, closed: ColumnElement[bool], *, now: Any, delivery_id: Any) -> Insert:
    """PostgreSQL, in one statement with ``counted`` (:func:`core.repo.jobs.count_and_close`): the
    job's webhook into the outbox when ``closed`` (this statement ended the job) and it has one,
    as delivery ``delivery_id`` (a ``new_id("msg")``)."""
    table = WebhookDelivery.__table__
    stamp = bound(now, table.c.created_at.type)
    values = select(bound(delivery_id, table.c.id.type).label("id"), counted.c.id.label("job_id"),
                    counted.c.webhook_url.label("url"), literal(DeliveryStatus.PENDING.value).label("status"),
                    literal(0).label("attempts"), stamp.label("created_at"), stamp.label("next_attempt_at")
                    ).where(closed, counted.c.webhook_url.is_not(None))
    return insert(WebhookDelivery).from_select(["id", "job_id", "url", "status", "attempts", "created_at",
                                                "next_attempt_at"], values)


def claim_due(*, now: datetime, limit: int) -> ReturningUpdate[str]:
    """Pending deliveries whose next attempt is due, their next attempt moved a lease ahead;
    returns their ids. Rows another sweeper holds are skipped (SKIP LOCKED)."""
    due = (select(WebhookDelivery.id)
           .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now)
           .order_by(WebhookDelivery.next_attempt_at).limit(limit)
           .with_for_update(skip_locked=True).scalar_subquery())
    return (update(WebhookDelivery).where(WebhookDelivery.id.in_(due))
            .values(next_attempt_at=now + CLAIM_LEASE)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False))


def pending(delivery_id: str) -> Select[WebhookDelivery, str]:
    """The delivery, if still pending, with its job's key id."""
    return (select(WebhookDelivery, Job.api_key_id)
            .join(Job, Job.id == WebhookDelivery.job_id)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING))


def fix_payload(delivery_id: str, payload: str) -> Update:
    """The body every attempt sends, written once."""
    return (update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.payload.is_(None))
            .values(payload=payload))


async def record_attempt(session: AsyncSession, delivery: WebhookDelivery, *, at: datetime,
                         status_code: int | None, error: str | None, duration_ms: int, delivered: bool,
                         retry_at: datetime | None) -> None:
    """Record one attempt; the delivery is delivered, due again at ``retry_at``, or (neither)
    given up."""
    attempt = delivery.attempts + 1
    await session.execute(insert(WebhookAttempt).values(
        delivery_id=delivery.id, attempt=attempt, at=at, status_code=status_code, error=error,
        duration_ms=duration_ms))
    values: dict[str, Any] = {"attempts": attempt}
    if delivered:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=at)
    elif retry_at is None:
        values.update(status=DeliveryStatus.FAILED)
    else:
        values.update(next_attempt_at=retry_at)
    await session.execute(update(WebhookDelivery)
                          .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == delivery.attempts)
                          .values(values))


def of_job(job_id: str) -> Select[WebhookDelivery]:
    return select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.created_at)


def attempts_of(delivery_ids: list[str]) -> Select[WebhookAttempt]:
    return (select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt))
