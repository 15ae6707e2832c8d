"""Use case: run one image of a job, from claim to stored image, counters and event.

Safe to run twice for the same image (a redelivered task, a sweeper's re-send): the claim is a
conditional update, so an image that already succeeded, is running under a live lease, or was
canceled is left alone; and each outcome is fenced by the attempt number.

It is a coroutine on the worker process's event loop (``worker/pool.py``): while it waits for
an upstream it holds no thread. On PostgreSQL the claim is one statement that also marks the job
running and returns everything the attempt needs of it (:func:`core.repo.jobs.claim_with_context`),
and the record of an outcome is one statement too (:func:`core.settlement.record_statement`): one
round trip each, on autocommit connections.

Upstreams that make several images per call (GPT image: up to 10) get one call for the whole
group: the first task of a group claims its claimable siblings, whose own tasks then find nothing
to do. The calls of one route for several images (one image per call: Gemini) run concurrently.
When a route fails as a route (retries spent, model gone, credentials refused), the next model of
the fallback chain is tried; the model that finally served each image is recorded. A route whose
circuit is open (``core/circuit.py``) is skipped as if it had failed, without a call.

Every image ends, and an outcome once made is kept:

- an image that has had ``IMAGEGATE_IMAGE_MAX_ATTEMPTS`` attempts is not claimed again: the
  claim fails it instead and releases its hold (:func:`core.settlement.fail_out_of_attempts`);
- while an attempt runs, the process's heartbeat keeps its lease alive (``worker/lease.py``);
- whatever goes wrong after the claim (an input image gone from the store, a bug, an outcome the
  database refuses) ends the attempt as a failure recorded on the image;
- recording outlasts a database outage: it is retried, with backoff, until it is written or the
  attempt fence says another attempt owns the image.

So :func:`run_image` raises (and Celery retries the task) only before its claim is committed,
when no upstream call has been made. The job's event (``core/events.py``) carries the job's
terminal status when the record ended the job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from core import logcontext, metrics, settlement
from core.billing import ledger
from core.billing.ledger import Charge, JobBilling
from core.circuit import guarded, route_key
from core.db import transaction
from core.errors import GatewayError, ServiceUnavailableError, UpstreamError
from core.generation import AppliedParams, GenerationRequest, ProviderImage
from core.imaging import load_codecs, transcode
from core.jobs import ImageStatus, JobStatus
from core.models.types import utcnow
from core.repo import jobs
from core.settlement import Ended
from core.storage import image_object_key
from worker.lease import first_line
from worker.partials import PartialImages
from worker.providers.base import InputBytes, PartialSink, ProviderCall
from worker.providers.http import holding_answers, ssl_context
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)
"""The database is briefly unreachable, restarting, or busy (a deadlock, a lock timeout): worth
trying the same transaction again."""

RECORD_BACKOFF_S = 0.05
RECORD_BACKOFF_MAX_S = 2.0

INTERNAL_ERROR = GatewayError("The image could not be generated because of an internal error.",
                              code="internal_error")
INPUT_MISSING = GatewayError("An input image of this request is no longer in the gateway's image store, so "
                             "the image could not be made; send the request again.", code="input_image_missing")
UNRECORDABLE = GatewayError("The image was generated, but the database refused to record it.",
                            code="record_refused")


@dataclass
class Claimed:
    image_id: str
    index: int
    attempt: int


@dataclass
class Outcome:
    image: ProviderImage | None = None
    applied: AppliedParams | None = None
    error: GatewayError | None = None


@dataclass(frozen=True)
class Recorded:
    """How recording an image's outcome went (``succeeded``, ``failed``, ``superseded``,
    ``unrecorded``), and the job's terminal status if the record ended the job."""

    result: str
    ended: JobStatus | None = None


@dataclass
class Attempt:
    """What one claim took: the images, and what running them needs from their job."""

    job_id: str
    billing: JobBilling
    images: list[Claimed]
    request: GenerationRequest | None = None
    routes: list[AppliedParams] | None = None
    """``None`` when the job's stored request or plan could not be read: the attempt fails."""
    submitted_at: datetime | None = None


