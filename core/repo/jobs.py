"""The jobs repository: every statement that reads or writes jobs and their images.

Each is a plain SQLAlchemy statement, executed by the API or the worker (both async). Those that
move jobs and images through the state machine are written to be safe under concurrency without
explicit locks: every transition is one conditional ``UPDATE`` (the row lock serialises writers),
job counters are incremented in the database, and an image's completion is fenced by its attempt
number so that a worker whose lease expired can never overwrite the attempt that replaced it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Row,
    ScalarSelect,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningUpdate, Update
from sqlalchemy.sql.elements import BindParameter

from core.jobs import ImageStatus, JobStatus, final_job_status
from core.models import Job, JobImage
from core.models.types import UTCDateTime
from core.repo import webhooks
from core.repo.binds import Prepared, bound, param

TERMINAL_JOB = [s.value for s in JobStatus if s.is_terminal]


# -- submit and read --------------------------------------------------------------------------


def with_defaults(model: type[Job] | type[JobImage], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` and the scalar defaults of the columns it leaves out (``INSERT ... SELECT``, as
    :func:`submit_statement` makes, applies no Python-side default)."""
    table = model.__table__
    defaults = {c.name: c.default.arg for c in table.columns
                if c.name not in values and c.default is not None and c.default.is_scalar}
    return {**values, **defaults}


def _values(table: Any, values: dict[str, Any]) -> list[Any]:
    return [bound(value, table.c[name].type).label(name) for name, value in values.items()]


def submit_statement(job: dict[str, Any], images: list[dict[str, Any]], *, guard: CTE | None = None,
                     writes: Sequence[CTE] = ()) -> Select[int]:
    """PostgreSQL: the job and its images (every column given: :func:`with_defaults`) inserted in
    one statement, with ``writes`` (the hold: the key's reserve ``guard`` and its ledger row), so
    a submit is one round trip. With a ``guard`` (a data-modifying CTE), nothing is inserted
    unless it returned a row. Returns how many jobs it inserted: 1, or 0 when the guard refused
    (the budget would be exceeded). Values may be :func:`core.repo.binds.param` placeholders."""
    values = select(*_values(Job.__table__, job))
    if guard is not None:
        values = values.select_from(guard)
    inserted = insert(Job).from_select(list(job), values, include_defaults=False).returning(Job.id).cte("job")
    rows = [select(*_values(JobImage.__table__, image)).select_from(inserted) for image in images]
    images_cte = insert(JobImage).from_select(list(images[0]), rows[0] if len(rows) == 1 else union_all(*rows),
                                              include_defaults=False).cte("images")
    return select(func.count()).select_from(inserted).add_cte(images_cte, *writes)


def insert_steps(job: dict[str, Any], images: list[dict[str, Any]], *,
                 dialect: Dialect) -> list[tuple[Prepared, dict[str, Any]]]:
    """The job and its images (:func:`with_defaults` applied) as two ``INSERT ... SELECT``
    statements, each with its parameters, for the submits :func:`submit_statement` does not make
    (SQLite, input images, a monthly budget). Built and compiled once per shape."""
    job = with_defaults(Job, job)
    images = [with_defaults(JobImage, image) for image in images]
    params: dict[str, Any] = {f"j_{name}": value for name, value in job.items()}
    for i, image in enumerate(images):
        params.update({f"i{i}_{name}": value for name, value in image.items()})
    return [(statement, params) for statement in _insert_prepared(dialect, tuple(job), tuple(images[0]), len(images))]


@functools.lru_cache(maxsize=128)
def _insert_prepared(dialect: Dialect, job_columns: tuple[str, ...], image_columns: tuple[str, ...],
                     n: int) -> tuple[Prepared, Prepared]:
    job = select(*_values(Job.__table__, {name: param(f"j_{name}") for name in job_columns}))
    rows = [select(*_values(JobImage.__table__, {name: param(f"i{i}_{name}") for name in image_columns}))
            for i in range(n)]
    return (Prepared(insert(Job).from_select(list(job_columns), job, include_defaults=False), dialect),
            Prepared(insert(JobImage).from_select(list(image_columns), rows[0] if n == 1 else union_all(*rows),
                                                  include_defaults=False), dialect))


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


