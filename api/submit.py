"""Use case: turn a request a dialect has parsed into a committed job, then enqueue its images.

Everything that costs nothing is checked before anything that costs something:

1. plan its routes (core.planning: a bad request is refused before anything is written), with
   the model's input-image limit, and the key's allowed models;
2. an ``Idempotency-Key`` seen in the last 24 h with the same request returns the original job
   (no new job, no charge, no image fetched); with another request it is a 409. Without one, an
   SDK's retry of a request (``x-stainless-retry-count`` above 0, as the openai and anthropic SDKs
   send it) returns the job its first attempt made, when the same key sent the same request in the
   last 15 minutes and that job did not fail: however a client retries, one logical call makes at
   most one billed job;
3. the key's budget can hold the request (core.billing.ledger.check_budget), then its rate limits
   (a request refused after that, for an image or for the budget, gives its allowance back);
4. only then are the caller's images loaded (api.inputs: URLs fetched, within the request's caps;
   the gateway's own file URLs read from the store, api.own_files);
5. price the routes and hold the estimate against the key's budgets (core.billing.ledger),
   insert the job, its n images and the hold, and COMMIT;
6. only then send one task per upstream call (per image, or per group of images for upstreams
   that make several per call). If the broker is down the job is still accepted: its images are
   marked for the sweeper, which sends them as soon as the broker answers. Nothing accepted is
   lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import anyio.to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.inputs import ImageRef, InputLimits, PendingImage, load_images, store_pending
from api.own_files import read_own_files
from api.ratelimit import Admission, RateLimits
from api.state import AppState
from core import logcontext, metrics
from core.billing import ledger
from core.db import DATABASE_UNAVAILABLE
from core.errors import ConflictError, GatewayError, InvalidRequestError, PermissionDeniedError, RateLimitError
from core.generation import Dialect, GenerationRequest, InputImage
from core.ids import new_id
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job
from core.models.types import utcnow
from core.planning import RoutePlan, plan_routes
from core.repo import jobs, retention
from core.routing import Catalogue
from core.ssrf import UnsafeUrl
from core.webhooks.delivery import check_webhook_url

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
REFUSALS: tuple[type[Exception], ...] = (GatewayError, *DATABASE_UNAVAILABLE)
RETRY_WINDOW = timedelta(minutes=15)
"""How far back an SDK's retry looks for the job of its first attempt: longer than the SDKs' own
600 s timeout and their backoff."""
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Submission:
    """A request as its dialect parsed it: the canonical request (its input images not loaded
    yet), where those images are, and the dialect's names for the canonical fields."""

    dialect: Dialect
    generation: GenerationRequest
    images: Sequence[ImageRef] = ()
    mask: ImageRef | None = None
    wire_params: Mapping[str, str] = field(default_factory=dict)
    webhook_url: str | None = None
    """The request's own webhook (else its key's default is used)."""
    webhook_param: str = "webhook_url"
    """Where the request named it: ``webhook_url``, or the ``x-imagegate-webhook-url`` header."""
    result_ttl_s: int | None = None
    """The job's own retention, if it asks for one shorter than ``IMAGEGATE_RESULT_TTL_S``."""

    def fingerprint(self) -> str:
        """The hash an Idempotency-Key's request is compared by: the request as sent (an image
        URL as written, inline images by their bytes), so a replay is recognised before any
        image is fetched."""
        body = json.dumps({"dialect": self.dialect, "request": self.generation.model_dump(mode="json"),
                           "images": [ref.fingerprint() for ref in self.images],
                           "mask": self.mask.fingerprint() if self.mask else None}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def sized(self) -> GenerationRequest:
        """The request with stand-ins for its images: enough to plan it (their number counts, not
        their bytes) before loading them."""
        stand_in = InputImage(object_key="", mime_type="application/octet-stream")
        return self.generation.model_copy(update={"input_images": [stand_in] * len(self.images),
                                                  "mask": stand_in if self.mask else None})


def _plan(catalogue: Catalogue, request: GenerationRequest, wire_params: Mapping[str, str]) -> RoutePlan:
    try:
        return plan_routes(catalogue, request)
    except InvalidRequestError as error:
        raise error.with_param(dict(wire_params)) from None


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


async def submit_job(state: AppState, *, key: ApiKey, submission: Submission,
                     idempotency_key: str | None = None, sdk_retry: bool = False) -> str:
    """Run the whole use case (see the module docstring); returns the job's id (the original
    job's, for an idempotent replay)."""
    if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequestError(f"The Idempotency-Key header is longer than {MAX_IDEMPOTENCY_KEY} characters.",
                                  param="Idempotency-Key")
    digest = submission.fingerprint()
    sized = submission.sized()
    route_plan = _plan(state.catalogue, sized, submission.wire_params)
    check_model_allowed(key, route_plan.model)
    webhook_url = await _webhook_url(state, key, submission)
    async with state.sessions() as session:
        if idempotency_key:
            existing = await _replay(session, key, idempotency_key, digest)
            await session.commit()
            if existing is not None:
                return existing.id
        elif sdk_retry:
            retried = await session.scalar(jobs.retried(key.id, digest, since=utcnow() - RETRY_WINDOW))
            if retried is not None:
                return retried.id
        markup = await ledger.markup_in_force(session, key=key, prices=state.prices)
    # the bound without the images' sizes is below the final hold: a key that cannot hold it is
    # refused before its images are fetched, and before it spends rate-limit allowance
    ledger.check_budget(key, ledger.quote(sized, route_plan.routes, prices=state.prices, markup=markup), n=sized.n)
    admission = await _admit(state, key, sized)
    try:
        return await _load_and_submit(state, key=key, submission=submission, digest=digest, markup=markup,
                                      idempotency_key=idempotency_key, webhook_url=webhook_url)
    except REFUSALS:
        # refused after all (an image, the budget): the request used none of the key's allowance
        if admission is not None:
            await state.limiter.refund(admission)
        raise


async def _webhook_url(state: AppState, key: ApiKey, submission: Submission) -> str | None:
    """The job's webhook: the request's, checked now (SSRF rules; a signing secret must be set),
    else the key's default (checked when it was set), else none."""
    url = submission.webhook_url
    if url is None:
        return key.webhook_url if state.settings.webhook_secret is not None else None
    param = submission.webhook_param
    if state.settings.webhook_secret is None:
        raise InvalidRequestError(f"Invalid value for '{param}': this gateway sends no webhooks "
                                  "(IMAGEGATE_WEBHOOK_SECRET is not set).", param=param, code="webhooks_disabled")
    try:
        await check_webhook_url(url, allow=state.settings.fetch_allow_hosts)
    except UnsafeUrl as exc:
        raise InvalidRequestError(f"Invalid value for '{param}': {exc}", param=param,
                                  code="invalid_webhook_url") from None
    return url


async def _load_and_submit(state: AppState, *, key: ApiKey, submission: Submission, digest: str, markup: Decimal,
                           idempotency_key: str | None, webhook_url: str | None) -> str:
    refs = await read_own_files(state, key, [*submission.images, *([submission.mask] if submission.mask else [])])
    pending = await load_images(refs, limits=InputLimits.from_settings(state.settings)) if refs else []
    images, mask = (pending[:-1], pending[-1]) if submission.mask else (pending, None)
    if mask is not None and submission.mask is not None and images and (
            (mask.info.width, mask.info.height) != (images[0].info.width, images[0].info.height)):
        param = submission.mask.param
        raise InvalidRequestError(
            f"Invalid value for '{param}': it is {mask.info.width}x{mask.info.height}, the first image is "
            f"{images[0].info.width}x{images[0].info.height}; they must match.", param=param)
    request = submission.generation.model_copy(update={"input_images": [p.as_input() for p in images],
                                                       "mask": mask.as_input() if mask else None})
    async with state.sessions() as session:
        return await submit(session, key=key, request=request, dialect=submission.dialect, state=state,
                            route_plan=_plan(state.catalogue, request, submission.wire_params), markup=markup,
                            digest=digest, inputs=pending, idempotency_key=idempotency_key,
                            webhook_url=webhook_url, result_ttl_s=submission.result_ttl_s)


async def _admit(state: AppState, key: ApiKey, request: GenerationRequest) -> Admission | None:
    """Count the request against the key's rate limits, or refuse it; what was counted."""
    decision = await state.limiter.check(key.id, images=request.n,
                                         limits=RateLimits(rpm=key.rpm, images_per_minute=key.images_per_minute))
    if not decision.allowed and decision.retry_after_s is None:
        raise InvalidRequestError(
            f"Invalid value for 'n': {request.n} images exceed this API key's limit of "
            f"{key.images_per_minute} images per minute.", param="n", code="integer_above_max_value")
    if not decision.allowed:
        raise RateLimitError("Rate limit reached for this API key; retry after the indicated delay.",
                             retry_after=decision.retry_after_s, headers=decision.headers)
    return decision.admission


async def submit(
    session: AsyncSession,
    *,
    key: ApiKey,
    request: GenerationRequest,
    dialect: Dialect,
    state: AppState,
    route_plan: RoutePlan,
    markup: Decimal,
    digest: str,
    inputs: Sequence[PendingImage] = (),
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    result_ttl_s: int | None = None,
) -> str:
    """Price, hold, insert and commit the job, then enqueue its images; returns its id."""
    now = utcnow()
    job_id = new_id("job")
    logcontext.bind(job_id=job_id, model=route_plan.model)  # for the rest of this request
    quote = ledger.quote(request, route_plan.routes, prices=state.prices, markup=markup)
    image_ids = [new_id("img") for _ in range(request.n)]
    job = {
        "id": job_id, "api_key_id": key.id, "dialect": dialect,
        "request": request.model_dump(mode="json", exclude_none=True),
        "routes": [route.model_dump(mode="json") for route in quote.routes],
        "model": route_plan.model, "status": JobStatus.QUEUED, "n": request.n,
        "succeeded": 0, "failed": 0, "canceled": 0, "created_at": now,
        "idempotency_key": idempotency_key, "request_hash": digest,
        "pricing": quote.pricing.as_json(), "hold_per_image_micros": quote.per_image_micros, "cost_micros": 0,
        "webhook_url": webhook_url, "result_ttl_s": result_ttl_s,
    }
    images = [{"id": image_id, "job_id": job_id, "index": i, "status": ImageStatus.QUEUED, "attempts": 0,
               "enqueued_at": now} for i, image_id in enumerate(image_ids)]
    try:
        if not inputs and session.get_bind().dialect.name == "postgresql":
            # one statement, so one round trip on an autocommit connection: job, images, hold
            statement, params = ledger.submit_in_one(job, images, key=key, quote=quote, n=request.n,
                                                     model=quote.routes[0].model, dialect=session.get_bind().dialect)
            if not (await statement.run_alone(state.engine, params)).scalar():
                async with state.reads() as alone:
                    raise await ledger.refused_hold(alone, key.id, quote.per_image_micros * request.n)
        else:
            for statement, params in jobs.insert_steps(job, images, dialect=session.get_bind().dialect):
                await statement.execute(session, params)
            await ledger.take_hold(session, key=key, job_id=job_id, quote=quote, n=request.n,
                                   model=quote.routes[0].model)
            if inputs:
                # accepted: the input images are written now (never for a refused request)
                await anyio.to_thread.run_sync(store_pending, state.store, inputs)
                await session.execute(retention.touch_inputs([p.key for p in inputs], now=now,
                                                             dialect=session.get_bind().dialect.name))
            await session.commit()
    except IntegrityError:
        await session.rollback()
        if idempotency_key:  # a concurrent request with the same key won the insert
            existing = await _replay(session, key, idempotency_key, digest)
            if existing is not None:
                return existing.id
        raise
    metrics.JOBS("submitted", route_plan.model).inc()
    log.info("job accepted: %d image(s) of %s", request.n, route_plan.model)

    # one task per upstream call: an upstream making n images per call (GPT image) gets the first
    # image of each group, whose task claims the group; the sweeper still watches every image
    per_call = max(1, quote.routes[0].n_per_call)
    state.waiter.expect(job_id)  # before a worker can end it: its waiting request needs no first read
    if not await state.enqueuer.send([image_ids[i] for i in range(0, request.n, per_call)]):
        await session.execute(jobs.mark_unsent(image_ids))
        await session.commit()
    return job_id