async def run_image(runtime: WorkerRuntime, image_id: str) -> str:
    """Generate, store and record one image (and its call group). Returns what happened."""
    with logcontext.bound(image_id=image_id):
        claimed = await _claim(runtime, image_id)
        if isinstance(claimed, str):
            return claimed
        with logcontext.bound(job_id=claimed.job_id):
            return await _run(runtime, image_id, claimed)


async def _run(runtime: WorkerRuntime, image_id: str, attempt: Attempt) -> str:
    results: dict[str, Recorded] = {}
    # its images started: followers of the job's events hear it while the upstream call goes out
    # (not before: a round trip to Redis), and before any later event of the job
    started_event = asyncio.ensure_future(runtime.events.publish(attempt.job_id))
    try:
        # an answer read stays counted among the answers in memory until its images are recorded
        with runtime.leases.holding((c.image_id, c.attempt) for c in attempt.images), holding_answers():
            started = time.monotonic()
            metrics.IN_FLIGHT.inc(len(attempt.images))
            try:
                outcomes = await _outcomes(runtime, attempt)
            finally:
                metrics.IN_FLIGHT.dec(len(attempt.images))
            latency_ms = int((time.monotonic() - started) * 1000)
            for c in attempt.images:
                results[c.image_id] = await _record(runtime, attempt, c, outcomes[c.index], latency_ms)
                runtime.leases.release(c.image_id, c.attempt)
    finally:
        await started_event  # it never raises: a publisher logs what Redis refused
    if any(r.result in ("succeeded", "failed") for r in results.values()):
        ended = next((r.ended for r in results.values() if r.ended is not None), None)
        await runtime.events.publish(attempt.job_id, ended)
    return results[image_id].result


async def prepare(runtime: WorkerRuntime, *, connections: int = 4) -> None:
    """Run the claim for an image that does not exist, as the worker starts, on a few connections
    at once: its statements are compiled (and cached) and those connections opened then, not on
    the first images' way to their upstream; so are the upstream connections' TLS settings and
    Pillow's format plugins."""
    settings = runtime.settings
    ssl_context()
    load_codecs()

    async def claim_nothing() -> None:
        now, lease, max_attempts = utcnow(), settings.image_lease_s, settings.image_max_attempts
        if runtime.postgres:
            await _claim_alone(runtime, "img_prepare", now=now, lease_s=lease, max_attempts=max_attempts)
            return
        async with runtime.sessions() as session:
            await _claim_one(session, "img_prepare", now=now, lease_s=lease, max_attempts=max_attempts)
            await session.rollback()

    await asyncio.gather(*(claim_nothing() for _ in range(max(1, min(settings.db_pool_size, connections)))))


async def _claim(runtime: WorkerRuntime, image_id: str) -> Attempt | str:
    """Claim the image (and its claimable call group) in one transaction; or fail it if it has
    had all its attempts. A database error raised here leaves everything as it was."""
    now = utcnow()
    settings = runtime.settings
    lease, max_attempts = settings.image_lease_s, settings.image_max_attempts
    if runtime.postgres:
        # one statement, one round trip (no transaction around it); a call group's siblings are
        # claimed next, in a transaction of their own (a worker dying in between leaves them
        # queued for the sweeper, as it would leave any image)
        found = await _claim_alone(runtime, image_id, now=now, lease_s=lease, max_attempts=max_attempts)
        if found is not None:
            job_id, claimed, row = found

            async def claim_siblings(group: list[int]) -> list[Claimed]:
                try:
                    async with transaction(runtime.sessions) as session:
                        return await _claim_siblings(session, job_id, group, now=now, lease_s=lease,
                                                     max_attempts=max_attempts)
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning("image %s: its call group could not be claimed (%s: %s); it runs alone, the "
                                "sweeper sends the others", image_id, type(exc).__name__, first_line(exc))
                    return []

            return await _start(claim_siblings, claimed, job_id, row, now=now)
    async with transaction(runtime.sessions) as session:
        found = None if runtime.postgres else await _claim_one(session, image_id, now=now, lease_s=lease,
                                                               max_attempts=max_attempts)
        if found is not None:
            # committed as the block ends, before anything is sent upstream
            job_id, claimed, row = found
            return await _start(functools.partial(_claim_siblings, session, job_id, now=now, lease_s=lease,
                                                  max_attempts=max_attempts), claimed, job_id, row, now=now)
        exhausted = await settlement.fail_out_of_attempts(session, image_id, now=now, max_attempts=max_attempts)
    if exhausted is None:
        log.info("image %s: not claimable (done, canceled, or running elsewhere)", image_id)
        return "skipped"
    metrics.count_settled("failed", exhausted.model, 1, job_ended=exhausted.ended.value if exhausted.ended else None)
    await runtime.events.publish(exhausted.job_id, exhausted.ended)
    return "failed"


