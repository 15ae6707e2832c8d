"""Gemini native routes: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent``
(``?alt=sse`` or a streamed JSON array), ``:predict`` (Imagen's shape, served by whatever model the
id maps to), and ``GET /v1beta/models[/{model}]``. Parse, translate, and hand it to the shared flow.
The same methods answer under ``/v1/models/`` (the Gemini API's stable version, google-genai's
default); ``GET /v1/models`` is shared with the other dialects (:mod:`api.routes.models`).

Model ids may hold slashes (``google/gemini-3-pro-image``, ``vertex/gemini-3-pro-image``), so one
path route takes everything after ``models/`` and splits the method off at the last ``:``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.gemini import errors, models, predict, stream, translate
from api.dialects.gemini.schemas import GenerateContentRequest, PredictRequest
from api.flow import JobResult, JobStream, Render, Stream, respond
from api.state import AppState
from api.submit import Submission
from core.errors import GatewayError, NotFoundError
from core.generation import Dialect
from core.models import ApiKey

log = logging.getLogger(__name__)

router = APIRouter(tags=["Gemini"])

KEEPALIVE_S = 5.0
"""How often a streamed answer sends a keep-alive while its job runs."""


@router.post("/v1beta/models/{model_action:path}")
@router.post("/v1/models/{model_action:path}")
async def model_action(model_action: str, request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    model, action = translate.split_model_action(model_action)
    if action == "predict":
        return await _predict(model, request, key, state)
    wire = parse_json(await request.body(), GenerateContentRequest)
    include_text = "TEXT" in translate.response_modalities(wire)
    generation = translate.to_generation(wire, model=model)
    submission = Submission(Dialect.GEMINI, generation, images=translate.input_refs(wire),
                            wire_params=translate.GENERATE_PARAMS)
    if action == "streamGenerateContent":
        sse = request.query_params.get("alt", "").lower() == "sse"
        return await respond(request, state, key=key, submission=submission, render=_render(include_text),
                             stream=_streamer(sse=sse, include_text=include_text), splice_stream=True,
                             stream_media_type="text/event-stream" if sse else "application/json")
    return await respond(request, state, key=key, submission=submission, render=_render(include_text))


def _render(include_text: bool) -> Render:
    async def render(result: JobResult) -> Response:
        failure = result.failure(blocked_is_an_answer=True)
        if failure is not None:
            raise failure
        blocked = result.blocked()
        if blocked is not None:  # Google answers a refused prompt with a 200 and promptFeedback
            body = translate.blocked(blocked.message, model_version=result.applied.model, response_id=result.job.id)
        else:
            body = translate.to_wire(await result.delivered_images(as_b64=True), model_version=result.served_model(),
                                     response_id=result.job.id, include_text=include_text)
        return JSONResponse(translate.dump(body))
    return render


async def _predict(model: str, request: Request, key: ApiKey, state: AppState) -> Response:
    wire = parse_json(await request.body(), PredictRequest)
    submission = Submission(Dialect.GEMINI, predict.predict_to_generation(wire, model=model),
                            wire_params=predict.PREDICT_PARAMS)
    include_rai_reason = bool(wire.parameters and wire.parameters.include_rai_reason)

    async def render(result: JobResult) -> Response:
        failure = result.failure(blocked_is_an_answer=True)
        if failure is not None:
            raise failure
        blocked = result.blocked()
        if blocked is not None:
            return JSONResponse(translate.dump(predict.predict_blocked(blocked.message,
                                                                       include_rai_reason=include_rai_reason)))
        images = await result.delivered_images(as_b64=True)
        return JSONResponse(translate.dump(predict.to_predict_wire(images)))

    return await respond(request, state, key=key, submission=submission, render=render)


@router.get("/v1beta/models")
async def list_models(
    key: ApiKeyDep,
    state: StateDep,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
) -> JSONResponse:
    page = models.list_models(state.catalogue.models, page_size=page_size, page_token=page_token)
    return JSONResponse(translate.dump(page))


@router.get("/v1beta/models/{model_id:path}")
async def get_model(model_id: str, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    if not model_id.strip():
        raise NotFoundError("Name the model: GET /v1beta/models/{model}.", code="model_not_found")
    return JSONResponse(translate.dump(models.model_resource(state.catalogue.resolve(model_id).spec)))


def _streamer(*, sse: bool, include_text: bool) -> Stream:
    async def chunks_of(job: JobStream) -> AsyncIterator[bytes]:
        """Keep-alives while the job runs, then one chunk per image — or one error chunk: the
        status line has been sent, so a failure can only be said in the body."""
        if not sse:
            yield b"["
        chunks: list[dict[str, Any]]
        try:
            async for _ in job.ticks(every_s=KEEPALIVE_S):
                yield stream.SSE_KEEPALIVE
            result = await job.result()
            failure = result.failure(blocked_is_an_answer=True)
            blocked = result.blocked()
            if failure is not None:
                chunks = [errors.to_wire_error(failure).body]
            elif blocked is not None:
                chunks = [translate.dump(translate.blocked(blocked.message, model_version=result.applied.model,
                                                           response_id=job.job.id))]
            else:
                images = await result.delivered_images(as_b64=True)
                chunks = [translate.dump(c) for c in translate.to_stream_chunks(
                    images, model_version=result.served_model(), response_id=job.job.id, include_text=include_text)]
        except GatewayError as error:
            chunks = [errors.to_wire_error(error).body]
        except Exception:
            log.exception("streamed Gemini answer for job %s failed", job.job.id)
            chunks = [errors.to_wire_error(GatewayError("The server had an error while processing your request.")).body]
        for k, chunk in enumerate(chunks):
            yield stream.sse_event(chunk) if sse else stream.json_array_item(chunk, first=k == 0)
        if not sse:
            yield b"]"
    return chunks_of
