"""FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import authenticate
from api.state import AppState
from core.models import ApiKey


async def get_state(request: Request) -> AppState:
    # a coroutine: FastAPI runs a plain ``def`` dependency on its thread pool, a hop per request
    state: AppState = request.app.state.imagegate
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_api_key(request: Request, state: StateDep) -> ApiKey:
    return await authenticate(request, state.reads, state.keys)  # a miss is one read, no transaction


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]

__all__ = ["ApiKeyDep", "StateDep"]