async def _claim_alone(runtime: WorkerRuntime, image_id: str, *, now: datetime, lease_s: float,
                       max_attempts: int) -> tuple[str, Claimed, Any] | None:
    """PostgreSQL: claim the image and mark its job running in one statement on a connection of
    its own (:func:`core.repo.jobs.claim_with_context`): its job id, the claim, and the job's
    :func:`core.repo.jobs.run_context`; None if the image is not claimable."""
    statement, params = jobs.claim_with_context(image_id, now=now, lease_s=lease_s, max_attempts=max_attempts,
                                                dialect=runtime.engine.dialect)
    row = (await statement.run_alone(runtime.engine, params)).one_or_none()
    return None if row is None else (row.job_id, Claimed(image_id, row.image_index, row.attempt), row)


async def _claim_one(session: AsyncSession, image_id: str, *, now: datetime, lease_s: float,
                     max_attempts: int) -> tuple[str, Claimed, Row[Any]] | None:
    """SQLite: claim the image and mark its job running (the steps of PostgreSQL's one
    statement, :func:`core.repo.jobs.claim_with_context`, one statement each: SQLite has no
    data-modifying CTE): its job id, the claim, and the job's :func:`core.repo.jobs.run_context`;
    None if the image is not claimable."""
    claim, start, params = jobs.claim_steps(image_id, now=now, lease_s=lease_s, max_attempts=max_attempts,
                                            dialect=session.get_bind().dialect)
    first = (await claim.execute(session, params)).one_or_none()
    if first is None:
        return None
    job_id, index, number = first.job_id, first.image_index, first.attempt
    # a plain read of the job (no lock); image rows are locked before the job row, always
    row = (await session.execute(jobs.run_context(job_id))).one()
    await start.execute(session, {**params, "job_id": job_id})
    return job_id, Claimed(image_id, index, number), row


async def _claim_siblings(session: AsyncSession, job_id: str, group: list[int], *, now: datetime, lease_s: float,
                          max_attempts: int) -> list[Claimed]:
    """Claim those of the job's images at the indexes ``group`` that are claimable (locked first,
    so that two workers never claim the same sibling)."""
    locked = await session.execute(jobs.lock_group(job_id, group, now=now, max_attempts=max_attempts))
    siblings = list(locked.scalars())
    if not siblings:
        return []
    return [Claimed(*sibling) for sibling in (await session.execute(
        jobs.claim_group(siblings, now=now, lease_s=lease_s, max_attempts=max_attempts))).all()]


