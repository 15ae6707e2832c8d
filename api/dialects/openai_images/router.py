"""``POST /v1/images/generations``: parse, translate, submit, wait, render. Nothing else."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.openai_images import translate
from api.dialects.openai_images.schemas import ImageGenerateRequest, ImagesResponse
from api.results import (
    delivered_images,
    get_images,
    job_view,
    prefers_async,
    wait_for_job,
)
from api.submit import submit
from core.errors import error_for_failed_job
from core.generation import AppliedParams, Dialect
from core.models import Job

router = APIRouter(tags=["OpenAI Images"])


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": ImageGenerateRequest.model_json_schema()}}, "required": True}},
)
async def create_image(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), ImageGenerateRequest)
    generation = translate.to_generation(wire)
    async with state.sessions() as session:
        job = await submit(session, key=key, request=generation, dialect=Dialect.OPENAI_IMAGES,
                           catalogue=state.catalogue, enqueuer=state.enqueuer)
        job_id = job.id

    if prefers_async(request.headers.get("prefer")):
        async with state.sessions() as session:
            job = await session.get_one(Job, job_id)
            view = await job_view(state, job, await get_images(session, job_id), include_b64=False)
        return JSONResponse(view, status_code=202, headers={
            "Location": f"/v1/jobs/{job_id}", "Preference-Applied": "respond-async",
            "x-imagegate-job-id": job_id})

    await wait_for_job(state, job_id)
    async with state.sessions() as session:
        job = await session.get_one(Job, job_id)
        images = await get_images(session, job_id)
    if job.succeeded == 0:
        first = next((i for i in images if i.error_code), None)
        raise error_for_failed_job(first.error_code if first else None,
                                   first.error_message if first else None, job_id=job_id)

    applied = AppliedParams.model_validate(job.applied)
    delivered = await delivered_images(state, images, as_b64=wire.response_format != "url")
    body = translate.to_wire(created=int(job.created_at.timestamp()), applied=applied, images=delivered)
    return Response(
        body.model_dump_json(exclude_none=True),
        media_type="application/json",
        headers={
            "x-imagegate-job-id": job_id,
            "x-imagegate-applied": json.dumps(
                {"model": applied.model, "size": applied.size, "aspect_ratio": applied.aspect_ratio,
                 "image_size": applied.image_size, "output_format": applied.output_format,
                 "quality": applied.quality, "adjusted": applied.adjusted, "ignored": applied.ignored},
                separators=(",", ":")),
            "x-imagegate-images": f"{job.succeeded}/{job.n}",
            "x-imagegate-served-by": ",".join(sorted({i.model for i in images if i.model})),
        },
    )
