"""Images of this gateway sent back to it: a conversation's earlier answer holds the gateway's own
``/v1/files/{id}`` URL (with ``IMAGEGATE_ANTHROPIC_IMAGE_URLS``, or ``response_format: url``).
Such a URL names a stored image: it is read from the image store, as ``GET /v1/files/{id}``
would serve it (a valid signature, or an image of the calling key), rather than fetched over the
network, where the SSRF-safe fetcher refuses the gateway's own, often private, address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread

from api.inputs import ImageRef
from api.state import AppState
from core import signing
from core.errors import InvalidRequestError
from core.jobs import ImageStatus
from core.models import ApiKey
from core.repo import jobs


def _file_id(state: AppState, url: str) -> tuple[str, dict[str, list[str]]] | None:
    prefix = state.settings.resolved_public_url + "/v1/files/"
    if not url.startswith(prefix):
        return None
    parts = urlsplit(url)
    file_id = parts.path.rsplit("/", 1)[-1]
    return (file_id, parse_qs(parts.query)) if file_id else None


async def read_own_files(state: AppState, key: ApiKey, refs: Sequence[ImageRef]) -> list[ImageRef]:
    """``refs`` with every gateway file URL replaced by the stored bytes it names."""
    out = list(refs)
    for i, ref in enumerate(refs):
        found = _file_id(state, (ref.url or "").strip())
        if found is None:
            continue
        file_id, query = found
        expires, signature = (query.get(name, [""])[0] for name in ("expires", "signature"))
        signed = signing.verify(state.signing_key, file_id, expires, signature)
        async with state.reads() as session:
            image = await session.scalar(jobs.image_by_id(file_id))
            owner = None if image is None or signed else await session.scalar(jobs.owned(image.job_id, key.id))
        if image is None or image.status != ImageStatus.SUCCEEDED or not image.object_key or not (signed or owner):
            raise InvalidRequestError(f"Invalid image in '{ref.param}': no image of this gateway that this key may "
                                      "read has this URL.", param=ref.param, code="invalid_image_url")
        data = await anyio.to_thread.run_sync(state.store.get, image.object_key)
        out[i] = replace(ref, url=None, raw=data, mime_type=image.mime_type)
    return out