class JobRead:
    """The job and its images in one query (one row per image, in order; the job alone when it has
    none), if the key ``key_id`` (when the read is ``keyed``) made it: compiled once per dialect
    (:class:`Prepared`), its rows made into :class:`Job` and :class:`JobImage` instances here,
    without the ORM's query machinery (three times the CPU for this read of every answer). The
    instances belong to no session (as those of a closed session): their relationships are not
    loaded."""

    def __init__(self, dialect: Dialect, *, keyed: bool) -> None:
        self.job_attributes = _attributes(Job)
        self.image_attributes = _attributes(JobImage)
        columns = [column for _, column in self.job_attributes]
        columns += [column.label(f"image_{column.name}") for _, column in self.image_attributes]
        query = (select(*columns).outerjoin(JobImage, JobImage.job_id == Job.id)
                 .where(Job.id == bindparam("job_id", type_=String())).order_by(JobImage.index))
        if keyed:
            query = query.where(Job.api_key_id == bindparam("key_id", type_=String()))
        self.prepared = Prepared(query, dialect)
        # what the ORM would apply to each value (UTC datetimes, SQLite's text dates and JSON)
        self.processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]

    async def run(self, engine: AsyncEngine, reads: async_sessionmaker[AsyncSession], job_id: str,
                  key_id: str | None = None) -> tuple[Job, list[JobImage]] | None:
        """Read the job: on PostgreSQL alone on a connection (:func:`core.db.run_alone`), on
        SQLite in a session of ``reads``."""
        parameters = {"job_id": job_id} if key_id is None else {"job_id": job_id, "key_id": key_id}
        rows: Sequence[Sequence[Any]]
        if engine.dialect.name == "postgresql":
            rows = (await self.prepared.run_alone(engine, parameters)).all()
        else:
            async with reads() as session:
                rows = (await self.prepared.execute(session, parameters)).all()
        return self.entities(rows)

    def entities(self, rows: Sequence[Sequence[Any]]) -> tuple[Job, list[JobImage]] | None:
        if not rows:
            return None
        processors, width = self.processors, len(self.job_attributes)
        images: list[JobImage] = []
        job: Job | None = None
        for row in rows:
            values = [value if process is None or value is None else process(value)
                      for process, value in zip(processors, row, strict=True)]
            if job is None:
                job = Job(**{name: value for (name, _), value in zip(self.job_attributes, values, strict=False)})
            if values[width] is not None:  # the image's id: None when the job has no image
                images.append(JobImage(**{name: value for (name, _), value
                                          in zip(self.image_attributes, values[width:], strict=True)}))
        assert job is not None
        return job, images


@functools.lru_cache(maxsize=8)
def job_read(dialect: Dialect, *, keyed: bool) -> JobRead:
    return JobRead(dialect, keyed=keyed)


def _attributes(model: type[Job] | type[JobImage]) -> list[tuple[str, Any]]:
    """The mapped attributes of a table's columns, in the table's order: (name, column)."""
    return [(attribute.key, attribute.columns[0]) for attribute in model.__mapper__.column_attrs]


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


def _claim(*conditions: ColumnElement[bool], now: Any, lease_s: float = 0.0, max_attempts: Any,
           lease_until: Any = None) -> Update:
    """Images matching ``conditions`` that wait for an attempt and may still have one become
    running under a new lease (until ``now`` + ``lease_s``, or ``lease_until``), one attempt more."""
    return (
        update(JobImage)
        .where(*conditions, _claimable(now, max_attempts))
        .values(status=ImageStatus.RUNNING, attempts=JobImage.attempts + 1, started_at=now,
                lease_until=now + timedelta(seconds=lease_s) if lease_until is None else lease_until)
        .execution_options(synchronize_session=False)
    )


def claim_image() -> ReturningUpdate[str, int, int]:
    """Take an image to run: queued, or running on a worker whose lease has expired, and fewer
    than ``max_attempts`` attempts started. Parameters ``image_id``, ``now``, ``lease_until`` and
    ``max_attempts``; returns ``job_id``, ``image_index`` and ``attempt`` if it took the image."""
    return _claim(JobImage.id == bindparam("image_id", type_=String()), now=bindparam("now", type_=UTCDateTime()),
                  max_attempts=bindparam("max_attempts", type_=Integer()),
                  lease_until=bindparam("lease_until", type_=UTCDateTime())).returning(
        JobImage.job_id, JobImage.index.label("image_index"), JobImage.attempts.label("attempt"))


def claim_with_context(image_id: str, *, now: datetime, lease_s: float, max_attempts: int,
                       dialect: Dialect) -> tuple[Prepared, dict[str, Any]]:
    """PostgreSQL: :func:`claim_image`, :func:`mark_job_running` and :func:`run_context` in one
    statement (data-modifying CTEs), in the usual lock order: the image row, then the job row.
    One row (``job_id``, ``image_index``, ``attempt`` and the columns of :func:`run_context`) if
    the image was claimed, none otherwise. The statement is built and compiled once
    (:func:`_claim_prepared`); this gives it with its parameters."""
    return _claim_prepared(dialect), {"image_id": image_id, "now": now,
                                      "lease_until": now + timedelta(seconds=lease_s), "max_attempts": max_attempts}


