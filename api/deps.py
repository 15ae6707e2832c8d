"""FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import authenticate
from api.state import AppState
from core.models import ApiKey


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.imagegate
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_api_key(request: Request, state: StateDep) -> ApiKey:
    return await authenticate(request, state.sessions)


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]

__all__: list[Any] = ["ApiKeyDep", "SessionDep", "StateDep"]
