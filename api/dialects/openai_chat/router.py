"""``POST /v1/chat/completions`` for image models (wire-formats §2): parse, translate, submit,
then answer 202, wait and render, or stream while waiting.

Decisions this dialect makes:

- **Prompt.** The text of the last user message. When user/assistant turns came before it, a
  compact transcript of the latest few goes first ("Earlier in this conversation: ... Now: ..."),
  each cut to a few hundred characters, so a follow-up like "now make it blue" keeps its meaning.
  ``system``/``developer`` messages become the canonical ``system`` (joined); ``tool`` messages
  are ignored. No ``model`` means the default model (seed 000 sends none).
- **Input images.** Every ``image_url`` part of the user messages is an input image (an edit):
  data URLs are decoded strictly, http(s) URLs fetched by the SSRF-safe fetcher. An ``image_url``
  in any other role is a 400 rather than silently dropped.
- **Modalities.** Absent means ``["image", "text"]`` (every model served is an image model); a
  list without ``"image"``, or with ``"audio"``, is a 400 naming ``modalities``.
- **n.** One upstream generation per image; ``n`` choices, choice ``k`` holding image ``k`` (the
  openai SDK's ``n`` semantics), each in ``message.images``. Usage sums every image's usage.
- **Image output.** Data URLs by default; ``"image_output": "url"`` in the body (imagegate
  extension) or the ``X-Imagegate-Image-Output: url`` header answers signed gateway URLs instead.
- **Blocked prompts.** When the upstream's safety system refuses, the answer is a 200 whose
  choices have ``finish_reason: "content_filter"``, the reason in ``message.content`` and no
  images, which is what chat clients expect. When some images of ``n`` failed for other reasons
  while others were delivered, those choices carry the error in ``content`` with ``finish_reason:
  "stop"``. When none was delivered and nothing was blocked, the job's error is answered as an
  OpenAI error object with its status.
- **model** in the answer is the model that served the image; in a stream, whose first chunk
  leaves before any upstream is called, every chunk names the model the request resolved to.
- **Streaming.** The role chunk(s) at once, ``: keep-alive`` comments every few seconds while the
  image is made, each choice's images (whole) and text, each choice's finish chunk, then always a
  usage chunk (``choices: []``), then ``data: [DONE]``. An error after the stream began is a
  ``data: {"error": {...}}`` event, then ``[DONE]``.
- ``Prefer: respond-async`` answers ``202`` with the job, as on every route.
- ``max_tokens``, ``max_completion_tokens``, ``temperature``, ``top_p``, ``user``, ``seed``,
  ``stream_options`` and ``image_url.detail`` are accepted and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.openai_chat import translate
from api.dialects.openai_chat.schemas import ChatCompletion, ChatCompletionRequest
from api.flow import JobResult, accepted, finished, load_result, result_headers, submit_job, ticks
from api.inputs import from_url
from api.results import delivered_images, prefers_async
from api.state import AppState
from core.errors import ContentPolicyError, GatewayError, InvalidRequestError
from core.generation import DeliveredImage, Dialect
from core.jobs import ImageStatus

log = logging.getLogger(__name__)
router = APIRouter(tags=["OpenAI Chat Completions"])

KEEP_ALIVE_S = 5.0


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": ChatCompletionRequest.model_json_schema()}}, "required": True}},
)
async def create_chat_completion(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), ChatCompletionRequest)
    refs = translate.image_inputs(wire)
    pending = [await from_url(ref.url, param=ref.param, settings=state.settings) for ref in refs]
    generation = translate.to_generation(wire, inputs=[p.as_input() for p in pending])
    try:
        job_id = await submit_job(state, key=key, generation=generation, dialect=Dialect.OPENAI_CHAT,
                                  inputs=pending)
    except InvalidRequestError as error:
        error.param = translate.wire_param(error.param)
        raise

    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    as_url = translate.wants_urls(wire, request.headers.get("x-imagegate-image-output"))
    if wire.stream:
        start = await load_result(state, job_id)
        return StreamingResponse(
            _stream(state, start, as_url=as_url), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-imagegate-job-id": job_id})

    try:
        result = await finished(state, job_id)
    except ContentPolicyError:
        result = await load_result(state, job_id)  # a block is an answer in chat (content_filter)
    images, failures = await _outcome(state, result, as_url=as_url)
    served = next((i.model for i in result.images if i.model and i.status == ImageStatus.SUCCEEDED), None)
    body = translate.to_wire(id=translate.completion_id(job_id), created=int(result.job.created_at.timestamp()),
                             model=served or result.job.model, images=images, failures=failures)
    return Response(body.model_dump_json(), media_type="application/json", headers=result_headers(result))


async def _outcome(state: AppState, result: JobResult, *, as_url: bool
                   ) -> tuple[list[DeliveredImage], list[translate.ImageFailure]]:
    """The delivered images and the failed ones; raises the job's error when none was delivered
    and the safety system blocked none (a block is an answer in chat, not an error)."""
    error = result.failure()
    if error is not None and not isinstance(error, ContentPolicyError):
        raise error
    images = await delivered_images(state, result.images, as_b64=not as_url)
    delivered = {i.id for i in images}
    failures = [translate.ImageFailure(index=i.index, code=i.error_code, message=i.error_message)
                for i in result.images if i.id not in delivered]
    return images, failures


async def _stream(state: AppState, start: JobResult, *, as_url: bool) -> AsyncIterator[bytes]:
    job = start.job
    cid, created = translate.completion_id(job.id), int(job.created_at.timestamp())
    yield translate.role_chunks(id=cid, created=created, model=job.model, n=job.n)
    try:
        async for _ in ticks(state, job.id, every_s=KEEP_ALIVE_S):
            yield translate.KEEP_ALIVE
        result = await load_result(state, job.id)
        images, failures = await _outcome(state, result, as_url=as_url)
        yield translate.result_chunks(id=cid, created=created, model=job.model, images=images, failures=failures)
    except GatewayError as error:
        yield translate.error_chunk(error)
    except Exception:
        log.exception("chat completion stream of job %s failed", job.id)
        yield translate.error_chunk(GatewayError("The server had an error while processing your request.",
                                                 job_id=job.id))
