"""The jobs repository: every statement that reads or writes jobs and their images.

Each is a plain SQLAlchemy statement, executed by the API or the worker (both async). Those that
move jobs and images through the state machine are written to be safe under concurrency without
explicit locks: every transition is one conditional ``UPDATE`` (the row lock serialises writers),
job counters are incremented in the database, and an image's completion is fenced by its attempt
number so that a worker whose lease expired can never overwrite the attempt that replaced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Insert, Row, ScalarSelect, Select, and_, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate, Update

from core.jobs import ImageStatus, JobStatus, final_job_status
from core.models import Job, JobImage
from core.repo import webhooks

TERMINAL_JOB = [s.value for s in JobStatus if s.is_terminal]


# -- submit and read --------------------------------------------------------------------------


def insert_job(values: dict[str, Any]) -> Insert:
    return insert(Job).values(values)


def insert_images(rows: list[dict[str, Any]]) -> Insert:
    """A job's n images, in one statement."""
    return insert(JobImage).values(rows)


def by_id(job_id: str) -> Select[Job]:
    return select(Job).where(Job.id == job_id)


def owned(job_id: str, key_id: str) -> Select[Job]:
    """The job, if this key made it."""
    return select(Job).where(Job.id == job_id, Job.api_key_id == key_id)


def by_idempotency_key(key_id: str, idempotency_key: str) -> Select[Job]:
    return select(Job).where(Job.api_key_id == key_id, Job.idempotency_key == idempotency_key)


def retried(key_id: str, request_hash: str, *, since: datetime) -> Select[Job]:
    """The latest job of this key for the same request since ``since`` that did not fail or get
    canceled: the one an SDK's retry of that request belongs to."""
    return (select(Job)
            .where(Job.api_key_id == key_id, Job.request_hash == request_hash, Job.created_at >= since,
                   Job.status.not_in([JobStatus.FAILED, JobStatus.CANCELED]))
            .order_by(Job.id.desc()).limit(1))


def forget_idempotency_key(job_id: str) -> Update:
    """An Idempotency-Key older than its window may be used again: the old job lets go of it."""
    return update(Job).where(Job.id == job_id).values(idempotency_key=None)


def with_images(job_id: str, *, key_id: str | None = None) -> Select[Job, JobImage]:
    """The job and its images in one query (one row per image, in order; the job alone, with
    None, when it has none), if ``key_id`` (when given) made it."""
    query = (select(Job, JobImage).outerjoin(JobImage, JobImage.job_id == Job.id).where(Job.id == job_id)
             .order_by(JobImage.index))
    if key_id is not None:
        query = query.where(Job.api_key_id == key_id)
    return query


def status_of(job_id: str) -> Select[str]:
    return select(Job.status).where(Job.id == job_id)


def images_of(job_id: str) -> Select[JobImage]:
    return select(JobImage).where(JobImage.job_id == job_id).order_by(JobImage.index)


def image_by_id(image_id: str) -> Select[JobImage]:
    return select(JobImage).where(JobImage.id == image_id)


def list_for_key(key_id: str, *, limit: int, before: str | None, status: str | None) -> Select[Job]:
    """A key's jobs that have not expired, newest first (ids are time-ordered), older than
    ``before``; one more than ``limit``, so the caller knows whether there are more."""
    query = (select(Job).where(Job.api_key_id == key_id, Job.expired_at.is_(None))
             .order_by(Job.id.desc()).limit(limit + 1))
    if before:
        query = query.where(Job.id < before)
    if status:
        query = query.where(Job.status == status)
    return query


def run_context(job_id: str) -> Select[Any]:
    """What a worker needs of a job to run its images (a plain read, no lock)."""
    return select(Job.request, Job.routes, Job.n, Job.model, Job.api_key_id, Job.pricing,
                  Job.hold_per_image_micros, Job.created_at).where(Job.id == job_id)


# -- the state machine ------------------------------------------------------------------------


def _waiting(now: datetime) -> ColumnElement[bool]:
    """Waiting for an attempt: queued, or running on a worker whose lease has expired."""
    return or_(JobImage.status == ImageStatus.QUEUED,
               and_(JobImage.status == ImageStatus.RUNNING, JobImage.lease_until < now))


