"""The operator API behind ``IMAGEGATE_ADMIN_KEY``: keys with budgets and limits, and usage.

``/admin/*`` answers 404 while no admin key is configured, and 401 to any other bearer.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from api.body import parse_json
from api.deps import StateDep
from api.routes.usage import run_report
from api.state import AppState
from core import key_service
from core.errors import AuthenticationError, NotFoundError
from core.key_service import KeyCreate, KeyLimits, WebhookPolicy, key_view
from core.keys import extract_key


def check_admin(request: Request, state: AppState) -> None:
    configured = state.settings.admin_key
    if configured is None:
        raise NotFoundError(f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    given = extract_key(authorization=request.headers.get("authorization"),
                        x_api_key=request.headers.get("x-api-key"), x_goog_api_key=None, query_key=None)
    if given is None or not hmac.compare_digest(given.encode(), configured.get_secret_value().encode()):
        raise AuthenticationError("This endpoint needs the admin key.", code="invalid_admin_key")


async def require_admin(request: Request, state: StateDep) -> None:
    # a coroutine: FastAPI runs a plain ``def`` dependency on its thread pool
    check_admin(request, state)


router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(require_admin)])


@router.post("/keys", status_code=201)
async def create_key(request: Request, state: StateDep) -> JSONResponse:
    spec = parse_json(await request.body(), KeyCreate)
    async with state.sessions() as session:
        key, secret, webhook_secret = await key_service.create_key_with_webhook(
            session, spec, catalogue=state.catalogue, webhooks=WebhookPolicy.from_settings(state.settings))
    body = {**key_view(key), "secret": secret}
    if webhook_secret is not None:
        body["webhook_secret"] = webhook_secret  # shown once, as the key's own secret
    return JSONResponse(body, status_code=201)


@router.get("/keys")
async def list_keys(state: StateDep) -> JSONResponse:
    async with state.sessions() as session:
        found = await key_service.list_keys(session)
    return JSONResponse({"object": "list", "data": [key_view(k) for k in found]})


@router.get("/keys/{ident}")
async def get_key(ident: str, state: StateDep) -> JSONResponse:
    async with state.sessions() as session:
        return JSONResponse(key_view(await key_service.find_key(session, ident)))


@router.patch("/keys/{ident}")
async def update_key(ident: str, request: Request, state: StateDep) -> JSONResponse:
    limits = parse_json(await request.body(), KeyLimits)
    async with state.sessions() as session:
        key, webhook_secret = await key_service.update_key(session, ident, limits, catalogue=state.catalogue,
                                                           webhooks=WebhookPolicy.from_settings(state.settings))
    state.keys.forget(key.id)  # this process sees the change at once; the others within the cache's life
    body = key_view(key)
    if webhook_secret is not None:
        body["webhook_secret"] = webhook_secret  # shown once
    return JSONResponse(body)


@router.post("/keys/{ident}/revoke")
@router.delete("/keys/{ident}")
async def revoke_key(ident: str, state: StateDep) -> JSONResponse:
    async with state.sessions() as session:
        key = await key_service.revoke_key(session, ident)
    state.keys.forget(key.id)
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
            key_id = (await key_service.find_key(session, key)).id
    return await run_report(state, key_id=key_id, since=since, until=until, group_by=group_by,
                            default=["key", "model", "size", "quality", "day"], fmt=format)

