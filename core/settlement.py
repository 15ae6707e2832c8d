"""Ending images: the one place that counts ended images on their job, closes the job when its
last image is done, and settles the ledger for them.

Every way an image ends goes through :func:`settle_ended`: the worker recording an attempt's
outcome (``worker/run_job.py``), an image out of attempts failed by its claim or by the sweeper
(:func:`fail_out_of_attempts`), and a cancel (:func:`cancel_images`). Each runs in the caller's
transaction, after the caller's statement has locked the image rows, so the lock order is always
image rows, then the job row, then the key row (see :func:`core.repo.jobs.count_outcome`).

The functions take an :class:`~sqlalchemy.ext.asyncio.AsyncSession`: the worker (on its event
loop) and the API pass their own, so both execute the very same statements (PostgreSQL's record of
an outcome, :func:`record_outcome`, is one statement run alone on the engine). :func:`settle_ended`
returns the job's terminal status when the images it counted ended the job, which the worker's
event carries to waiting requests (``core/events.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CTE
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core.billing import ledger
from core.billing import repo as billing_repo
from core.billing.ledger import Charge, ImageRecord, JobBilling
from core.ids import new_id
from core.jobs import ImageStatus, JobStatus
from core.repo import jobs, webhooks
from core.repo.binds import Prepared, param

log = logging.getLogger(__name__)

ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class Ended:
    """One image that has just ended: how, and, if delivered, its charge, the model that made it
    and what its row records of it (size class, quality, tokens)."""

    image_id: str
    status: ImageStatus
    charge: Charge | None = None
    model: str | None = None
    size: str | None = None
    quality: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    @classmethod
    def of(cls, image_id: str, values: Mapping[str, Any], charge: Charge | None) -> Ended:
        """The image whose row is being finished with ``values`` (see ``worker/run_job.py``)."""
        return cls(image_id, ImageStatus(values["status"]), charge, values.get("model"), values.get("size"),
                   values.get("quality"), values.get("input_tokens"), values.get("output_tokens"))


async def settle_ended(session: AsyncSession, billing: JobBilling, ended: Sequence[Ended], *,
                       now: datetime) -> JobStatus | None:
    """Count ``ended`` (images of ``billing``'s job whose rows the caller has just updated) on the
    job, close the job if they were its last, and settle each image in the ledger: a delivered
    one is charged and its share of the hold released, a failed or canceled one released.
    Returns the job's terminal status if these images ended it, else None."""
    if not ended:
        return None
    job_id = billing.job_id
    dialect = session.get_bind().dialect
    counts = tuple((await jobs.count_prepared(dialect).execute(session, {
        "job_id": job_id,
        "succeeded": sum(e.status is ImageStatus.SUCCEEDED for e in ended),
        "failed": sum(e.status is ImageStatus.FAILED for e in ended),
        "canceled": sum(e.status is ImageStatus.CANCELED for e in ended),
        "cost_micros": sum(e.charge.billed_micros for e in ended if e.charge is not None),
    })).one())
    close = jobs.finalize_steps(job_id, counts, now=now, dialect=dialect)
    ended_as: JobStatus | None = None
    if close is not None:
        closed = (await close[0].execute(session, close[1])).scalar_one_or_none()
        if closed is not None:
            ended_as = JobStatus(closed)
            await jobs.job_ended(session, job_id, now=now)
    for image in ended:
        if image.status is not ImageStatus.CANCELED:
            record = ImageRecord(outcome=image.status.value, size=image.size, quality=image.quality,
                                 input_tokens=image.input_tokens, output_tokens=image.output_tokens)
            for statement, params in ledger.settle_image(billing, image.image_id, charge=image.charge,
                                                         model=image.model, record=record, dialect=dialect):
                await statement.execute(session, params)
    for released in ledger.release_images(billing, [e.image_id for e in ended if e.status is ImageStatus.CANCELED]):
        await session.execute(released)
    return ended_as


def record_statement(billing: JobBilling, image_id: str, *, attempt: int, values: Mapping[str, Any],
                     ended: Ended, now: datetime, dialect: Dialect) -> tuple[Prepared, dict[str, Any]]:
    """PostgreSQL: an attempt's outcome recorded and settled in one statement, so in one round
    trip (it needs no transaction of its own). Data-modifying CTEs, in lock order: the image row
    (fenced by the attempt, :func:`core.repo.jobs.finish_image`), then the job row
    (:func:`core.repo.jobs.count_and_close`: counted, closed if it was the last image, its
    retention started), then the ledger rows and the key row (its committed spend and spend
    counters), then the webhook outbox if the job ended. Each later step happens only if the image
    was still this attempt's. It returns one row (``status``, ``closed``) if it recorded the
    outcome, none if the attempt no longer owned the image.

    The statement is built once per shape (:func:`_record_prepared`: which image columns, which
    ledger rows, whether the key's balance moves) and given here with its parameters. On SQLite
    (no data-modifying CTEs) :func:`settle_ended` does the same, one statement each."""
    record = ImageRecord(outcome=ended.status.value, size=ended.size, quality=ended.quality,
                         input_tokens=ended.input_tokens, output_tokens=ended.output_tokens)
    settled = ledger.settlement_of(billing, image_id, charge=ended.charge, model=ended.model, record=record)
    params: dict[str, Any] = {
        "image_id": image_id, "attempt": attempt, "job_id": billing.job_id, "now": now,
        "succeeded": int(ended.status is ImageStatus.SUCCEEDED), "failed": int(ended.status is ImageStatus.FAILED),
        "cost": ended.charge.billed_micros if ended.charge is not None else 0, "delivery_id": new_id("msg"),
        **{f"v_{name}": value for name, value in values.items()},
    }
    params.update(ledger.settlement_params(billing, settled))
    return _record_prepared(dialect, tuple(values), *settled.shape()), params


@functools.lru_cache(maxsize=256)
def _record_prepared(dialect: Dialect, value_columns: tuple[str, ...], ledger_rows: tuple[tuple[str, ...], ...],
                     moves: bool, charged: bool, periods: int) -> Prepared:
    """The statement of :func:`record_statement` for one shape, every value a parameter."""
    image = jobs.finish_image(param("image_id"), attempt=param("attempt"),
                              values={name: jobs.image_param(name, f"v_{name}") for name in value_columns}
                              ).cte("image")
    counted = jobs.count_and_close(jobs.job_param("id", "job_id"), image, succeeded=jobs.count_param("succeeded"),
                                   failed=jobs.count_param("failed"), cost_micros=jobs.job_param("cost_micros", "cost"),
                                   now=jobs.job_param("finished_at", "now")).cte("counted")
    closed = jobs.closed_by(counted, 1)
    rows = [{name: param(f"r{i}_{name}") for name in columns} for i, columns in enumerate(ledger_rows)]
    writes: list[CTE] = [billing_repo.insert_rows_if(rows, image).cte("ledger_rows")]
    if moves:
        writes.append(billing_repo.adjust_committed_if(param("key_id"), param("delta"), image,
                                                        charged=param("charged") if charged else 0,
                                                        month=param("month") if charged else None).cte("key_row"))
    if periods:
        writes.append(billing_repo.add_spend_if(param("key_id"), [param(f"period{i}") for i in range(periods)],
                                                param("charged"), image).cte("spend"))
    writes.append(webhooks.new_delivery_if(counted, closed, now=param("now"), delivery_id=param("delivery_id"))
                  .cte("webhook"))
    return Prepared(jobs.recorded(counted, closed, *writes), dialect)


async def record_outcome(engine: AsyncEngine, billing: JobBilling, image_id: str, *, attempt: int,
                         values: Mapping[str, Any], ended: Ended, now: datetime) -> tuple[bool, JobStatus | None]:
    """PostgreSQL: run :func:`record_statement` alone (one round trip, its own transaction);
    whether the attempt still owned the image, and the job's terminal status if this outcome ended
    the job."""
    statement, params = record_statement(billing, image_id, attempt=attempt, values=values, ended=ended, now=now,
                                         dialect=engine.dialect)
    row = (await statement.run_alone(engine, params)).one_or_none()
    if row is None:
        return False, None
    return True, JobStatus(row.status) if row.closed else None


async def job_billing(session: AsyncSession, job_id: str) -> JobBilling:
    """What settling an image of the job needs (a plain read of the job row: no lock)."""
    row = (await session.execute(jobs.run_context(job_id))).one()
    return JobBilling.of(key_id=row.api_key_id, job_id=job_id, model=row.model,
                         hold_per_image=row.hold_per_image_micros, pricing=row.pricing)


@dataclass(frozen=True)
class FailedOut:
    """An image failed by :func:`fail_out_of_attempts`: its job, and the job's terminal status if
    that ended it."""

    job_id: str
    ended: JobStatus | None
    model: str = ""
    """The job's model."""


@dataclass(frozen=True)
class Canceled:
    """Images canceled by :func:`cancel_images`, the job's model, and the job's terminal status if
    that ended it."""

    image_ids: list[str]
    model: str = ""
    ended: JobStatus | None = None


async def fail_out_of_attempts(session: AsyncSession, image_id: str, *, now: datetime,
                               max_attempts: int) -> FailedOut | None:
    """Fail the image if it waits for an attempt it may no longer have (``max_attempts`` started,
    none ended with an outcome), releasing its hold; says which job, if it did.

    The claim calls it when it refuses an image, the sweeper for a lease that expired during an
    image's last attempt.
    """
    found = (await session.execute(jobs.waiting_image(image_id, now=now))).one_or_none()
    if found is None or found.attempts < max_attempts:
        return None
    if found.status == ImageStatus.RUNNING:
        why = "its worker stopped renewing its lease (the worker died or lost its database)"
    else:
        why = "the gateway restarted while it ran"
    message = (f"The image could not be made in {found.attempts} attempt{'s' if found.attempts != 1 else ''}: "
               f"none ended with an outcome, and during the last one {why}.")
    job_id = (await session.execute(jobs.fail_waiting_image(
        image_id, status=found.status, attempts=found.attempts, now=now, code=ATTEMPTS_EXHAUSTED,
        message=message))).scalar_one_or_none()
    if job_id is None:
        return None
    log.warning("image %s failed: %d attempts started, the last one's %s", image_id, found.attempts,
                "lease expired" if found.status == ImageStatus.RUNNING else "gateway restarted")
    billing = await job_billing(session, job_id)
    ended = await settle_ended(session, billing, [Ended(image_id, ImageStatus.FAILED)], now=now)
    return FailedOut(job_id, ended, billing.model)


async def cancel_images(session: AsyncSession, job_id: str, *, now: datetime) -> Canceled:
    """Cancel the job's images that no living attempt is making (queued, or running under an
    expired lease), count them and release their holds; says which."""
    canceled = list((await session.execute(jobs.cancel_images(job_id, now=now))).scalars())
    if not canceled:
        return Canceled([])
    billing = await job_billing(session, job_id)
    ended = await settle_ended(session, billing, [Ended(image_id, ImageStatus.CANCELED) for image_id in canceled],
                               now=now)
    return Canceled(canceled, billing.model, ended)
