"""``POST /generate`` (seed 000): parse, translate, submit, wait, render. Nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.simple import translate
from api.dialects.simple.schemas import GenerateRequest, MessageResponse
from api.flow import accepted, finished, submit_job
from api.results import delivered_images, prefers_async
from core.generation import Dialect

router = APIRouter(tags=["CG-Image simple"])


@router.post(
    "/generate",
    response_model=MessageResponse,
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": GenerateRequest.model_json_schema()}}, "required": True}},
)
async def generate(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), GenerateRequest)
    job_id = await submit_job(state, key=key, generation=translate.to_generation(wire), dialect=Dialect.SIMPLE)
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    result = await finished(state, job_id)
    images = await delivered_images(state, result.images, as_b64=not state.settings.anthropic_image_urls)
    body = translate.to_wire(message_id=translate.message_id(job_id), model=result.job.model, images=images)
    return Response(translate.dump(body), media_type="application/json",
                    headers={"x-imagegate-job-id": job_id,
                             "x-imagegate-images": f"{result.job.succeeded}/{result.job.n}",
                             "x-imagegate-served-by": result.served_by})
