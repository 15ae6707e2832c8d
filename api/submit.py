"""Use case: turn a canonical request into a committed job, then enqueue its images.

1. plan its routes (core.planning: a bad request is refused before anything is written);
2. an ``Idempotency-Key`` seen in the last 24 h with the same body returns the original job
   (no new job, no charge); with another body it is a 409;
3. the key's allowed models and rate limits;
4. price the routes and hold the estimate against the key's budgets (core.billing.ledger);
5. insert the job, its n images and the hold, and COMMIT;
6. only then send one task per upstream call (per image, or per group of images for upstreams
   that make several per call). If the broker is down the job is still accepted: its images are
   marked for the sweeper, which sends them as soon as the broker answers. Nothing accepted is
   lost.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import anyio.to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.inputs import PendingImage, store_pending
from api.ratelimit import RateLimits
from api.state import AppState
from core.billing import ledger
from core.errors import ConflictError, InvalidRequestError, PermissionDeniedError, RateLimitError
from core.generation import Dialect, GenerationRequest
from core.ids import new_id
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job
from core.models.types import utcnow
from core.planning import plan_routes
from core.repo import jobs

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255


def request_hash(dialect: Dialect, request: GenerationRequest) -> str:
    body = json.dumps({"dialect": dialect, "request": request.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def check_model_allowed(key: ApiKey, model: str) -> None:
    if key.models_allowed is not None and model not in key.models_allowed:
        raise PermissionDeniedError(f"This API key may not use the model '{model}'.", param="model",
                                    code="model_not_allowed")


async def _replay(session: AsyncSession, key: ApiKey, idempotency_key: str, digest: str) -> Job | None:
    job = await session.scalar(jobs.by_idempotency_key(key.id, idempotency_key))
    if job is None:
        return None
    if job.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        await session.execute(jobs.forget_idempotency_key(job.id))
        return None
    if job.request_hash != digest:
        raise ConflictError("This Idempotency-Key was already used with a different request body.",
                            param="Idempotency-Key", code="idempotency_key_reused")
    return job


async def submit(
    session: AsyncSession,
    *,
    key: ApiKey,
    request: GenerationRequest,
    dialect: Dialect,
    state: AppState,
    inputs: list[PendingImage] | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Commit a job for ``request`` and enqueue its images; returns its id (the original job's,
    for an idempotent replay)."""
    route_plan = plan_routes(state.catalogue, request)
    check_model_allowed(key, route_plan.model)
    digest = request_hash(dialect, request)
    if idempotency_key:
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidRequestError(
                f"The Idempotency-Key header is longer than {MAX_IDEMPOTENCY_KEY} characters.",
                param="Idempotency-Key")
        existing = await _replay(session, key, idempotency_key, digest)
        if existing is not None:
            return existing.id

    decision = await state.limiter.check(key.id, images=request.n,
                                         limits=RateLimits(rpm=key.rpm, images_per_minute=key.images_per_minute))
    if not decision.allowed and decision.retry_after_s is None:
        raise InvalidRequestError(
            f"Invalid value for 'n': {request.n} images exceed this API key's limit of "
            f"{key.images_per_minute} images per minute.", param="n", code="integer_above_max_value")
    if not decision.allowed:
        raise RateLimitError("Rate limit reached for this API key; retry after the indicated delay.",
                             retry_after=decision.retry_after_s, headers=decision.headers)

    now = utcnow()
    job_id = new_id("job")
    markup = await ledger.markup_in_force(session, key=key, prices=state.prices)
    quote = ledger.quote(request, route_plan.routes, prices=state.prices, markup=markup)
    image_ids = [new_id("img") for _ in range(request.n)]
    try:
        await session.execute(jobs.insert_job({
            "id": job_id, "api_key_id": key.id, "dialect": dialect,
            "request": request.model_dump(mode="json", exclude_none=True),
            "routes": [route.model_dump(mode="json") for route in quote.routes],
            "model": route_plan.model, "status": JobStatus.QUEUED, "n": request.n,
            "succeeded": 0, "failed": 0, "canceled": 0, "created_at": now,
            "idempotency_key": idempotency_key, "request_hash": digest,
            "pricing": quote.pricing.as_json(), "hold_per_image_micros": quote.per_image_micros, "cost_micros": 0,
        }))
        await session.execute(jobs.insert_images([
            {"id": image_id, "job_id": job_id, "index": i, "status": ImageStatus.QUEUED, "attempts": 0,
             "enqueued_at": now} for i, image_id in enumerate(image_ids)]))
        await ledger.take_hold(session, key=key, job_id=job_id, quote=quote, n=request.n,
                               model=quote.routes[0].model)
        if inputs:
            # accepted: the input images are written now (never for a refused request)
            await anyio.to_thread.run_sync(store_pending, state.store, inputs)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        if idempotency_key:  # a concurrent request with the same key won the insert
            existing = await _replay(session, key, idempotency_key, digest)
            if existing is not None:
                return existing.id
        raise

    # one task per upstream call: an upstream making n images per call (GPT image) gets the first
    # image of each group, whose task claims the group; the sweeper still watches every image
    per_call = max(1, quote.routes[0].n_per_call)
    if not await state.enqueuer.send([image_ids[i] for i in range(0, request.n, per_call)]):
        await session.execute(jobs.mark_unsent(image_ids))
        await session.commit()
    return job_id