@functools.lru_cache(maxsize=8)
def _claim_prepared(dialect: Dialect) -> Prepared:
    """The statement of :func:`claim_with_context`, with bind parameters for its values."""
    claimed = claim_image().cte("claimed")
    started = mark_job_running(claimed.c.job_id, now=bindparam("now", type_=UTCDateTime())).returning(Job.id)
    return Prepared(
        select(claimed.c.job_id, claimed.c.image_index, claimed.c.attempt, Job.request, Job.routes, Job.n,
               Job.model, Job.api_key_id, Job.pricing, Job.hold_per_image_micros, Job.created_at)
        .join_from(claimed, Job, Job.id == claimed.c.job_id)
        .add_cte(started.cte("started")), dialect)


def claim_steps(image_id: str, *, now: datetime, lease_s: float, max_attempts: int,
                dialect: Dialect) -> tuple[Prepared, Prepared, dict[str, Any]]:
    """SQLite (no data-modifying CTEs): the claim of :func:`claim_with_context` as two statements
    run one after the other in one transaction, each built and compiled once: the image's claim
    (:func:`claim_image`: ``job_id``, ``image_index``, ``attempt`` if it was claimed), then, given
    the ``job_id`` it returned, the job marked running (:func:`mark_job_running`)."""
    claim, start = _claim_steps(dialect)
    return claim, start, {"image_id": image_id, "now": now, "lease_until": now + timedelta(seconds=lease_s),
                          "max_attempts": max_attempts}


@functools.lru_cache(maxsize=8)
def _claim_steps(dialect: Dialect) -> tuple[Prepared, Prepared]:
    start = mark_job_running(bindparam("job_id", type_=String()), now=bindparam("now", type_=UTCDateTime()))
    return Prepared(claim_image(), dialect), Prepared(start, dialect)


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


def mark_job_running(job_id: Any, *, now: Any) -> Update:
    return (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=now)
    )


def finish_image(image_id: Any, *, attempt: Any, values: dict[str, Any]) -> ReturningUpdate[str]:
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


@functools.lru_cache(maxsize=64)
def finish_prepared(dialect: Dialect, value_columns: tuple[str, ...]) -> Prepared:
    """:func:`finish_image` built and compiled once per set of columns: parameters ``image_id``,
    ``attempt`` and ``v_<column>`` for each column's value."""
    return Prepared(finish_image(bindparam("image_id", type_=String()), attempt=bindparam("attempt", type_=Integer()),
                                 values={name: image_param(name, f"v_{name}") for name in value_columns}), dialect)


@functools.lru_cache(maxsize=8)
def count_prepared(dialect: Dialect) -> Prepared:
    """:func:`count_outcome` built and compiled once: parameters ``job_id``, ``succeeded``,
    ``failed``, ``canceled`` and ``cost_micros``."""
    return Prepared(count_outcome(bindparam("job_id", type_=String()), succeeded=count_param("succeeded"),
                                  failed=count_param("failed"), canceled=count_param("canceled"),
                                  cost_micros=count_param("cost_micros")), dialect)


