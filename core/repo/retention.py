"""The retention repository: the statements of the clean-up (:mod:`core.retention`) and the
record of when an input image was last sent.

A job expires ``IMAGEGATE_RESULT_TTL_S`` after it ended, or at its own ``expires_at``: its images'
rows are deleted and its row becomes a tombstone (``expired_at`` set, the request and its
idempotency key scrubbed), so that asking for it answers 410 Gone; tombstones are deleted in their
turn later. Ledger rows are never touched here: their job reference is set to NULL by the
database as the job row goes (``ON DELETE SET NULL``), and every report reads the ledger alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Delete, Insert, Select, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningDelete, Update

from core.jobs import JobStatus
from core.models import DeliveryStatus, InputObject, Job, JobImage, WebhookDelivery


def _expired(*, now: datetime, finished_before: datetime | None) -> ColumnElement[bool]:
    own = Job.expires_at < now
    return or_(own, Job.finished_at < finished_before) if finished_before is not None else own


def expired_jobs(*, now: datetime, finished_before: datetime | None, limit: int) -> Select[str]:
    """Ended jobs past their retention and not yet expired, whose webhook is not still on its
    way (its body is read from the job's rows at the first attempt)."""
    on_the_way = (select(WebhookDelivery.id)
                  .where(WebhookDelivery.job_id == Job.id, WebhookDelivery.status == DeliveryStatus.PENDING,
                         WebhookDelivery.payload.is_(None))
                  .exists())
    return (select(Job.id)
            .where(Job.expired_at.is_(None), Job.finished_at.is_not(None),
                   _expired(now=now, finished_before=finished_before), ~on_the_way)
            .order_by(Job.finished_at).limit(limit))


def delete_images(job_ids: Sequence[str]) -> Delete:
    return delete(JobImage).where(JobImage.job_id.in_(list(job_ids)))


def mark_expired(job_ids: Sequence[str], *, now: datetime) -> Update:
    """The jobs become tombstones: their request (the prompt, input image keys) is dropped."""
    return (update(Job).where(Job.id.in_(list(job_ids)), Job.expired_at.is_(None))
            .values(expired_at=now, request={}, idempotency_key=None, request_hash=None)
            .execution_options(synchronize_session=False))


def old_tombstones(*, expired_before: datetime, limit: int) -> Select[str]:
    return select(Job.id).where(Job.expired_at < expired_before).order_by(Job.expired_at).limit(limit)


def delete_jobs(job_ids: Sequence[str]) -> Delete:
    return delete(Job).where(Job.id.in_(list(job_ids)), Job.expired_at.is_not(None))


def oldest_open_job() -> Select[datetime]:
    """When the oldest job that has not ended was submitted: its input images are still read."""
    return select(func.min(Job.created_at)).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))


def unused_inputs(*, used_before: datetime, limit: int) -> ReturningDelete[str]:
    """Forget input images no request sent since ``used_before``; returns their object keys (the
    rows go first, then the objects: a crash between leaves an object behind, never a row
    without its object)."""
    keys = (select(InputObject.object_key).where(InputObject.last_used_at < used_before)
            .order_by(InputObject.last_used_at).limit(limit).scalar_subquery())
    return (delete(InputObject)
            .where(InputObject.object_key.in_(keys), InputObject.last_used_at < used_before)
            .returning(InputObject.object_key))


def touch_inputs(object_keys: Sequence[str], *, now: datetime, dialect: str) -> Insert:
    """Record that a request sent these input images now (an upsert)."""
    rows = [{"object_key": key, "last_used_at": now} for key in dict.fromkeys(object_keys)]
    if dialect == "postgresql":
        pg = postgresql.insert(InputObject).values(rows)
        return pg.on_conflict_do_update(index_elements=[InputObject.object_key],
                                        set_={"last_used_at": pg.excluded.last_used_at})
    lite = sqlite.insert(InputObject).values(rows)
    return lite.on_conflict_do_update(index_elements=[InputObject.object_key],
                                      set_={"last_used_at": lite.excluded.last_used_at})