async def _start(claim_siblings: Callable[[list[int]], Awaitable[list[Claimed]]], claimed: Claimed, job_id: str,
                 row: Row[Any], *, now: datetime) -> Attempt:
    """From the job's ``row`` (:func:`core.repo.jobs.run_context`), what running the image needs;
    and the claimable siblings of the image's call group, claimed by ``claim_siblings`` (called
    only when the image has siblings: an image alone costs no transaction more)."""
    try:
        billing = JobBilling.of(key_id=row.api_key_id, job_id=job_id, model=row.model,
                                hold_per_image=row.hold_per_image_micros, pricing=row.pricing)
        routes = [AppliedParams.model_validate(route) for route in row.routes]
        request = GenerationRequest.model_validate(row.request)
        size = max(1, routes[0].n_per_call)
    except Exception:
        log.exception("job %s: its stored request or plan cannot be read; image %s fails", job_id, claimed.image_id)
        return Attempt(job_id, _bare_billing(row, job_id), [claimed])
    images = [claimed]
    index, n = claimed.index, row.n
    group = [i for i in range((index // size) * size, min(n, (index // size + 1) * size)) if i != index]
    if group:
        images += await claim_siblings(group)
    images.sort(key=lambda c: c.index)
    if row.created_at is not None:
        metrics.QUEUE_WAIT.observe(max(0.0, (now - row.created_at).total_seconds()))
    return Attempt(job_id, billing, images, request, routes, submitted_at=row.created_at)


def _bare_billing(row: Row[Any], job_id: str) -> JobBilling:
    """Enough of the job's billing to release an image's hold, without its price snapshot."""
    return JobBilling(key_id=row.api_key_id, job_id=job_id, model=row.model,
                      hold_per_image=row.hold_per_image_micros, pricing=None)


async def _outcomes(runtime: WorkerRuntime, attempt: Attempt) -> dict[int, Outcome]:
    """The attempt's outcome for each of its images; anything raised ends it as a failure."""
    indexes = [c.index for c in attempt.images]
    if attempt.request is None or attempt.routes is None:
        return {i: Outcome(error=INTERNAL_ERROR) for i in indexes}
    partials = (PartialImages(runtime, attempt.job_id, attempts={c.index: c.attempt for c in attempt.images})
                if attempt.request.partial_images else None)
    try:
        return await generate(runtime, attempt.request, attempt.routes, indexes, on_partial=partials)
    except Exception:
        log.exception("job %s: the attempt at image(s) %s failed", attempt.job_id, indexes)
        return {i: Outcome(error=INTERNAL_ERROR) for i in indexes}


async def generate(runtime: WorkerRuntime, request: GenerationRequest, routes: list[AppliedParams],
                   indexes: list[int], *, on_partial: PartialSink | None = None) -> dict[int, Outcome]:
    """Outcomes for ``indexes``, walking the job's planned routes while they fail as routes; the
    calls of one route run concurrently (``on_partial`` takes the drafts of a caller who streams
    partial images)."""
    try:
        inputs = [InputBytes(await runtime.store.aget(i.object_key), i.mime_type) for i in request.input_images]
        mask = (InputBytes(await runtime.store.aget(request.mask.object_key), request.mask.mime_type)
                if request.mask else None)
    except OSError as exc:
        log.error("an input image of image(s) %s cannot be read from the store: %s", indexes, exc)
        return {i: Outcome(error=INPUT_MISSING) for i in indexes}
    outcomes: dict[int, Outcome] = {}
    pending = list(indexes)
    last_error: GatewayError = ServiceUnavailableError("No configured route could serve this model.")
    for route in routes:
        if not pending:
            break
        retry_next: list[int] = []
        size = max(1, route.n_per_call)
        chunks = [pending[start:start + size] for start in range(0, len(pending), size)]
        answers = await asyncio.gather(*(
            _call(runtime, ProviderCall(request, route, chunk, inputs, mask, on_partial)) for chunk in chunks))
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, GatewayError):
                if _route_failed(answer):
                    log.warning("route %s failed for %d image(s): %s", route.model, len(chunk), answer.code)
                    last_error = answer
                    retry_next += chunk
                else:
                    outcomes.update({i: Outcome(error=answer) for i in chunk})
                continue
            images = answer
            for position, i in enumerate(chunk):
                if position < len(images):
                    outcomes[i] = Outcome(image=images[position], applied=route)
                else:
                    outcomes[i] = Outcome(error=UpstreamError(
                        "The model returned fewer images than asked.", code="no_images_generated"))
        pending = retry_next
    for i in pending:
        outcomes[i] = Outcome(error=last_error)
    return outcomes


async def _call(runtime: WorkerRuntime, call: ProviderCall) -> list[ProviderImage] | GatewayError:
    """One provider call: its images, or the error it ended with (a crash is an internal error)."""
    route = call.applied
    try:
        provider = runtime.providers.get(route.provider)
        with logcontext.bound(model=route.model):
            return await guarded(runtime.circuits, route_key(route.provider, route.upstream_model), route.model,
                                 lambda: provider.generate(call))
    except GatewayError as exc:
        return exc
    except Exception:
        log.exception("provider %s crashed", call.applied.provider)
        return INTERNAL_ERROR


def _route_failed(error: GatewayError) -> bool:
    if isinstance(error, UpstreamError):
        return error.route_failed
    return isinstance(error, ServiceUnavailableError)


async def _record(runtime: WorkerRuntime, attempt: Attempt, claimed: Claimed, outcome: Outcome,
                  latency_ms: int) -> Recorded:
    """Store and record one image's outcome, and settle it. An outcome the database refuses (not
    an outage: a value it will never take) is recorded as a failure instead."""
    values, charge = await _values(runtime, attempt, claimed, outcome)
    finished = utcnow()
    timing = {"finished_at": finished, "lease_until": None, "latency_ms": latency_ms}
    try:
        return await _write(runtime, attempt, claimed, {**values, **timing}, charge, now=finished)
    except Exception:
        log.exception("image %s: the database refused its outcome; recording a failure instead", claimed.image_id)
    try:
        return await _write(runtime, attempt, claimed, {**_failure(UNRECORDABLE), **timing}, None, now=finished)
    except Exception:
        log.exception("image %s: its failure could not be recorded either; its lease will lapse", claimed.image_id)
        return Recorded("unrecorded")


async def _values(runtime: WorkerRuntime, attempt: Attempt, claimed: Claimed,
                  outcome: Outcome) -> tuple[dict[str, Any], Charge | None]:
    """The image row's new values and, if delivered, its charge; a delivered image is stored here."""
    if outcome.image is None or outcome.applied is None:
        return _failure(outcome.error or GatewayError("No outcome.", code="internal_error")), None
    try:
        values = await _store(runtime, attempt.job_id, claimed, outcome.image, outcome.applied)
        charge = ledger.charge_for(attempt.billing, outcome.applied, outcome.image.usage)
    except Exception:
        log.exception("image %s: could not store the result", claimed.image_id)
        return _failure(GatewayError("The image could not be stored.", code="storage_error")), None
    values.update(upstream_cost_micros=charge.upstream_micros, cost_micros=charge.billed_micros)
    return values, charge


async def _write(runtime: WorkerRuntime, attempt: Attempt, claimed: Claimed, values: dict[str, Any],
                 charge: Charge | None, *, now: datetime) -> Recorded:
    """Record the outcome, retrying while the database is unreachable: the image is made (and
    paid upstream), so this attempt waits the outage out rather than leave it to another one.
    Only the attempt fence ends the wait without recording: another attempt owns the image."""
    delay, since = RECORD_BACKOFF_S, time.monotonic()
    while True:
        try:
            return await _record_once(runtime, attempt, claimed, values, charge, now=now)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("image %s: could not record its outcome (%s: %s), %.1f s since the first try; "
                        "retrying in %.2f s", claimed.image_id, type(exc).__name__, first_line(exc),
                        time.monotonic() - since, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_BACKOFF_MAX_S)


async def _record_once(runtime: WorkerRuntime, attempt: Attempt, claimed: Claimed, values: dict[str, Any],
                       charge: Charge | None, *, now: datetime) -> Recorded:
    """One transaction, locking in the order image row -> job row -> key row (see count_outcome):
    on PostgreSQL one statement (:func:`core.settlement.record_statement`); when it finds the
    image no longer this attempt's, a second transaction tells a lost answer to an earlier try
    (recorded already) from a lease another attempt took over."""
    status = ImageStatus(values["status"])
    if runtime.postgres:
        owned, ended = await settlement.record_outcome(
            runtime.engine, attempt.billing, claimed.image_id, attempt=claimed.attempt, values=values,
            ended=Ended.of(claimed.image_id, values, charge), now=now)
        if owned:
            _count(attempt, claimed, status, values, charge, ended, now=now)
            return Recorded(status.value, ended)
    async with transaction(runtime.sessions) as session:
        owned_id = None if runtime.postgres else (await jobs.finish_prepared(session.get_bind().dialect, tuple(values))
                                                  .execute(session, {"image_id": claimed.image_id,
                                                                     "attempt": claimed.attempt,
                                                                     **{f"v_{k}": v for k, v in values.items()}})
                                                  ).scalar_one_or_none()
        if owned_id is None:
            if await _already_recorded(session, claimed, values):
                # an earlier try of this transaction was committed, but its answer was lost
                job_status = JobStatus((await session.execute(jobs.status_of(attempt.job_id))).scalar_one())
                return Recorded(status.value, job_status if job_status.is_terminal else None)
            log.warning("image %s attempt %s lost its lease; outcome discarded", claimed.image_id, claimed.attempt)
            return Recorded("superseded")
        ended = await settlement.settle_ended(session, attempt.billing, [Ended.of(claimed.image_id, values, charge)],
                                              now=now)
    _count(attempt, claimed, status, values, charge, ended, now=now)
    return Recorded(status.value, ended)


def _count(attempt: Attempt, claimed: Claimed, status: ImageStatus, values: dict[str, Any], charge: Charge | None,
           closed: JobStatus | None, *, now: datetime) -> None:
    """The log line and the metrics of an outcome once it is committed."""
    served = values.get("model") or attempt.billing.model
    log.info("image %s (%s) after %s ms", status.value, values.get("error_code") or served, values.get("latency_ms"),
             extra={"image_id": claimed.image_id, "model": served})
    metrics.IMAGES(status.value, served).inc()
    if charge is not None and charge.billed_micros:
        metrics.BILLED(served).inc(charge.billed_micros)
    if attempt.submitted_at is not None:
        metrics.TOTAL_LATENCY(status.value).observe(max(0.0, (now - attempt.submitted_at).total_seconds()))
    if closed is not None:
        metrics.JOBS(closed.value, attempt.billing.model).inc()


async def _already_recorded(session: AsyncSession, claimed: Claimed, values: dict[str, Any]) -> bool:
    image = (await session.execute(jobs.image_by_id(claimed.image_id))).scalar_one_or_none()
    return (image is not None and image.attempts == claimed.attempt and image.status == values["status"]
            and image.object_key == values.get("object_key") and image.error_code == values.get("error_code"))


def _failure(error: GatewayError) -> dict[str, Any]:
    log.info("image failed: %s", error.code)
    return {"status": ImageStatus.FAILED, "error_code": error.code, "error_message": error.message}


async def _store(runtime: WorkerRuntime, job_id: str, claimed: Claimed, image: ProviderImage,
                 applied: AppliedParams) -> dict[str, Any]:
    data, mime = image.data, image.mime_type
    wanted = applied.mime_type
    if mime != wanted:
        # the upstream cannot make this format (or compression): imagegate converts it
        data = await asyncio.to_thread(transcode, data, applied.output_format, applied.output_compression)
        mime = wanted
    key = image_object_key(job_id, claimed.index, applied.output_format, attempt=claimed.attempt)
    await runtime.store.aput(key, data)
    usage = image.usage
    return {
        "status": ImageStatus.SUCCEEDED,
        "model": applied.model,
        "provider": applied.provider,
        "upstream_model": applied.upstream_model,
        "object_key": key,
        "mime_type": mime,
        "width": image.width,
        "height": image.height,
        "bytes": len(data),
        "text": image.text,
        "input_tokens": usage.input_tokens,
        "input_image_tokens": usage.input_image_tokens,
        "output_tokens": usage.output_tokens,
        "output_image_tokens": usage.output_image_tokens,
        # the size class and quality the image is billed and reported by
        "size": applied.image_size or applied.upstream_size or applied.size,
        "quality": applied.quality,
    }
