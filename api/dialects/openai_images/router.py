"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` (JSON and multipart): parse,
translate, submit, wait, render. Nothing else."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.body import parse_json, validation_to_error
from api.deps import ApiKeyDep, StateDep
from api.dialects.openai_images import translate
from api.dialects.openai_images.schemas import ImageEditRequest, ImageGenerateRequest, ImagesResponse
from api.flow import JobResult, accepted, finished, submit_job
from api.inputs import PendingImage, from_bytes, from_url
from api.results import delivered_images, prefers_async
from api.state import AppState
from core.errors import InvalidRequestError
from core.generation import Dialect

router = APIRouter(tags=["OpenAI Images"])

_IMAGE_PARTS = ("image", "image[]", "file")
_JSON_SCHEMA = {"requestBody": {"content": {"application/json": {
    "schema": ImageGenerateRequest.model_json_schema()}}, "required": True}}


@router.post("/v1/images/generations", response_model=ImagesResponse, openapi_extra=_JSON_SCHEMA)
async def create_image(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), ImageGenerateRequest)
    job_id = await submit_job(state, key=key, generation=translate.to_generation(wire), dialect=Dialect.OPENAI_IMAGES)
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    return await _render(state, await finished(state, job_id), as_b64=wire.response_format != "url")


@router.post("/v1/images/edits", response_model=ImagesResponse)
async def edit_image(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        wire = parse_json(await request.body(), ImageEditRequest)
        images, mask = await _json_images(wire, state)
    elif content_type == "multipart/form-data":
        wire, images, mask = await _multipart(request, state)
    else:
        raise InvalidRequestError(
            "Send the edit as multipart/form-data (files in 'image' or 'image[]') or as application/json "
            "(images[].image_url).", code="invalid_content_type")
    if not images:
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image",
                                  code="missing_required_parameter")
    if mask is not None and (mask.info.width, mask.info.height) != (images[0].info.width, images[0].info.height):
        raise InvalidRequestError(
            f"Invalid value for 'mask': it is {mask.info.width}x{mask.info.height}, the first image is "
            f"{images[0].info.width}x{images[0].info.height}; they must match.", param="mask")
    generation = translate.to_generation(wire, inputs=[i.as_input() for i in images],
                                         mask=mask.as_input() if mask else None)
    pending = images + ([mask] if mask else [])
    job_id = await submit_job(state, key=key, generation=generation, dialect=Dialect.OPENAI_IMAGES, inputs=pending)
    if prefers_async(request.headers.get("prefer")):
        return await accepted(state, job_id)
    return await _render(state, await finished(state, job_id), as_b64=wire.response_format != "url")


async def _json_images(wire: ImageEditRequest, state: AppState) -> tuple[list[PendingImage], PendingImage | None]:
    images = [await _json_image(ref.image_url, ref.file_id, f"images[{i}]", state) for i, ref in enumerate(wire.images)]
    mask = await _json_image(wire.mask.image_url, wire.mask.file_id, "mask", state) if wire.mask else None
    return images, mask


async def _json_image(url: str | None, file_id: str | None, param: str, state: AppState) -> PendingImage:
    if file_id is not None or not url:
        raise InvalidRequestError(
            f"Invalid value for '{param}': send an image_url (https or data URL); file_id is not supported here.",
            param=param, code="invalid_value")
    return await from_url(url, param=param, settings=state.settings)


async def _multipart(
    request: Request, state: AppState
) -> tuple[ImageEditRequest, list[PendingImage], PendingImage | None]:
    max_bytes = int(state.settings.fetch_max_mb * 1024 * 1024)
    form = await request.form(max_files=32, max_fields=100)
    fields: dict[str, str] = {}
    images: list[PendingImage] = []
    mask: PendingImage | None = None
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name in _IMAGE_PARTS or name == "mask":
                    pending = from_bytes(await value.read(), param=name, declared_mime=value.content_type,
                                         max_bytes=max_bytes)
                    if name == "mask":
                        mask = pending
                    else:
                        images.append(pending)
            elif "[" not in name:  # bracketed nested fields (svg[model]) are not used by imagegate
                fields[name] = value
    finally:
        await form.close()
    if len(images) > 16:
        raise InvalidRequestError("Invalid value for 'image': at most 16 images.", param="image")
    try:
        wire = ImageEditRequest.model_validate(fields)
    except ValidationError as exc:
        raise validation_to_error(exc) from None
    return wire, images, mask


async def _render(state: AppState, result: JobResult, *, as_b64: bool) -> Response:
    applied = result.applied
    delivered = await delivered_images(state, result.images, as_b64=as_b64)
    body = translate.to_wire(created=int(result.job.created_at.timestamp()), applied=applied, images=delivered)
    return Response(
        body.model_dump_json(exclude_none=True),
        media_type="application/json",
        headers={  # the job id, cost and serving model are added by RequestContextMiddleware
            "x-imagegate-applied": json.dumps(
                {"model": applied.model, "size": applied.size, "aspect_ratio": applied.aspect_ratio,
                 "image_size": applied.image_size, "output_format": applied.output_format,
                 "quality": applied.quality, "adjusted": applied.adjusted, "ignored": applied.ignored},
                separators=(",", ":")),
        },
    )
