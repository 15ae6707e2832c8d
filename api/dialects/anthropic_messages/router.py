"""``POST /v1/messages`` (plain or SSE) and ``POST /v1/messages/count_tokens``: parse, translate,
submit, wait or stream, render. Any ``anthropic-version`` / ``anthropic-beta`` is accepted and
query strings (Claude Code's ``?beta=true``) are ignored.

A model id the catalogue does not know (Claude Code asks for its own ``claude-…`` model when it is
given no ``--model``) is served by the default model, as ``applied.adjusted`` says
(``"model": "claude-… -> demo-image"``), unless ``IMAGEGATE_ANTHROPIC_UNKNOWN_MODEL=error``
makes it a 404."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.anthropic_messages import translate
from api.dialects.anthropic_messages.schemas import CountTokensResponse, MessageCreateRequest, MessageResponse
from api.flow import JobResult, JobStream, Render, Stream, respond
from api.state import AppState
from api.submit import Submission
from core.errors import GatewayError
from core.generation import Dialect

log = logging.getLogger(__name__)

router = APIRouter(tags=["Anthropic Messages"])

PING_INTERVAL_S = 5.0
"""While a streamed job runs, a ``ping`` event goes out this often (keeps proxies and clients from
timing out on a silent connection)."""

_BODY_SCHEMA = {"requestBody": {"content": {"application/json": {
    "schema": MessageCreateRequest.model_json_schema()}}, "required": True}}


def served_model(state: AppState, requested: str | None) -> tuple[str | None, dict[str, str]]:
    """The model to ask for, and what was adjusted: an id the catalogue does not know becomes the
    default model unless the operator refuses it (``IMAGEGATE_ANTHROPIC_UNKNOWN_MODEL``)."""
    if state.catalogue.knows(requested) or state.settings.anthropic_unknown_model == "error":
        return requested, {}
    default = state.catalogue.default.id
    return default, {"model": f"{requested} -> {default}"}


@router.post("/v1/messages", response_model=MessageResponse, openapi_extra=_BODY_SCHEMA)
async def create_message(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), MessageCreateRequest)
    conversation = translate.read_conversation(wire, agent_system_prompt=state.settings.agent_system_prompt)
    model, adjusted = served_model(state, wire.model)
    generation = translate.to_generation(wire, conversation, model=model, adjusted=adjusted)
    submission = Submission(Dialect.ANTHROPIC_MESSAGES, generation, images=conversation.images)
    if wire.stream:
        resolved = state.catalogue.resolve(generation.model).spec.id
        return await respond(request, state, key=key, submission=submission, render=_render(state),
                             stream=_streamer(state, model=resolved,
                                              input_tokens=translate.estimate_input_tokens(conversation)),
                             stream_headers=lambda job_id: {"request-id": translate.request_id(job_id)})
    return await respond(request, state, key=key, submission=submission, render=_render(state))


def message_renderer(state: AppState, *, message_id: Callable[[str], str],
                     headers: Callable[[str], dict[str, str]]) -> Render:
    """A finished job as a Message (``/v1/messages``, and CG-Image's ``/generate``, which answers
    the same body under its own ids)."""
    async def render(result: JobResult) -> Response:
        failure = result.failure()
        if failure is not None:
            raise failure
        images = await result.delivered_images(as_b64=not state.settings.anthropic_image_urls)
        body = translate.to_wire(message_id=message_id(result.job.id), model=result.job.model, images=images)
        return Response(translate.dump(body), media_type="application/json", headers=headers(result.job.id))
    return render


def _render(state: AppState) -> Render:
    return message_renderer(state, message_id=translate.message_id,
                            headers=lambda job_id: {"request-id": translate.request_id(job_id)})


def _streamer(state: AppState, *, model: str, input_tokens: int) -> Stream:
    async def stream(job: JobStream) -> AsyncIterator[bytes]:
        """message_start and a ping at once, a ping every PING_INTERVAL_S while the job runs, then
        the text block and the closing events; a failure after the 200 is an ``error`` event."""
        yield translate.message_start(message_id=translate.message_id(job.job.id), model=model,
                                      input_tokens=input_tokens)
        yield translate.PING
        try:
            async for _ in job.ticks(every_s=PING_INTERVAL_S):
                yield translate.PING
            result = await job.result()
            failure = result.failure()
            if failure is not None:
                raise failure
            images = await result.delivered_images(as_b64=not state.settings.anthropic_image_urls)
        except GatewayError as error:
            yield translate.error_event(error)
            return
        except Exception:
            log.exception("streaming job %s failed", job.job.id)
            yield translate.error_event(GatewayError("The server had an error while processing your request.",
                                                     job_id=job.job.id))
            return
        for event in translate.finish_events(images):
            yield event
    return stream


@router.post("/v1/messages/count_tokens", response_model=CountTokensResponse, openapi_extra=_BODY_SCHEMA)
async def count_tokens(request: Request, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    """An estimate (see ``translate.estimate_input_tokens``): no job is made, nothing is stored."""
    wire = parse_json(await request.body(), MessageCreateRequest)
    state.catalogue.resolve(served_model(state, wire.model)[0])
    conversation = translate.read_conversation(wire, agent_system_prompt=state.settings.agent_system_prompt)
    return JSONResponse(CountTokensResponse(input_tokens=translate.estimate_input_tokens(conversation)).model_dump())
