"""The one flow every dialect's generation route shares: :func:`respond`.

A route parses and translates its body into a :class:`api.submit.Submission`, then calls
``respond`` with two things of its own: how to render a finished job (``render``) and, for a
streamed answer, how to stream one (``stream``). ``respond`` then

1. submits (:func:`api.submit.submit_job`, with the request's ``Idempotency-Key``);
2. answers ``202 Accepted`` with the job for ``Prefer: respond-async``;
3. streams, or waits for the job (a ``504`` naming the job after ``IMAGEGATE_SYNC_TIMEOUT_S``) and
   renders it;
4. sets the job's headers on the answer, the same for every dialect: ``x-imagegate-job-id``,
   ``x-imagegate-cost``, ``x-imagegate-served-by``, ``x-imagegate-images`` and
   ``x-imagegate-applied`` (a stream, whose headers leave before the job ends, carries the id and
   the applied parameters). An error about a finished job carries the same headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from api.cancel import cancel_job
from api.results import (
    JobCheck,
    database_unavailable,
    delivered_images,
    job_view,
    prefers_async,
    read_job,
    wait_for_job,
)
from api.splice import Splice
from api.state import AppState
from api.submit import Submission, submit_job
from core.billing.money import format_usd
from core.db import DATABASE_UNAVAILABLE
from core.errors import ContentPolicyError, GatewayError, InvalidRequestError, error_for_failed_job
from core.generation import AppliedParams, DeliveredImage
from core.jobs import ImageStatus
from core.models import ApiKey, Job, JobImage
from core.text import ascii_int, refused_character

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
"""The status logged for a request whose caller left before its answer (nginx's convention)."""
WEBHOOK_HEADER = "x-imagegate-webhook-url"
"""Names the job's webhook on any generation endpoint (with ``Prefer: respond-async``, typically)."""
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def applied_header(applied: AppliedParams) -> str:
    """``x-imagegate-applied``: what is actually generated, and what was adjusted or ignored."""
    return json.dumps({"model": applied.model, "size": applied.size, "aspect_ratio": applied.aspect_ratio,
                       "image_size": applied.image_size, "output_format": applied.output_format,
                       "quality": applied.quality, "adjusted": applied.adjusted, "ignored": applied.ignored},
                      separators=(",", ":"))


@dataclass
class JobResult:
    """A job as the renderers need it (read once it has ended, or at the start of a stream)."""

    state: AppState
    job: Job
    images: list[JobImage]
    splice: Splice | None = None
    """Set by :func:`respond` for a rendered answer: images asked for in base64 are placeholders
    in the rendered body, spliced in as the answer is sent (api/splice.py)."""

    @property
    def applied(self) -> AppliedParams:
        return AppliedParams.model_validate(self.job.applied)

    @property
    def delivered(self) -> list[JobImage]:
        return [i for i in self.images if i.status == ImageStatus.SUCCEEDED and i.object_key]

    @property
    def served_by(self) -> str:
        return ",".join(sorted({i.model for i in self.images if i.model}))

    def served_model(self, *, otherwise: str | None = None) -> str:
        """The catalogue model that served the first delivered image (a fallback's id when one
        did); when none was delivered, ``otherwise``, or the first planned route's model."""
        return next((i.model for i in self.delivered if i.model), None) or otherwise or self.applied.model

    @property
    def headers(self) -> dict[str, str]:
        """The job's headers, on every answer about it."""
        return {"x-imagegate-job-id": self.job.id, "x-imagegate-cost": format_usd(self.job.cost_micros),
                "x-imagegate-served-by": self.served_by, "x-imagegate-images": f"{self.job.succeeded}/{self.job.n}",
                "x-imagegate-applied": applied_header(self.applied)}

    def failure(self, *, blocked_is_an_answer: bool = False) -> GatewayError | None:
        """The error to answer with when no image was delivered (with the job's headers). A
        dialect that answers a blocked prompt with a 200 (chat, Gemini) passes
        ``blocked_is_an_answer``."""
        if self.delivered:
            return None
        first = next((i for i in self.images if i.error_code), None)
        error = error_for_failed_job(first.error_code if first else None, first.error_message if first else None,
                                     job_id=self.job.id, headers=self.headers)
        if blocked_is_an_answer and isinstance(error, ContentPolicyError):
            return None
        return error

    def blocked(self) -> ContentPolicyError | None:
        """The safety system's refusal, when that is why no image was delivered."""
        if self.delivered:
            return None
        error = self.failure()
        return error if isinstance(error, ContentPolicyError) else None

    async def delivered_images(self, *, as_b64: bool) -> list[DeliveredImage]:
        return await delivered_images(self.state, self.images, as_b64=as_b64, splice=self.splice)


async def load_finished(state: AppState, job_id: str) -> JobResult:
    """A committed job, read for an answer about it; a 503 naming it while the database is away."""
    try:
        return await load_result(state, job_id)
    except DATABASE_UNAVAILABLE:
        raise database_unavailable(job_id) from None


async def load_result(state: AppState, job_id: str) -> JobResult:
    found = await read_job(state, job_id)
    if found is None:
        raise GatewayError(f"The job '{job_id}' vanished.", job_id=job_id)
    job, images = found
    return JobResult(state=state, job=job, images=images)


@dataclass
class JobStream:
    """What a streaming renderer works with: the job as it was submitted, keep-alive ticks while
    it runs, then its result."""

    state: AppState
    start: JobResult
    splice: Splice | None = None
    """For a streamer that sends each image whole in one event: images asked for in base64 are
    placeholders in its events, expanded as they are sent (api/splice.py)."""

    @property
    def job(self) -> Job:
        return self.start.job

    async def ticks(self, *, every_s: float) -> AsyncIterator[None]:
        """Yields every ``every_s`` seconds while the job runs (time to send a keep-alive),
        returns when it has ended; raises JobWaitTimeoutError after the sync timeout."""
        state, job_id = self.state, self.job.id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + state.settings.sync_timeout_s
        check = JobCheck(state, job_id)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise check.timed_out(state.settings.sync_timeout_s)
            if await state.waiter.wait(job_id, is_done=check, timeout=min(every_s, remaining)):
                return
            yield

    async def result(self) -> JobResult:
        result = await load_finished(self.state, self.job.id)
        result.splice = self.splice
        return result


Render = Callable[[JobResult], Awaitable[Response]]
Stream = Callable[[JobStream], AsyncIterator[bytes]]


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key", "").strip()
    if refused_character(value):  # the key is stored with the job
        raise InvalidRequestError("The Idempotency-Key header may not hold NUL characters.", param="Idempotency-Key")
    return value or None


def is_sdk_retry(request: Request) -> bool:
    """Whether an openai or anthropic SDK sends this request again (``x-stainless-retry-count``
    above 0): after a timeout or an error, the same logical call."""
    count = ascii_int(request.headers.get("x-stainless-retry-count", "").strip())
    return count is not None and count > 0


async def respond(request: Request, state: AppState, *, key: ApiKey, submission: Submission, render: Render,
                  stream: Stream | None = None, stream_media_type: str = "text/event-stream",
                  stream_headers: Callable[[str], dict[str, str]] | None = None,
                  splice_stream: bool = False) -> Response:
    """Submit, then answer 202, stream, or wait and render (see the module docstring).
    ``stream_headers`` gives a stream's own headers from its job's id; ``splice_stream`` says
    that the streamer sends each image whole in one chunk, so that its base64 can be spliced in
    (:class:`JobStream`)."""
    webhook = request.headers.get(WEBHOOK_HEADER)
    if webhook is not None:
        submission = replace(submission, webhook_url=webhook.strip(), webhook_param=WEBHOOK_HEADER)
    job_id = await submit_job(state, key=key, submission=submission, idempotency_key=idempotency_key(request),
                              sdk_retry=is_sdk_retry(request))
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    if stream is not None:
        start = await load_finished(state, job_id)
        headers = {**STREAM_HEADERS, **(stream_headers(job_id) if stream_headers else {}),
                   "x-imagegate-job-id": job_id, "x-imagegate-applied": applied_header(start.applied)}
        splice = Splice(state.store) if splice_stream else None
        chunks = stream(JobStream(state, start, splice=splice))
        if splice is not None:
            chunks = _expanded(splice, chunks)
        return StreamingResponse(_cancel_if_left(state, job_id, chunks), media_type=stream_media_type,
                                 headers=headers)
    if not await _waited(request, state, job_id):
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it
    result = await load_finished(state, job_id)
    result.splice = Splice(state.store)
    response = await render(result)
    if result.splice:
        response = await result.splice.response(response)
    response.headers.update(result.headers)
    return response


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (its body was read: what comes next is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _waited(request: Request, state: AppState, job_id: str) -> bool:
    """Wait for the job (True); if the caller leaves first (False), nobody will get its images:
    what has not started is canceled (its holds released), what runs finishes and stays in
    ``/v1/jobs``."""
    waiting = asyncio.ensure_future(wait_for_job(state, job_id))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if waiting.done():
        waiting.result()  # the job ended (or the wait's own 504/503)
        return True
    waiting.cancel()
    await _cancel_left(state, job_id)
    return False


async def _cancel_left(state: AppState, job_id: str) -> None:
    canceled = await cancel_job(state, job_id)
    log.info("job %s: the caller left before it ended; %d image(s) not yet made canceled", job_id, len(canceled))


async def _expanded(splice: Splice, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if splice:
            async for piece in splice.expand(chunk):
                yield piece
        else:
            yield chunk


async def _cancel_if_left(state: AppState, job_id: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A stream whose reader leaves before the end cancels what of the job has not started."""
    finished = False
    try:
        async for chunk in chunks:
            yield chunk
        finished = True
    finally:
        if not finished:
            with anyio.CancelScope(shield=True):
                await _cancel_left(state, job_id)


async def accepted(state: AppState, job_id: str, *, preferred: bool = True) -> JSONResponse:
    """``202 Accepted`` with the job view: for ``Prefer: respond-async`` (``preferred``), and for
    ``POST /v1/jobs``."""
    result = await load_finished(state, job_id)
    view: dict[str, Any] = await job_view(state, result.job, result.images, include_b64=False)
    headers = {"Location": f"/v1/jobs/{job_id}", **result.headers}
    if preferred:
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(view, status_code=202, headers=headers)
