"""Gemini native routes: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent``
(``?alt=sse`` or a streamed JSON array), ``:predict`` (Imagen's shape, served by whatever model the
id maps to), and ``GET /v1beta/models[/{model}]``. Parse, translate, submit, wait, render.

Model ids may hold slashes (``google/gemini-3-pro-image``, ``vertex/gemini-3-pro-image``), so one
path route takes everything after ``models/`` and splits the method off at the last ``:``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.gemini import translate
from api.dialects.gemini.schemas import GenerateContentRequest, PredictRequest
from api.flow import JobResult, accepted, finished, load_result, result_headers, submit_job, ticks
from api.inputs import PendingImage, from_base64, from_url
from api.results import delivered_images, prefers_async
from api.state import AppState
from core.errors import ContentPolicyError, GatewayError, InvalidRequestError, NotFoundError
from core.generation import Dialect, GenerationRequest
from core.models import ApiKey

log = logging.getLogger(__name__)

router = APIRouter(tags=["Gemini"])

KEEPALIVE_S = 5.0
"""How often a streamed answer sends a keep-alive while its job runs."""


@router.post("/v1beta/models/{model_action:path}")
async def model_action(model_action: str, request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    model, action = translate.split_model_action(model_action)
    if action == "predict":
        return await _predict(model, request, key, state)

    wire = parse_json(await request.body(), GenerateContentRequest)
    include_text = "TEXT" in translate.response_modalities(wire)
    generation = translate.to_generation(wire, model=model, inputs=[])  # refuse a bad request before fetching
    inputs = [await _load(ref, state) for ref in translate.input_refs(wire)]
    if inputs:
        generation = generation.model_copy(update={"input_images": [p.as_input() for p in inputs]})
    job_id = await _submit(state, key, generation, inputs, translate.GENERATE_PARAMS)
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    if action == "streamGenerateContent":
        sse = request.query_params.get("alt", "").lower() == "sse"
        return StreamingResponse(
            _stream(state, job_id, sse=sse, include_text=include_text),
            media_type="text/event-stream" if sse else "application/json",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-imagegate-job-id": job_id},
        )

    try:
        result = await finished(state, job_id)
    except ContentPolicyError as error:
        result = await load_result(state, job_id)
        blocked = translate.blocked(error.message, model_version=result.applied.model, response_id=job_id)
        return _json(translate.dump(blocked), result)
    images = await delivered_images(state, result.images, as_b64=True)
    body = translate.to_wire(images, model_version=_model_version(result), response_id=job_id,
                             include_text=include_text)
    return _json(translate.dump(body), result)


async def _predict(model: str, request: Request, key: ApiKey, state: AppState) -> Response:
    wire = parse_json(await request.body(), PredictRequest)
    job_id = await _submit(state, key, translate.predict_to_generation(wire, model=model), [],
                           translate.PREDICT_PARAMS)
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    try:
        result = await finished(state, job_id)
    except ContentPolicyError as error:
        result = await load_result(state, job_id)
        include = bool(wire.parameters and wire.parameters.include_rai_reason)
        return _json(translate.dump(translate.predict_blocked(error.message, include_rai_reason=include)), result)
    images = await delivered_images(state, result.images, as_b64=True)
    return _json(translate.dump(translate.to_predict_wire(images)), result)


@router.get("/v1beta/models")
async def list_models(
    key: ApiKeyDep,
    state: StateDep,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
) -> JSONResponse:
    page = translate.list_models(state.catalogue.models, page_size=page_size, page_token=page_token)
    return JSONResponse(translate.dump(page))


@router.get("/v1beta/models/{model_id:path}")
async def get_model(model_id: str, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    if not model_id.strip():
        raise NotFoundError("Name the model: GET /v1beta/models/{model}.", code="model_not_found")
    return JSONResponse(translate.dump(translate.model_resource(state.catalogue.resolve(model_id).spec)))


async def _submit(state: AppState, key: ApiKey, generation: GenerationRequest, inputs: list[PendingImage],
                  names: dict[str, str]) -> str:
    try:
        return await submit_job(state, key=key, generation=generation, dialect=Dialect.GEMINI, inputs=inputs or None)
    except InvalidRequestError as error:
        raise translate.rename_params(error, names) from None


async def _load(ref: translate.ImageRef, state: AppState) -> PendingImage:
    if ref.data is not None:
        return from_base64(ref.data, param=ref.param, declared_mime=ref.mime_type,
                           max_bytes=int(state.settings.fetch_max_mb * 1024 * 1024))
    return await from_url(ref.uri or "", param=ref.param, settings=state.settings)


async def _stream(state: AppState, job_id: str, *, sse: bool, include_text: bool) -> AsyncIterator[bytes]:
    """Keep-alives while the job runs, then one chunk per image — or one error chunk: the status
    line has been sent, so a failure can only be said in the body."""
    if not sse:
        yield b"["
    chunks: list[dict[str, Any]]
    try:
        async for _ in ticks(state, job_id, every_s=KEEPALIVE_S):
            yield translate.SSE_KEEPALIVE
        result = await load_result(state, job_id)
        error = result.failure()
        if isinstance(error, ContentPolicyError):
            chunks = [translate.dump(translate.blocked(error.message, model_version=result.applied.model,
                                                       response_id=job_id))]
        elif error is not None:
            chunks = [translate.to_wire_error(error)[1]]
        else:
            images = await delivered_images(state, result.images, as_b64=True)
            chunks = [translate.dump(c) for c in translate.to_stream_chunks(
                images, model_version=_model_version(result), response_id=job_id, include_text=include_text)]
    except GatewayError as error:
        chunks = [translate.to_wire_error(error)[1]]
    except Exception:
        log.exception("streamed Gemini answer for job %s failed", job_id)
        chunks = [translate.to_wire_error(GatewayError("The server had an error while processing your request."))[1]]
    for k, chunk in enumerate(chunks):
        yield translate.sse_event(chunk) if sse else translate.json_array_item(chunk, first=k == 0)
    if not sse:
        yield b"]"


def _model_version(result: JobResult) -> str:
    """The catalogue model that served (a fallback's id when one did)."""
    served = next((i.model for i in result.delivered if i.model), None)
    return served or result.applied.model


def _json(body: dict[str, Any], result: JobResult) -> JSONResponse:
    return JSONResponse(body, headers=result_headers(result))