def _claimable(now: datetime, max_attempts: int) -> ColumnElement[bool]:
    return and_(_waiting(now), JobImage.attempts < max_attempts)


def _claim(*conditions: ColumnElement[bool], now: datetime, lease_s: float, max_attempts: int) -> Update:
    """Images matching ``conditions`` that wait for an attempt and may still have one become
    running under a new lease, one attempt more."""
    return (
        update(JobImage)
        .where(*conditions, _claimable(now, max_attempts))
        .values(status=ImageStatus.RUNNING, attempts=JobImage.attempts + 1, started_at=now,
                lease_until=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )


def claim_image(image_id: str, *, now: datetime, lease_s: float,
                max_attempts: int) -> ReturningUpdate[str, int, int]:
    """Take an image to run: queued, or running on a worker whose lease has expired, and fewer
    than ``max_attempts`` attempts started."""
    return _claim(JobImage.id == image_id, now=now, lease_s=lease_s, max_attempts=max_attempts).returning(
        JobImage.job_id, JobImage.index, JobImage.attempts)


def claim_with_context(image_id: str, *, now: datetime, lease_s: float, max_attempts: int) -> Select[Any]:
    """PostgreSQL: :func:`claim_image`, :func:`mark_job_running` and :func:`run_context` in one
    statement (data-modifying CTEs), in the usual lock order: the image row, then the job row.
    One row (``job_id``, ``image_index``, ``attempt`` and the columns of :func:`run_context`) if
    the image was claimed, none otherwise."""
    claimed = _claim(JobImage.id == image_id, now=now, lease_s=lease_s, max_attempts=max_attempts).returning(
        JobImage.job_id, JobImage.index.label("image_index"), JobImage.attempts.label("attempt")).cte("claimed")
    started = (
        update(Job)
        .where(Job.id == claimed.c.job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=now)
        .returning(Job.id)
        .cte("started")
    )
    return (
        select(claimed.c.job_id, claimed.c.image_index, claimed.c.attempt, Job.request, Job.routes, Job.n,
               Job.model, Job.api_key_id, Job.pricing, Job.hold_per_image_micros, Job.created_at)
        .join_from(claimed, Job, Job.id == claimed.c.job_id)
        .add_cte(started)
    )


def lock_group(job_id: str, indexes: list[int], *, now: datetime, max_attempts: int) -> Select[str]:
    """The claimable images of a call group that no other transaction holds (SKIP LOCKED): the
    siblings' own tasks claim theirs at the same moment, and nobody may wait on anybody."""
    return (
        select(JobImage.id)
        .where(JobImage.job_id == job_id, JobImage.index.in_(indexes), _claimable(now, max_attempts))
        .order_by(JobImage.index)
        .with_for_update(skip_locked=True)
    )


def claim_group(image_ids: list[str], *, now: datetime, lease_s: float,
                max_attempts: int) -> ReturningUpdate[str, int, int]:
    """Take the siblings :func:`lock_group` locked (upstreams that make n images per call)."""
    return _claim(JobImage.id.in_(image_ids), now=now, lease_s=lease_s, max_attempts=max_attempts).returning(
        JobImage.id, JobImage.index, JobImage.attempts)


def renew_leases(held: Sequence[tuple[str, int]], *, now: datetime, lease_s: float) -> ReturningUpdate[str]:
    """One worker's heartbeat: the images it runs, as (id, attempt), get a new lease, in one
    statement. An image another attempt took over, or that was canceled or failed meanwhile, is
    left alone and missing from the ids returned. Rows are locked in id order, as every statement
    that locks several image rows does, so that two of them never wait on each other."""
    mine = and_(JobImage.status == ImageStatus.RUNNING, tuple_(JobImage.id, JobImage.attempts).in_(list(held)))
    return (
        update(JobImage)
        .where(JobImage.id.in_(_in_id_order(mine)), mine)
        .values(lease_until=now + timedelta(seconds=lease_s))
        .returning(JobImage.id)
        .execution_options(synchronize_session=False)
    )


def _in_id_order(condition: ColumnElement[bool], *, limit: int | None = None,
                 skip_locked: bool = False) -> ScalarSelect[str]:
    """The ids of the image rows matching ``condition``, locked in id order (PostgreSQL; SQLite
    has one writer at a time anyway)."""
    query = select(JobImage.id).where(condition).order_by(JobImage.id)
    if limit is not None:
        query = query.limit(limit)
    return query.with_for_update(skip_locked=skip_locked).scalar_subquery()


def mark_job_running(job_id: str, *, now: datetime) -> Update:
    return (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=now)
    )


