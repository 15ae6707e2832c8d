"""Every endpoint and every dependency of the API is a coroutine: FastAPI runs a plain ``def``
endpoint or dependency on its thread pool, a hand-off to a thread and back on every request."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.main import create_app
from core.config import Settings
from core.events import InProcessEventBus


def _sync_calls(dependant: Dependant, path: str) -> list[str]:
    found = []
    call = dependant.call
    if call is not None and not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)):
        found.append(f"{path}: {getattr(call, '__qualname__', call)}")
    for sub in dependant.dependencies:
        found += _sync_calls(sub, path)
    return found


def _api_routes(routes: Sequence[BaseRoute]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (included := getattr(route, "original_router", None)) is not None:  # an included router
            found += _api_routes(included.routes)
    return found


def test_no_endpoint_or_dependency_runs_on_the_thread_pool(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, admin_key="admin-secret")
    app = create_app(settings, event_bus=InProcessEventBus())
    routes = _api_routes(app.routes)
    assert len(routes) > 20
    assert [s for r in routes for s in _sync_calls(r.dependant, r.path)] == []
