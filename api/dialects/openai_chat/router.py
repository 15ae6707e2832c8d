"""``POST /v1/chat/completions`` for image models: parse, translate, submit,
then answer 202, wait and render, or stream while waiting.

Decisions this dialect makes:

- **Conversation.** The prompt is the text of the last user message; the user and assistant
  messages before it are the conversation's earlier turns, texts and images in order (an
  assistant's ``message.images`` and markdown images are its images), so that "now make it blue"
  edits the picture before it (:mod:`api.conversation`). ``system``/``developer`` messages become
  the canonical ``system`` (joined), except for a request with ``tools`` (an agent's);
  ``tool`` messages are ignored. No ``model`` means the default model (CG-Image's clients send
  none).
- **Input images.** ``image_url`` parts of user and assistant messages are images of their
  turns: data URLs are decoded strictly, http(s) URLs fetched by the SSRF-safe fetcher. An
  ``image_url`` in a system message is a 400 rather than silently dropped.
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

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.openai_chat import translate
from api.dialects.openai_chat.schemas import ChatCompletion, ChatCompletionRequest
from api.flow import JobResult, JobStream, Render, Stream, respond
from api.submit import Submission
from core.errors import GatewayError
from core.generation import DeliveredImage, Dialect

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
    conversation = translate.read_conversation(wire, agent_system_prompt=state.settings.agent_system_prompt)
    submission = Submission(Dialect.OPENAI_CHAT, translate.to_generation(wire, conversation),
                            images=conversation.images, wire_params=translate.WIRE_PARAMS)
    as_url = translate.wants_urls(wire, request.headers.get("x-imagegate-image-output"))
    if wire.stream:
        return await respond(request, state, key=key, submission=submission, render=_render(as_url=as_url),
                             stream=_streamer(as_url=as_url), splice_stream=True)
    return await respond(request, state, key=key, submission=submission, render=_render(as_url=as_url))


async def _outcome(result: JobResult, *, as_url: bool) -> tuple[list[DeliveredImage], list[translate.ImageFailure]]:
    """The delivered images and the failed ones; raises the job's error when none was delivered
    and the safety system blocked none (a block is an answer in chat, not an error)."""
    error = result.failure(blocked_is_an_answer=True)
    if error is not None:
        raise error
    images = await result.delivered_images(as_b64=not as_url)
    delivered = {i.id for i in images}
    failures = [translate.ImageFailure(index=i.index, code=i.error_code, message=i.error_message)
                for i in result.images if i.id not in delivered]
    return images, failures


def _render(*, as_url: bool) -> Render:
    async def render(result: JobResult) -> Response:
        images, failures = await _outcome(result, as_url=as_url)
        body = translate.to_wire(id=translate.completion_id(result.job.id),
                                 created=int(result.job.created_at.timestamp()),
                                 model=result.served_model(otherwise=result.job.model), images=images,
                                 failures=failures)
        return Response(body.model_dump_json(), media_type="application/json")
    return render


def _streamer(*, as_url: bool) -> Stream:
    async def stream(job: JobStream) -> AsyncIterator[bytes]:
        cid, created = translate.completion_id(job.job.id), int(job.job.created_at.timestamp())
        yield translate.role_chunks(id=cid, created=created, model=job.job.model, n=job.job.n)
        try:
            async for _ in job.ticks(every_s=KEEP_ALIVE_S):
                yield translate.KEEP_ALIVE
            images, failures = await _outcome(await job.result(), as_url=as_url)
            yield translate.result_chunks(id=cid, created=created, model=job.job.model, images=images,
                                          failures=failures)
        except GatewayError as error:
            yield translate.error_chunk(error)
        except Exception:
            log.exception("chat completion stream of job %s failed", job.job.id)
            yield translate.error_chunk(GatewayError("The server had an error while processing your request.",
                                                     job_id=job.job.id))
    return stream
