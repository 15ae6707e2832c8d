"""The operator API behind ``IMAGEGATE_ADMIN_KEY``: keys with budgets and limits, and usage.

``/admin/*`` answers 404 while no admin key is configured, and 401 to any other bearer.
"""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from api.body import parse_json
from api.deps import StateDep
from api.routes.usage import run_report
from core.billing.pricing import usd
from core.errors import AuthenticationError, ConflictError, NotFoundError
from core.keys import extract_key, generate_key
from core.models import ApiKey
from core.models.types import utcnow


def require_admin(request: Request, state: StateDep) -> None:
    configured = state.settings.admin_key
    if configured is None:
        raise NotFoundError(f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    given = extract_key(authorization=request.headers.get("authorization"),
                        x_api_key=request.headers.get("x-api-key"), x_goog_api_key=None, query_key=None)
    if given is None or not hmac.compare_digest(given.encode(), configured.get_secret_value().encode()):
        raise AuthenticationError("This endpoint needs the admin key.", code="invalid_admin_key")


router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(require_admin)])


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_usd: Decimal | None = Field(None, ge=0)
    monthly_budget_usd: Decimal | None = Field(None, ge=0)
    rpm: int | None = Field(None, ge=1)
    images_per_minute: int | None = Field(None, ge=1)
    models: list[str] | None = None
    markup: Decimal | None = Field(None, gt=0, le=100)


class KeyCreate(KeyLimits):
    name: str = Field(min_length=1, max_length=200)


def micros(value: Decimal | None) -> int | None:
    return None if value is None else int((value * 1_000_000).to_integral_value())


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id, "object": "api_key", "name": key.name, "prefix": key.prefix,
        "created_at": int(key.created_at.timestamp()),
        "revoked_at": int(key.revoked_at.timestamp()) if key.revoked_at else None,
        "budget_usd": usd(key.budget_micros) if key.budget_micros is not None else None,
        "monthly_budget_usd": usd(key.monthly_budget_micros) if key.monthly_budget_micros is not None else None,
        "rpm": key.rpm, "images_per_minute": key.images_per_minute, "models": key.models_allowed,
        "markup": key.markup, "committed_usd": usd(key.committed_micros),
    }


def apply_limits(key: ApiKey, limits: KeyLimits, state: Any) -> None:
    fields = limits.model_fields_set
    if "models" in fields and limits.models is not None:
        for model in limits.models:
            state.catalogue.resolve(model)  # 404 naming an unknown model
        key.models_allowed = [state.catalogue.resolve(m).spec.id for m in limits.models]
    elif "models" in fields:
        key.models_allowed = None
    if "budget_usd" in fields:
        key.budget_micros = micros(limits.budget_usd)
    if "monthly_budget_usd" in fields:
        key.monthly_budget_micros = micros(limits.monthly_budget_usd)
    if "rpm" in fields:
        key.rpm = limits.rpm
    if "images_per_minute" in fields:
        key.images_per_minute = limits.images_per_minute
    if "markup" in fields:
        key.markup = str(limits.markup) if limits.markup is not None else None


async def _find(session: Any, ident: str) -> ApiKey:
    key = await session.scalar(select(ApiKey).where(or_(ApiKey.id == ident, ApiKey.name == ident)))
    if key is None:
        raise NotFoundError(f"No API key '{ident}'.", param="key", code="key_not_found")
    return key


@router.post("/keys", status_code=201)
async def create_key(request: Request, state: StateDep) -> JSONResponse:
    body = parse_json(await request.body(), KeyCreate)
    new = generate_key()
    key = ApiKey(id=new.id, name=body.name, prefix=new.prefix, secret_hash=new.secret_hash, committed_micros=0)
    apply_limits(key, body, state)
    async with state.sessions() as session:
        session.add(key)
        try:
            await session.commit()
        except IntegrityError:
            raise ConflictError(f"A key named '{body.name}' exists already.", param="name") from None
    return JSONResponse({**key_view(key), "secret": new.secret}, status_code=201)


@router.get("/keys")
async def list_keys(state: StateDep) -> JSONResponse:
    async with state.sessions() as session:
        keys = list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
    return JSONResponse({"object": "list", "data": [key_view(k) for k in keys]})


@router.get("/keys/{ident}")
async def get_key(ident: str, state: StateDep) -> JSONResponse:
    async with state.sessions() as session:
        return JSONResponse(key_view(await _find(session, ident)))


@router.patch("/keys/{ident}")
async def update_key(ident: str, request: Request, state: StateDep) -> JSONResponse:
    body = parse_json(await request.body(), KeyLimits)
    async with state.sessions() as session:
        key = await _find(session, ident)
        apply_limits(key, body, state)
        await session.commit()
        return JSONResponse(key_view(key))


@router.post("/keys/{ident}/revoke")
@router.delete("/keys/{ident}")
async def revoke_key(ident: str, state: StateDep) -> JSONResponse:
    async with state.sessions() as session:
        key = await _find(session, ident)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        await session.commit()
        return JSONResponse(key_view(key))


@router.get("/usage")
async def usage(
    state: StateDep,
    key: Annotated[str | None, Query(description="a key's id or name")] = None,
    since: str | None = None, until: str | None = None,
    group_by: Annotated[str | None, Query(description="comma-separated: key, model, size, quality, day")] = None,
    format: str = "json",
) -> Response:
    key_id = None
    if key is not None:
        async with state.sessions() as session:
            key_id = (await _find(session, key)).id
    return await run_report(state, key_id=key_id, since=since, until=until, group_by=group_by,
                            default=["key", "model", "size", "quality", "day"], fmt=format)

