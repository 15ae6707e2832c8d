"""``GET /v1/models``: the catalogue in the OpenAI list shape, capabilities as extra fields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ApiKeyDep, StateDep
from core.routing import ModelSpec

router = APIRouter(tags=["Models"])


def model_object(spec: ModelSpec) -> dict[str, Any]:
    caps = spec.capabilities
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
        "description": spec.description,
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


@router.get("/v1/models")
async def list_models(key: ApiKeyDep, state: StateDep) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [model_object(m) for m in state.catalogue.models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, key: ApiKeyDep, state: StateDep) -> JSONResponse:
    return JSONResponse(model_object(state.catalogue.resolve(model_id).spec))