def count_outcome(
    job_id: Any, *, succeeded: Any = 0, failed: Any = 0, canceled: Any = 0, cost_micros: Any = 0
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


def finalize_steps(job_id: str, counts: Row[int, int, int, int] | tuple[int, int, int, int], *, now: datetime,
                   dialect: Dialect) -> tuple[Prepared, dict[str, Any]] | None:
    """The statement closing the job if ``counts`` (n, succeeded, failed, canceled) says it is
    done, with its parameters (None if it is not); it returns the status it closed the job with
    (nothing if the job had ended already), and :func:`job_ended` follows, in the same
    transaction. Built and compiled once per shape."""
    status = closing_status(counts)
    if status is None:
        return None
    params: dict[str, Any] = {"job_id": job_id, "status": status, "finished_at": now}
    if status is JobStatus.FAILED:
        params.update(error_code="all_images_failed", error_message=f"All {counts[0]} images failed.")
    return _finalize_prepared(dialect, status is JobStatus.FAILED), params


@functools.lru_cache(maxsize=8)
def _finalize_prepared(dialect: Dialect, failed: bool) -> Prepared:
    columns = ("status", "finished_at", "error_code", "error_message") if failed else ("status", "finished_at")
    return Prepared(update(Job).where(Job.id == job_param("id", "job_id"), not_(_terminal(Job.status)))
                    .values({name: job_param(name, name) for name in columns}).returning(Job.status), dialect)


@functools.lru_cache(maxsize=8)
def _expires_prepared(dialect: Dialect) -> Prepared:
    return Prepared(update(Job).where(Job.id == job_param("id", "job_id"))
                    .values(expires_at=job_param("expires_at", "expires_at")), dialect)


def image_param(column: str, name: str) -> BindParameter[Any]:
    """A parameter ``name`` typed as the image column ``column``."""
    return bindparam(name, type_=JobImage.__table__.c[column].type)


def job_param(column: str, name: str) -> BindParameter[Any]:
    """A parameter ``name`` typed as the job column ``column``."""
    return bindparam(name, type_=Job.__table__.c[column].type)


def count_param(name: str) -> BindParameter[Any]:
    return bindparam(name, type_=Integer())


def count_and_close(job_id: Any, guard: CTE, *, succeeded: Any = 0, failed: Any = 0, canceled: Any = 0,
                    cost_micros: Any = 0, now: Any) -> ReturningUpdate[str, int, int, int, int, str, str | None]:
    """PostgreSQL, in one statement with ``guard`` (the image rows' update, a data-modifying CTE),
    only if it returned a row: :func:`count_outcome` and, when these images were the job's last,
    what :func:`finalize_steps` and :func:`job_ended` do (status, ``finished_at``, the error of a
    job whose images all failed, ``expires_at``), in one ``UPDATE``. Its right-hand sides read
    the row as it was, so "closes" is decided on the counts before these images. Returns the
    new counts, status and webhook URL; :func:`closed_by` says whether this update ended it."""
    before = Job.succeeded + Job.failed + Job.canceled
    closes = and_(not_(_terminal(Job.status)), before + (succeeded + failed + canceled) >= Job.n)
    final = case((Job.succeeded + succeeded == Job.n, JobStatus.SUCCEEDED.value),
                 (Job.succeeded + succeeded > 0, JobStatus.PARTIAL.value),
                 (Job.failed + failed > 0, JobStatus.FAILED.value),
                 else_=JobStatus.CANCELED.value)
    all_failed = and_(closes, Job.succeeded + succeeded == 0, Job.failed + failed > 0)
    stamp = bound(now, Job.__table__.c.finished_at.type)
    ttl = func.make_interval(0, 0, 0, 0, 0, 0, Job.result_ttl_s)
    return (
        update(Job)
        .where(Job.id == job_id, exists(select(literal(1)).select_from(guard)))
        .values(
            succeeded=Job.succeeded + succeeded,
            failed=Job.failed + failed,
            canceled=Job.canceled + canceled,
            cost_micros=Job.cost_micros + cost_micros,
            status=case((closes, final), else_=Job.status),
            finished_at=case((closes, stamp), else_=Job.finished_at),
            error_code=case((all_failed, "all_images_failed"), else_=Job.error_code),
            error_message=case((all_failed, "All " + cast(Job.n, String) + " images failed."),
                               else_=Job.error_message),
            expires_at=case((and_(closes, Job.result_ttl_s.is_not(None)), stamp + ttl), else_=Job.expires_at),
        )
        .returning(Job.id, Job.n, Job.succeeded, Job.failed, Job.canceled, Job.status, Job.webhook_url)
    )


def closed_by(counted: CTE, ended: int) -> ColumnElement[bool]:
    """Whether the :func:`count_and_close` of ``ended`` images (its CTE ``counted``) ended the
    job: it is terminal now, and was not complete before them."""
    c = counted.c
    return and_(_terminal(c.status), c.succeeded + c.failed + c.canceled - ended < c.n)


def _terminal(status: Any) -> ColumnElement[bool]:
    """``status`` is a terminal job status, as equalities: an ``IN`` list would be an expanding
    parameter, which a statement compiled once (:class:`core.repo.binds.Prepared`) cannot have."""
    return or_(*(status == s for s in TERMINAL_JOB))


def recorded(counted: CTE, closed: ColumnElement[bool], *writes: CTE) -> Select[str, bool]:
    """The statement whose CTEs are ``counted`` (:func:`count_and_close`) and ``writes`` (the
    other data-modifying steps of the same record): the job's status, and whether it closed."""
    return select(counted.c.status, closed.label("closed")).add_cte(*writes)


async def job_ended(session: AsyncSession, job_id: str, *, now: datetime) -> None:
    """What follows a job's end, in the transaction that ended it: its own retention starts
    (``expires_at``), and its webhook goes into the outbox."""
    row = (await session.execute(select(Job.webhook_url, Job.result_ttl_s).where(Job.id == job_id))).one()
    if row.result_ttl_s is not None:
        await _expires_prepared(session.get_bind().dialect).execute(
            session, {"job_id": job_id, "expires_at": now + timedelta(seconds=row.result_ttl_s)})
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