def finish_image(image_id: str, *, attempt: int, values: dict[str, Any]) -> ReturningUpdate[str]:
    """Record an image's outcome, only if this attempt still owns it; returns its id if it did."""
    return (
        update(JobImage)
        .where(
            JobImage.id == image_id,
            JobImage.status == ImageStatus.RUNNING,
            JobImage.attempts == attempt,
        )
        .values(**values)
        .returning(JobImage.id)
    )


def count_outcome(
    job_id: str, *, succeeded: int = 0, failed: int = 0, canceled: int = 0, cost_micros: int = 0
) -> ReturningUpdate[int, int, int, int]:
    """Count finished images (and add what they were billed) on the job, in one statement.

    Lock order, everywhere: image rows, then the job row (this statement), then the key row (the
    ledger's committed spend). Keeping to it is what lets concurrent settlements never deadlock.
    """
    return (
        update(Job)
        .where(Job.id == job_id)
        .values(
            succeeded=Job.succeeded + succeeded,
            failed=Job.failed + failed,
            canceled=Job.canceled + canceled,
            cost_micros=Job.cost_micros + cost_micros,
        )
        .returning(Job.n, Job.succeeded, Job.failed, Job.canceled)
    )


def closing_status(counts: Row[int, int, int, int] | tuple[int, int, int, int]) -> JobStatus | None:
    """The status a job with ``counts`` (n, succeeded, failed, canceled) ends with, if it is done."""
    n, succeeded, failed, canceled = counts
    return final_job_status(total=n, succeeded=succeeded, failed=failed, canceled=canceled)


def finalize_job(job_id: str, counts: Row[int, int, int, int] | tuple[int, int, int, int], *,
                 now: datetime) -> ReturningUpdate[str] | None:
    """The statement closing the job if ``counts`` (n, succeeded, failed, canceled) says it is done;
    it returns the status it closed the job with (nothing if the job had ended already), and
    :func:`job_ended` follows, in the same transaction."""
    n = counts[0]
    status = closing_status(counts)
    if status is None:
        return None
    values: dict[str, Any] = {"status": status, "finished_at": now}
    if status is JobStatus.FAILED:
        values["error_code"] = "all_images_failed"
        values["error_message"] = f"All {n} images failed."
    return (update(Job).where(Job.id == job_id, Job.status.not_in(TERMINAL_JOB)).values(**values)
            .returning(Job.status))


async def job_ended(session: AsyncSession, job_id: str, *, now: datetime) -> None:
    """What follows a job's end, in the transaction that ended it: its own retention starts
    (``expires_at``), and its webhook goes into the outbox."""
    row = (await session.execute(select(Job.webhook_url, Job.result_ttl_s).where(Job.id == job_id))).one()
    if row.result_ttl_s is not None:
        await session.execute(update(Job).where(Job.id == job_id)
                              .values(expires_at=now + timedelta(seconds=row.result_ttl_s)))
    if row.webhook_url:
        await session.execute(webhooks.new_delivery(job_id, row.webhook_url, now=now))


def waiting_image(image_id: str, *, now: datetime) -> Select[str, str, int]:
    """The image, locked, if it waits for an attempt: its (job id, status, attempts)."""
    return (
        select(JobImage.job_id, JobImage.status, JobImage.attempts)
        .where(JobImage.id == image_id, _waiting(now))
        .with_for_update()
    )


def fail_waiting_image(image_id: str, *, status: str, attempts: int, now: datetime, code: str,
                       message: str) -> ReturningUpdate[str]:
    """Fail an image that still waits for an attempt as it was read (status and attempts), with
    ``code`` and ``message``; returns its job id if it did."""
    return (
        update(JobImage)
        .where(JobImage.id == image_id, JobImage.status == status, JobImage.attempts == attempts, _waiting(now))
        .values(status=ImageStatus.FAILED, error_code=code, error_message=message, finished_at=now,
                lease_until=None)
        .returning(JobImage.job_id)
        .execution_options(synchronize_session=False)
    )


