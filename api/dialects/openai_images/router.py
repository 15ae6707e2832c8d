"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` (JSON and multipart): parse the
body, translate it, and hand it to the shared flow with this dialect's renderer, or, for
``stream: true``, its streamer (:mod:`api.dialects.openai_images.stream`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from api.body import parse_form, parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.openai_images import translate
from api.dialects.openai_images.schemas import ImageEditRequest, ImageGenerateRequest, ImagesResponse
from api.dialects.openai_images.stream import streamer
from api.flow import JobResult, Render, respond
from api.inputs import ImageRef
from api.results import prefers_async
from api.state import AppState
from api.submit import Submission
from core.errors import InvalidRequestError
from core.generation import Dialect, GenerationRequest
from core.models import ApiKey

router = APIRouter(tags=["OpenAI Images"])

_IMAGE_PARTS = ("image", "image[]", "file")
_JSON_SCHEMA = {"requestBody": {"content": {"application/json": {
    "schema": ImageGenerateRequest.model_json_schema()}}, "required": True}}
MAX_EDIT_IMAGES = 16


@router.post("/v1/images/generations", response_model=ImagesResponse, openapi_extra=_JSON_SCHEMA)
async def create_image(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), ImageGenerateRequest)
    return await _respond(request, state, key, wire, Submission(Dialect.OPENAI_IMAGES, _generation(request, wire)))


@router.post("/v1/images/edits", response_model=ImagesResponse)
async def edit_image(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        wire = parse_json(await request.body(), ImageEditRequest)
        images, mask = translate.json_image_refs(wire)
    elif content_type == "multipart/form-data":
        wire, images, mask = await _multipart(request, max_files=MAX_EDIT_IMAGES * 2)
    else:
        raise InvalidRequestError(
            "Send the edit as multipart/form-data (files in 'image' or 'image[]') or as application/json "
            "(images[].image_url).", code="invalid_content_type")
    if not images:
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image",
                                  code="missing_required_parameter")
    if len(images) > MAX_EDIT_IMAGES:
        raise InvalidRequestError(f"Invalid value for 'image': at most {MAX_EDIT_IMAGES} images.", param="image")
    submission = Submission(Dialect.OPENAI_IMAGES, _generation(request, wire), images=images, mask=mask)
    return await _respond(request, state, key, wire, submission)


def _generation(request: Request, wire: ImageGenerateRequest | ImageEditRequest) -> GenerationRequest:
    # an asynchronous submission is watched by nobody: its upstream draws no drafts
    return translate.to_generation(wire, partials=not prefers_async(request.headers.get("prefer")))


async def _respond(request: Request, state: AppState, key: ApiKey, wire: ImageGenerateRequest | ImageEditRequest,
                   submission: Submission) -> Response:
    render = _renderer(as_b64=wire.response_format != "url")
    if not wire.stream:
        return await respond(request, state, key=key, submission=submission, render=render)
    stream = streamer(edit=isinstance(wire, ImageEditRequest), partials=bool(submission.generation.partial_images))
    return await respond(request, state, key=key, submission=submission, render=render, stream=stream)


async def _multipart(request: Request, *, max_files: int) -> tuple[ImageEditRequest, list[ImageRef], ImageRef | None]:
    """The form's text fields as an ImageEditRequest, its files as image references."""
    form = await request.form(max_files=max_files, max_fields=100)
    fields: dict[str, str] = {}
    images: list[ImageRef] = []
    mask: ImageRef | None = None
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name in _IMAGE_PARTS or name == "mask":
                    ref = ImageRef(param=name, raw=await value.read(), mime_type=value.content_type)
                    if name == "mask":
                        mask = ref
                    else:
                        images.append(ref)
            elif "[" not in name:  # bracketed nested fields (svg[model]) are not used by imagegate
                fields[name] = value
    finally:
        await form.close()
    return parse_form(fields, ImageEditRequest), images, mask


def _renderer(*, as_b64: bool) -> Render:
    async def render(result: JobResult) -> Response:
        failure = result.failure()
        if failure is not None:
            raise failure
        body = translate.to_wire(created=int(result.job.created_at.timestamp()), applied=result.applied,
                                 images=await result.delivered_images(as_b64=as_b64))
        return Response(body.model_dump_json(exclude_none=True), media_type="application/json")
    return render
