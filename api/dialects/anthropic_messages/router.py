"""``POST /v1/messages`` (plain or SSE) and ``POST /v1/messages/count_tokens``: parse, translate,
submit, wait or stream, render. Any ``anthropic-version`` / ``anthropic-beta`` is accepted and
query strings (Claude Code's ``?beta=true``) are ignored."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.anthropic_messages import translate
from api.dialects.anthropic_messages.schemas import (
    Base64ImageSource,
    CountTokensResponse,
    MessageCreateRequest,
    MessageResponse,
)
from api.flow import accepted, finished, load_result, submit_job, ticks
from api.inputs import PendingImage, from_base64, from_url
from api.results import delivered_images, prefers_async
from api.state import AppState
from core.errors import GatewayError
from core.generation import Dialect

log = logging.getLogger(__name__)

router = APIRouter(tags=["Anthropic Messages"])

PING_INTERVAL_S = 5.0
"""While a streamed job runs, a ``ping`` event goes out this often (keeps proxies and clients from
timing out on a silent connection)."""

_BODY_SCHEMA = {"requestBody": {"content": {"application/json": {
    "schema": MessageCreateRequest.model_json_schema()}}, "required": True}}


async def _load_image(ref: translate.ImageRef, state: AppState) -> PendingImage:
    if isinstance(ref.source, Base64ImageSource):
        return from_base64(ref.source.data, param=ref.param, declared_mime=ref.source.media_type,
                           max_bytes=int(state.settings.fetch_max_mb * 1024 * 1024))
    return await from_url(ref.source.url, param=ref.param, settings=state.settings)


def _request_id(job_id: str) -> str:
    return "req_" + job_id.removeprefix("job_")


@router.post("/v1/messages", response_model=MessageResponse, openapi_extra=_BODY_SCHEMA)
async def create_message(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), MessageCreateRequest)
    conversation = translate.read_conversation(wire)
    model = state.catalogue.resolve(wire.model).spec.id  # an unknown model is refused before any fetch
    pending = [await _load_image(ref, state) for ref in conversation.images]
    generation = translate.to_generation(wire, conversation, input_images=[p.as_input() for p in pending])
    job_id = await submit_job(state, key=key, generation=generation, dialect=Dialect.ANTHROPIC_MESSAGES,
                              inputs=pending)
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)

    message_id = translate.message_id(job_id)
    headers = {"request-id": _request_id(job_id), "x-imagegate-job-id": job_id}
    if wire.stream:
        events = _events(state, job_id, message_id=message_id, model=model,
                         input_tokens=translate.estimate_input_tokens(wire))
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers=headers | {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    result = await finished(state, job_id)
    images = await delivered_images(state, result.images, as_b64=not state.settings.anthropic_image_urls)
    body = translate.to_wire(message_id=message_id, model=result.job.model, images=images)
    return Response(translate.dump(body), media_type="application/json",
                    headers=headers | {"x-imagegate-images": f"{result.job.succeeded}/{result.job.n}",
                                       "x-imagegate-served-by": result.served_by})


async def _events(state: AppState, job_id: str, *, message_id: str, model: str,
                  input_tokens: int) -> AsyncIterator[bytes]:
    """message_start and a ping at once, a ping every PING_INTERVAL_S while the job runs, then the
    text block and the closing events; a failure after the 200 is an ``error`` event."""
    yield translate.message_start(message_id=message_id, model=model, input_tokens=input_tokens)
    yield translate.PING
    try:
        async for _ in ticks(state, job_id, every_s=PING_INTERVAL_S):
            yield translate.PING
        result = await load_result(state, job_id)
        failure = result.failure()
        if failure is not None:
            raise failure
        images = await delivered_images(state, result.images, as_b64=not state.settings.anthropic_image_urls)
    except GatewayError as error:
        yield translate.error_event(error)
        return
    except Exception:
        log.exception("streaming job %s failed", job_id)
        yield translate.error_event(GatewayError("The server had an error while processing your request.",
                                                 job_id=job_id))
        return
    for event in translate.finish_events(images):
        yield event


@router.post("/v1/messages/count_tokens", response_model=CountTokensResponse, openapi_extra=_BODY_SCHEMA)
async def count_tokens(request: Request, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    """An estimate (see ``translate.estimate_input_tokens``): no job is made, nothing is stored."""
    wire = parse_json(await request.body(), MessageCreateRequest)
    state.catalogue.resolve(wire.model)
    return JSONResponse(CountTokensResponse(input_tokens=translate.estimate_input_tokens(wire)).model_dump())