def expired_on_last_attempt(*, now: datetime, max_attempts: int, limit: int = 100) -> Select[str]:
    """Running images whose lease expired during their last allowed attempt: the sweeper fails
    them instead of sending them again."""
    return (
        select(JobImage.id)
        .where(JobImage.status == ImageStatus.RUNNING, JobImage.lease_until < now,
               JobImage.attempts >= max_attempts)
        .order_by(JobImage.id)
        .limit(limit)
    )


def cancel_images(job_id: str, *, now: datetime) -> ReturningUpdate[str]:
    """Cancel a job's images that no living attempt is making: queued, or running on a worker
    whose lease has expired (should that worker still record an outcome, the attempt fence of
    :func:`finish_image` refuses it). Images running under a live lease go on."""
    waiting = and_(JobImage.job_id == job_id, _waiting(now))
    return (
        update(JobImage)
        .where(JobImage.id.in_(_in_id_order(waiting)), waiting)
        .values(status=ImageStatus.CANCELED, finished_at=now, lease_until=None)
        .returning(JobImage.id)
        .execution_options(synchronize_session=False)
    )


def requeue_orphans(*, now: datetime, requeue_after_s: float, max_attempts: int,
                    limit: int = 500) -> ReturningUpdate[str]:
    """Images whose task is presumed lost: queued too long, or running past an expired lease with
    an attempt left (one on its last attempt is failed instead, see :func:`expired_on_last_attempt`).

    Marks them as enqueued now and returns their ids, so that concurrent sweepers (one per API
    process) each send a given image at most once per window; rows another transaction holds
    (a heartbeat, a record) are skipped until the next pass.
    """
    stale = now - timedelta(seconds=requeue_after_s)
    lost = or_(
        and_(JobImage.status == ImageStatus.QUEUED, JobImage.enqueued_at < stale),
        and_(
            JobImage.status == ImageStatus.RUNNING,
            JobImage.lease_until < now,
            JobImage.attempts < max_attempts,
            # not re-sent since the lease expired, or re-sent long ago
            or_(JobImage.enqueued_at < JobImage.lease_until, JobImage.enqueued_at < stale),
        ),
    )
    return _mark_enqueued(lost, now=now, limit=limit)


def requeue_waiting(*, now: datetime, max_attempts: int, limit: int = 500) -> ReturningUpdate[str]:
    """Every image waiting for a task that was sent before ``now``: the broker restarted and lost
    its queue. Call it until it returns fewer than ``limit`` ids (each call marks those it returns
    as enqueued at ``now``, so the next one goes on where it stopped)."""
    waiting = and_(
        or_(JobImage.status == ImageStatus.QUEUED,
            and_(JobImage.status == ImageStatus.RUNNING, JobImage.lease_until < now,
                 JobImage.attempts < max_attempts)),
        JobImage.enqueued_at < now,
    )
    return _mark_enqueued(waiting, now=now, limit=limit)


def _mark_enqueued(condition: ColumnElement[bool], *, now: datetime, limit: int) -> ReturningUpdate[str]:
    return (
        update(JobImage)
        .where(JobImage.id.in_(_in_id_order(condition, limit=limit, skip_locked=True)))
        .values(enqueued_at=now)
        .returning(JobImage.id)
        .execution_options(synchronize_session=False)
    )


# an image whose task could not be sent looks as old as can be, so the next sweep sends it
NEVER_SENT = datetime(1970, 1, 1, tzinfo=UTC)


def mark_unsent(image_ids: list[str]) -> Update:
    """The broker refused these images' tasks: leave them for the sweeper's next pass."""
    return (
        update(JobImage)
        .where(JobImage.id.in_(image_ids), JobImage.status == ImageStatus.QUEUED)
        .values(enqueued_at=NEVER_SENT)
        .execution_options(synchronize_session=False)
    )


def release_all_running(*, now: datetime) -> ReturningUpdate[str]:
    """Embedded mode at startup: this process's previous worker is gone; its images go back."""
    return (
        update(JobImage)
        .where(JobImage.status.in_([ImageStatus.RUNNING, ImageStatus.QUEUED]))
        .values(status=ImageStatus.QUEUED, lease_until=None, enqueued_at=now)
        .returning(JobImage.id)
        .execution_options(synchronize_session=False)
    )
