"""``GET /v1/models``: the catalogue in the OpenAI list shape, capabilities as extra fields; in the
Anthropic shape (https://docs.anthropic.com/en/api/models-list, paged) when the request carries an
``anthropic-version`` header; in Google's (https://ai.google.dev/api/models, paged) when a Google
client asks (``x-goog-api-client`` or ``x-goog-api-key``: google-genai's ``models.list()`` and
``models.get()`` send ``GET /v1/models``).

Every model says it makes images where model pickers look: ``output_modalities`` (and
OpenRouter's ``architecture``), ``capabilities.image_generation``; and every id is one that
clients filtering for image models keep (``…-image``, ``gpt-image-…``, ``imagen-…``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ApiKeyDep, StateDep
from api.dialects.anthropic_messages import translate as anthropic
from api.dialects.gemini import models as gemini
from api.dialects.gemini.translate import dump
from core.errors import InvalidRequestError
from core.routing import ModelSpec
from core.text import ascii_int

router = APIRouter(tags=["Models"])


def model_object(spec: ModelSpec) -> dict[str, Any]:
    caps = spec.capabilities
    inputs = ["text", "image"] if caps.edit else ["text"]
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
        "description": spec.description,
        "input_modalities": inputs,
        "output_modalities": ["image"],
        "architecture": {"input_modalities": inputs, "output_modalities": ["image", "text"]},
        "aliases": spec.aliases,
        "retired_aliases": [{"id": a.id, "retired": a.retired} for a in spec.alias if a.retired],
        "fallbacks": spec.fallbacks,
        "capabilities": {
            "image_generation": True,
            "edit": caps.edit,
            "mask": caps.mask,
            "max_input_images": caps.max_input_images,
            "max_n": caps.max_n,
            "images_per_upstream_call": caps.n_per_call,
            "aspect_ratios": caps.aspect_ratios,
            "image_sizes": caps.image_sizes,
            "sizes": caps.sizes if caps.planner == "size_list" else None,
            "size_range": [caps.size_min, caps.size_max] if caps.planner == "free_size" else None,
            "qualities": list(caps.qualities) or None,
            "output_formats": caps.output_formats,
            "transparent_background": caps.transparent_background,
        },
    }


def _is_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    limit = ascii_int(raw)
    if limit is None or not 1 <= limit <= 1000:
        raise InvalidRequestError(f"Invalid value for 'limit': {raw!r}; it must be an integer from 1 to 1000.",
                                  param="limit")
    return limit


def _page_size(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequestError(f"Invalid value for 'pageSize': {raw!r}; it must be an integer.", param="pageSize")
    return int(raw)


@router.get("/v1/models")
async def list_models(request: Request, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    if gemini.is_google_client(request.headers):
        query = request.query_params
        return JSONResponse(dump(gemini.list_models(state.catalogue.models, page_size=_page_size(query.get("pageSize")),
                                                    page_token=query.get("pageToken"))))
    if _is_anthropic(request):
        query = request.query_params
        page = anthropic.models_page(state.catalogue.models, limit=_limit(query.get("limit")),
                                     after_id=query.get("after_id"), before_id=query.get("before_id"),
                                     lifecycle=query.getlist("lifecycle"))
        return JSONResponse(page.model_dump())
    return JSONResponse({"object": "list", "data": [model_object(m) for m in state.catalogue.models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    spec = state.catalogue.resolve(model_id).spec
    if gemini.is_google_client(request.headers):
        return JSONResponse(dump(gemini.model_resource(spec)))
    if _is_anthropic(request):
        return JSONResponse(anthropic.model_info(spec).model_dump())
    return JSONResponse(model_object(spec))
