"""The path every dialect router shares: submit a canonical request, then either answer 202 with
the job (``Prefer: respond-async``), wait for it, or stream while waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.inputs import PendingImage
from api.results import get_images, job_is_terminal, job_view, wait_for_job
from api.state import AppState
from api.submit import submit
from core.billing.money import format_usd
from core.errors import GatewayError, JobWaitTimeoutError, error_for_failed_job
from core.generation import AppliedParams, Dialect, GenerationRequest
from core.jobs import ImageStatus
from core.models import ApiKey, Job, JobImage
from core.repo import jobs


@dataclass
class RequestContext:
    idempotency_key: str | None
    headers: dict[str, str]


_CONTEXT: ContextVar[RequestContext | None] = ContextVar("imagegate_request", default=None)


class RequestContextMiddleware:
    """Per request: makes the ``Idempotency-Key`` header available to submit (every generation
    endpoint honours it), and adds the finished job's headers (``x-imagegate-job-id``,
    ``x-imagegate-cost``, ``x-imagegate-served-by``) to the response, whichever dialect renders it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = next((v.decode("latin-1").strip() for k, v in scope.get("headers", ()) if k == b"idempotency-key"),
                     None)
        context = RequestContext(idempotency_key=value or None, headers={})
        token = _CONTEXT.set(context)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and context.headers:
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in context.headers.items()
                         if k.encode("latin-1") not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _CONTEXT.reset(token)


def result_headers(result: JobResult) -> dict[str, str]:
    return {"x-imagegate-job-id": result.job.id, "x-imagegate-cost": format_usd(result.job.cost_micros),
            "x-imagegate-served-by": result.served_by, "x-imagegate-images": f"{result.job.succeeded}/{result.job.n}"}


@dataclass
class JobResult:
    """A finished job as the renderers need it."""

    job: Job
    images: list[JobImage]
    applied: AppliedParams

    @property
    def delivered(self) -> list[JobImage]:
        return [i for i in self.images if i.status == ImageStatus.SUCCEEDED and i.object_key]

    def failure(self) -> GatewayError | None:
        """The error to answer with when no image was delivered."""
        if self.delivered:
            return None
        first = next((i for i in self.images if i.error_code), None)
        return error_for_failed_job(first.error_code if first else None,
                                    first.error_message if first else None, job_id=self.job.id)

    @property
    def served_by(self) -> str:
        return ",".join(sorted({i.model for i in self.images if i.model}))


async def submit_job(state: AppState, *, key: ApiKey, generation: GenerationRequest, dialect: Dialect,
                     inputs: list[PendingImage] | None = None, idempotency_key: str | None = None) -> str:
    """Submit and return the job id (the original job's, for an idempotent replay)."""
    async with state.sessions() as session:
        context = _CONTEXT.get()
        return await submit(session, key=key, request=generation, dialect=dialect, state=state, inputs=inputs,
                            idempotency_key=idempotency_key or (context.idempotency_key if context else None))


async def accepted(state: AppState, job_id: str) -> JSONResponse:
    """``202 Accepted`` with the job view, for ``Prefer: respond-async``."""
    async with state.sessions() as session:
        job = await session.scalar(jobs.by_id(job_id))
        assert job is not None
        view = await job_view(state, job, await get_images(session, job_id), include_b64=False)
    return JSONResponse(view, status_code=202, headers={
        "Location": f"/v1/jobs/{job_id}", "Preference-Applied": "respond-async", "x-imagegate-job-id": job_id})


async def load_result(state: AppState, job_id: str) -> JobResult:
    async with state.sessions() as session:
        job = await session.scalar(jobs.by_id(job_id))
        assert job is not None
        images = await get_images(session, job_id)
    return JobResult(job=job, images=images, applied=AppliedParams.model_validate(job.applied))


async def finished(state: AppState, job_id: str) -> JobResult:
    """Wait for the job (504 naming it after the sync timeout) and load it; raise its error when
    no image was delivered."""
    await wait_for_job(state, job_id)
    result = await load_result(state, job_id)
    context = _CONTEXT.get()
    if context is not None:
        context.headers.update(result_headers(result))
    error = result.failure()
    if error is not None:
        raise error
    return result


async def ticks(state: AppState, job_id: str, *, every_s: float) -> AsyncIterator[None]:
    """For streaming answers: yields every ``every_s`` seconds while the job runs (time to send a
    keep-alive), returns when it has ended; raises JobWaitTimeoutError after the sync timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.sync_timeout_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise JobWaitTimeoutError(
                f"The job '{job_id}' did not finish within {state.settings.sync_timeout_s:g} s. It goes on.",
                job_id=job_id)
        done = await state.waiter.wait(job_id, is_done=lambda: job_is_terminal(state, job_id),
                                       timeout=min(every_s, remaining))
        if done:
            return
        yield
