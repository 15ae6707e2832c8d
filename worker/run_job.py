"""Use case: run one image of a job, from claim to stored image, counters and event.

Safe to run twice for the same image (a redelivered task, a sweeper's re-send): the claim is a
conditional update, so an image that already succeeded, is running under a live lease, or was
canceled is left alone; and each outcome is fenced by the attempt number.

Upstreams that make several images per call (GPT image: up to 10) get one call for the whole
group: the first task of a group claims its claimable siblings, whose own tasks then find nothing
to do. When a route fails as a route (retries spent, model gone, credentials refused), the next
model of the fallback chain is tried; the model that finally served each image is recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy.exc

from core import settlement
from core.billing import ledger
from core.billing.ledger import Charge, JobBilling
from core.errors import GatewayError, ServiceUnavailableError, UpstreamError
from core.generation import AppliedParams, GenerationRequest, ProviderImage
from core.imaging import transcode
from core.jobs import ImageStatus
from core.models.types import utcnow
from core.repo import jobs
from core.settlement import Ended
from core.storage import image_object_key
from worker.providers.base import InputBytes, ProviderCall
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

RECORD_ATTEMPTS = 5


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


def run_image(runtime: WorkerRuntime, image_id: str) -> str:
    """Generate, store and record one image (and its call group). Returns what happened."""
    now = utcnow()
    lease = runtime.settings.image_lease_s
    with runtime.sessions.begin() as session:
        first = session.execute(jobs.claim_image(image_id, now=now, lease_s=lease)).one_or_none()
        if first is None:
            log.info("image %s: not claimable (done, canceled, or running elsewhere)", image_id)
            return "skipped"
        job_id, index, attempt = first
        # a plain read of the job (no lock); image rows are locked before the job row, always
        row = session.execute(jobs.run_context(job_id)).one()
        billing = JobBilling.of(key_id=row.api_key_id, job_id=job_id, model=row.model,
                                hold_per_image=row.hold_per_image_micros, pricing=row.pricing)
        routes = [AppliedParams.model_validate(route) for route in row.routes]
        claimed = [Claimed(image_id, index, attempt)]
        n = row.n
        size = max(1, routes[0].n_per_call)
        group = [i for i in range((index // size) * size, min(n, (index // size + 1) * size)) if i != index]
        if group:
            siblings = list(session.execute(jobs.lock_group(job_id, group, now=now)).scalars())
            if siblings:
                claimed += [Claimed(*row) for row in session.execute(
                    jobs.claim_group(siblings, now=now, lease_s=lease)).all()]
        session.execute(jobs.mark_job_running(job_id, now=now))
    claimed.sort(key=lambda c: c.index)

    request = GenerationRequest.model_validate(row.request)
    started = time.monotonic()
    outcomes = generate(runtime, request, routes, [c.index for c in claimed])
    latency_ms = int((time.monotonic() - started) * 1000)

    results = {c.image_id: _record(runtime, job_id, c, outcomes[c.index], latency_ms, billing) for c in claimed}
    if any(result != "superseded" for result in results.values()):
        runtime.events.publish(job_id)
    return results[image_id]


def generate(runtime: WorkerRuntime, request: GenerationRequest, routes: list[AppliedParams],
             indexes: list[int]) -> dict[int, Outcome]:
    """Outcomes for ``indexes``, walking the job's planned routes while they fail as routes."""
    inputs = [InputBytes(runtime.store.get(i.object_key), i.mime_type) for i in request.input_images]
    mask = InputBytes(runtime.store.get(request.mask.object_key), request.mask.mime_type) if request.mask else None
    outcomes: dict[int, Outcome] = {}
    pending = list(indexes)
    last_error: GatewayError = ServiceUnavailableError("No configured route could serve this model.")
    for route in routes:
        if not pending:
            break
        retry_next: list[int] = []
        for start in range(0, len(pending), max(1, route.n_per_call)):
            chunk = pending[start:start + max(1, route.n_per_call)]
            try:
                provider = runtime.providers.get(route.provider)
                images = provider.generate(ProviderCall(request, route, chunk, inputs, mask))
            except GatewayError as exc:
                if _route_failed(exc):
                    log.warning("route %s failed for %d image(s): %s", route.model, len(chunk), exc.code)
                    last_error = exc
                    retry_next += chunk
                else:
                    outcomes.update({i: Outcome(error=exc) for i in chunk})
                continue
            except Exception:
                log.exception("provider %s crashed", route.provider)
                error = GatewayError("The image could not be generated because of an internal error.",
                                     code="internal_error")
                outcomes.update({i: Outcome(error=error) for i in chunk})
                continue
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


