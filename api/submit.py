"""Use case: turn a canonical request into a committed job, then enqueue its images.

1. route and plan (a bad request is refused before anything is written);
2. an ``Idempotency-Key`` seen in the last 24 h with the same body returns the original job
   (no new job, no charge); with another body it is a 409;
3. the key's allowed models and rate limits;
4. price the job and hold its estimate against the key's budgets (api/billing.py);
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
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.billing import check_model_allowed, price_and_hold
from api.inputs import PendingImage, store_pending
from api.ratelimit import RateLimits
from api.state import AppState
from core.errors import ConflictError, InvalidRequestError, RateLimitError
from core.generation import AppliedParams, Dialect, GenerationRequest
from core.ids import new_id
from core.job_updates import mark_unsent
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job, JobImage
from core.models.types import utcnow
from core.planning import plan
from core.routing import Catalogue, Resolved, fallback_alias

IDEMPOTENCY_WINDOW = timedelta(hours=24)


def plan_routes(catalogue: Catalogue, request: GenerationRequest) -> tuple[str, list[AppliedParams]]:
    """The requested model's id and the plan of each configured route that can take the request:
    the first configured route (the model itself, or its first configured fallback), then the
    other fallbacks. Raises the first route's error when it cannot take the request."""
    resolved = catalogue.resolve(request.model)
    chain = catalogue.routes(resolved.spec)
    carried = fallback_alias(resolved.alias)
    first = resolved if chain[0] is resolved.spec else Resolved(spec=chain[0], requested=request.model, alias=carried)
    routes = [plan(request, first, grids=catalogue.grids)]
    for fallback in chain[1:]:
        try:
            routes.append(plan(request, Resolved(spec=fallback, requested=fallback.id, alias=carried),
                               grids=catalogue.grids))
        except InvalidRequestError:
            continue  # this fallback cannot take the request; the worker will skip it too
    return resolved.spec.id, routes


def request_hash(dialect: Dialect, request: GenerationRequest) -> str:
    body = json.dumps({"dialect": dialect, "request": request.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


async def _replay(session: AsyncSession, key: ApiKey, idempotency_key: str, digest: str) -> Job | None:
    job = await session.scalar(select(Job).where(Job.api_key_id == key.id, Job.idempotency_key == idempotency_key))
    if job is None:
        return None
    if job.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        # older than the window: the key may be used again
        await session.execute(update(Job).where(Job.id == job.id).values(idempotency_key=None))
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
) -> Job:
    model, routes = plan_routes(state.catalogue, request)
    check_model_allowed(key, model)
    digest = request_hash(dialect, request)
    if idempotency_key:
        if len(idempotency_key) > 255:
            raise InvalidRequestError("The Idempotency-Key header is longer than 255 characters.",
                                      param="Idempotency-Key")
        existing = await _replay(session, key, idempotency_key, digest)
        if existing is not None:
            return existing

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
    hold = await price_and_hold(session, key=key, job_id=job_id, request=request, routes=routes, prices=state.prices)
    if inputs:
        # accepted: the input images are written now (never for a refused request)
        await anyio.to_thread.run_sync(store_pending, state.store, inputs)
    job = Job(
        id=job_id,
        api_key_id=key.id,
        dialect=dialect,
        request=request.model_dump(mode="json", exclude_none=True),
        applied=routes[0].model_dump(mode="json"),
        model=model,
        status=JobStatus.QUEUED,
        n=request.n,
        succeeded=0,
        failed=0,
        canceled=0,
        created_at=now,
        idempotency_key=idempotency_key,
        request_hash=digest,
        pricing=hold.pricing,
        hold_per_image_micros=hold.per_image_micros,
        cost_micros=0,
    )
    images = [
        JobImage(id=new_id("img"), job_id=job.id, index=i, status=ImageStatus.QUEUED, enqueued_at=now)
        for i in range(request.n)
    ]
    session.add(job)
    session.add_all(images)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        if idempotency_key:  # a concurrent request with the same key won the insert
            existing = await _replay(session, key, idempotency_key, digest)
            if existing is not None:
                return existing
        raise

    # one task per upstream call: an upstream making n images per call (GPT image) gets the first
    # image of each group, whose task claims the group; the sweeper still watches every image
    per_call = max(1, routes[0].n_per_call)
    image_ids = [image.id for image in images if image.index % per_call == 0]
    if not await state.enqueuer.send(image_ids):
        await session.execute(mark_unsent([image.id for image in images]))
        await session.commit()
    return job
