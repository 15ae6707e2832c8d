"""``GET /v1/files/{id}``: a stored image, by signed URL or to the key that made it; ``410 Gone``
for a signed URL of an image that retention has deleted."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from api.auth import authenticate
from api.deps import StateDep
from core import signing
from core.errors import GoneError, NotFoundError
from core.jobs import ImageStatus
from core.repo import jobs

router = APIRouter(tags=["Files"])


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, request: Request, state: StateDep) -> Response:
    not_found = NotFoundError(f"No file found with id '{file_id}'.", param="file_id", code="file_not_found")
    signed = signing.verify(state.signing_key, file_id, request.query_params.get("expires"),
                            request.query_params.get("signature"))
    key = None if signed else await authenticate(request, state.reads, state.keys)
    async with state.reads() as session:
        image = await session.scalar(jobs.image_by_id(file_id))
        if image is None and signed:
            # the gateway signed this URL for an image it had: retention has deleted it since
            raise GoneError(f"The file '{file_id}' expired: retention deleted it.", param="file_id",
                            code="file_expired")
        if image is None or image.status != ImageStatus.SUCCEEDED or not image.object_key:
            raise not_found
        if key is not None:
            owner = await session.scalar(jobs.owned(image.job_id, key.id))
            if owner is None:
                raise not_found
    path = state.store.path_for(image.object_key)
    headers = {"Cache-Control": "private, max-age=3600"}
    if path is not None:
        return FileResponse(path, media_type=image.mime_type, headers=headers)
    if image.bytes is not None:
        headers["Content-Length"] = str(image.bytes)
    try:
        chunks = await state.store.aopen(image.object_key)
    except FileNotFoundError:
        raise not_found from None
    return StreamingResponse(chunks, media_type=image.mime_type, headers=headers)
