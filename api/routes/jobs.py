"""imagegate's own async API: submit a job, poll or follow it, list them, cancel it (``/v1/jobs``,
``/jobs``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from api.body import parse_json, validation_to_error
from api.cancel import cancel_job
from api.deps import ApiKeyDep, StateDep
from api.flow import STREAM_HEADERS, accepted, idempotency_key, is_sdk_retry
from api.job_events import job_events as follow_job
from api.results import get_images, get_owned_job, job_view, job_webhooks, read_owned_job
from api.splice import Splice
from api.submit import Submission, submit_job
from core.generation import Background, Dialect, GenerationRequest, OutputFormat
from core.repo import jobs


class JobCreateRequest(BaseModel):
    """``POST /v1/jobs``: the canonical generation fields."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=32000)
    system: str | None = None
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    quality: str | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Background | None = None
    style: str | None = None
    webhook_url: str | None = Field(None, min_length=1)
    """Where the job view is POSTed, signed, when the job ends (Standard Webhooks)."""
    result_ttl_s: int | None = Field(None, ge=1)
    """Keep the job and its images for at most this long after it ends (the gateway's
    ``IMAGEGATE_RESULT_TTL_S`` still applies when it is shorter)."""


def build_router(prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["Jobs"])

    @router.post("/jobs", status_code=202)
    async def create_job(request: Request, key: ApiKeyDep, state: StateDep) -> JSONResponse:
        wire = parse_json(await request.body(), JobCreateRequest)
        try:  # the fields are the canonical ones, so are their names in an error
            generation = GenerationRequest.model_validate(
                wire.model_dump(exclude_none=True, exclude={"webhook_url", "result_ttl_s"}))
        except ValidationError as exc:
            raise validation_to_error(exc) from None
        submission = Submission(Dialect.JOBS, generation, webhook_url=wire.webhook_url,
                                result_ttl_s=wire.result_ttl_s)
        job_id = await submit_job(state, key=key, submission=submission,
                                  idempotency_key=idempotency_key(request), sdk_retry=is_sdk_retry(request))
        return await accepted(state, job_id, preferred=False)

    @router.get("/jobs/{job_id}")
    async def get_job(
        job_id: str, key: ApiKeyDep, state: StateDep,
        include: Annotated[str | None, Query(description="'b64_json' to inline the images")] = None,
    ) -> Response:
        job, images = await read_owned_job(state, job_id, key)
        async with state.reads() as session:
            webhooks = await job_webhooks(session, job_id)
        splice = Splice(state.store)
        view = await job_view(state, job, images, include_b64=include == "b64_json", webhooks=webhooks,
                              splice=splice)
        return await splice.response(JSONResponse(view))

    @router.get("/jobs/{job_id}/events")
    async def job_events(job_id: str, key: ApiKeyDep, state: StateDep) -> StreamingResponse:
        """Server-sent events of the job's progress, until it ends (see api/job_events.py)."""
        async with state.sessions() as session:
            await get_owned_job(session, job_id, key)
        return StreamingResponse(follow_job(state, job_id), media_type="text/event-stream", headers=STREAM_HEADERS)

    @router.get("/jobs")
    async def list_jobs(
        key: ApiKeyDep, state: StateDep,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[str | None, Query(description="a job id: list the jobs older than it")] = None,
        status: str | None = None,
    ) -> JSONResponse:
        async with state.reads() as session:
            found = list(await session.scalars(jobs.list_for_key(key.id, limit=limit, before=after, status=status)))
        page = found[:limit]
        data = [
            {"id": j.id, "object": "job", "status": j.status, "model": j.model,
             "created_at": int(j.created_at.timestamp()),
             "finished_at": int(j.finished_at.timestamp()) if j.finished_at else None,
             "progress": {"total": j.n, "done": j.done, "succeeded": j.succeeded,
                          "failed": j.failed, "canceled": j.canceled}}
            for j in page
        ]
        return JSONResponse({
            "object": "list", "data": data, "has_more": len(found) > limit,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
        })

    @router.delete("/jobs/{job_id}")
    async def cancel(job_id: str, key: ApiKeyDep, state: StateDep) -> JSONResponse:
        """Cancel the images nothing is making (see api/cancel.py); those running finish and are
        delivered."""
        async with state.sessions() as session:
            await get_owned_job(session, job_id, key)
        await cancel_job(state, job_id)
        async with state.sessions() as session:
            job = await get_owned_job(session, job_id, key)
            view = await job_view(state, job, await get_images(session, job_id), include_b64=False)
        return JSONResponse(view)

    return router