def _route_failed(error: GatewayError) -> bool:
    if isinstance(error, UpstreamError):
        return error.route_failed
    return isinstance(error, ServiceUnavailableError)


def _record(runtime: WorkerRuntime, job_id: str, claimed: Claimed, outcome: Outcome, latency_ms: int,
            billing: JobBilling) -> str:
    values: dict[str, Any]
    charge: Charge | None = None
    if outcome.image is not None and outcome.applied is not None:
        try:
            values = _store(runtime, job_id, claimed, outcome.image, outcome.applied)
            charge = ledger.charge_for(billing, outcome.applied, outcome.image.usage)
            values.update(upstream_cost_micros=charge.upstream_micros, cost_micros=charge.billed_micros)
        except Exception:
            log.exception("image %s: could not store the result", claimed.image_id)
            values = _failure(GatewayError("The image could not be stored.", code="storage_error"))
    else:
        values = _failure(outcome.error or GatewayError("No outcome.", code="internal_error"))
    finished = utcnow()
    values.update(finished_at=finished, lease_until=None, latency_ms=latency_ms)
    succeeded = values["status"] == ImageStatus.SUCCEEDED
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            return _record_once(runtime, job_id, claimed, values, billing, charge=charge if succeeded else None,
                                now=finished)
        except sqlalchemy.exc.OperationalError:
            # a transient database error (deadlock, failover): the image is made and stored, so
            # retry this transaction here; re-running the task would find the image leased to us
            if attempt == RECORD_ATTEMPTS:
                raise
            log.warning("image %s: recording failed (attempt %d), retrying", claimed.image_id, attempt)
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def _record_once(runtime: WorkerRuntime, job_id: str, claimed: Claimed, values: dict[str, Any],
                 billing: JobBilling, *, charge: Charge | None, now: datetime) -> str:
    """One transaction, locking in the order image row -> job row -> key row (see count_outcome)."""
    succeeded = charge is not None
    with runtime.sessions.begin() as session:
        owned = session.execute(jobs.finish_image(claimed.image_id, attempt=claimed.attempt,
                                                  values=values)).scalar_one_or_none()
        if owned is None:
            # our lease expired and another attempt took the image over: it owns the outcome
            log.warning("image %s attempt %s lost its lease; outcome discarded", claimed.image_id, claimed.attempt)
            return "superseded"
        settlement.settle_ended(session, billing, [Ended(claimed.image_id, ImageStatus(values["status"]), charge,
                                                         values.get("model"))], now=now)
    return "succeeded" if succeeded else "failed"


def _failure(error: GatewayError) -> dict[str, Any]:
    log.info("image failed: %s", error.code)
    return {"status": ImageStatus.FAILED, "error_code": error.code, "error_message": error.message}


def _store(runtime: WorkerRuntime, job_id: str, claimed: Claimed, image: ProviderImage,
           applied: AppliedParams) -> dict[str, Any]:
    data, mime = image.data, image.mime_type
    wanted = applied.mime_type
    if mime != wanted:
        # the upstream cannot make this format (or compression): imagegate converts it
        data, mime = transcode(data, applied.output_format, applied.output_compression), wanted
    key = image_object_key(job_id, claimed.index, applied.output_format, attempt=claimed.attempt)
    runtime.store.put(key, data)
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
