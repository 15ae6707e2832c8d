"""``GET /v1beta/models`` and ``GET /v1beta/models/{model}``: the catalogue as Google's ``Model``
resources (https://ai.google.dev/api/models), paged as Google pages them; also ``GET /v1/models``
when a Google client asks (:func:`is_google_client`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from api.dialects.gemini.schemas import GeminiModel, ListModelsResponse
from api.dialects.gemini.translate import ACTIONS, invalid
from core.routing import ModelSpec
from core.text import ascii_int

INPUT_TOKEN_LIMIT = 65536
OUTPUT_TOKEN_LIMIT = 32768
_VERSION = re.compile(r"(\d+(?:\.\d+)?)")


def is_google_client(headers: Mapping[str, str]) -> bool:
    """A Google SDK's request: google-genai and Google's other client libraries send
    ``x-goog-api-client``, and API-key clients ``x-goog-api-key``; nobody else does. An
    ``anthropic-version`` header wins: that caller is the Anthropic SDK."""
    return "anthropic-version" not in headers and ("x-goog-api-client" in headers or "x-goog-api-key" in headers)


def model_resource(spec: ModelSpec) -> GeminiModel:
    head = spec.description.split(":")[0].strip()
    version = _VERSION.search(spec.id)
    return GeminiModel(
        name=f"models/{spec.id}",
        base_model_id=spec.id,
        version=version.group(1) if version else "1.0",
        display_name=head if head and head != spec.description and len(head) <= 60 else spec.id,
        description=spec.description,
        input_token_limit=INPUT_TOKEN_LIMIT,
        output_token_limit=OUTPUT_TOKEN_LIMIT,
        supported_generation_methods=list(ACTIONS),
    )


def list_models(specs: list[ModelSpec], *, page_size: int | None, page_token: str | None) -> ListModelsResponse:
    """A page of the catalogue; ``pageSize`` defaults to 50 and is capped at 1000 (as Google), the
    page token is the offset of the next page."""
    size = 50 if not page_size or page_size < 1 else min(page_size, 1000)
    start = 0
    if page_token:
        offset = ascii_int(page_token)
        if offset is None or offset > len(specs):
            raise invalid("pageToken", "not a token this API returned.")
        start = offset
    end = start + size
    return ListModelsResponse(
        models=[model_resource(s) for s in specs[start:end]],
        next_page_token=str(end) if end < len(specs) else "",
    )
