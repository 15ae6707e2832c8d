"""``GET /health``: 200 when the database and the broker answer, 503 otherwise; with the upstream
routes whose circuit is not closed and clean (an open circuit is a degraded upstream, not an
unhealthy gateway: it does not make /health 503)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StateDep
from core.repo import health as health_repo

router = APIRouter(tags=["Health"])


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            async with state.engine.connect() as conn:
                await conn.execute(health_repo.ping())
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"

    if state.redis is not None:
        try:
            async with asyncio.timeout(3):
                await state.redis.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
    elif state.worker_alive is not None:
        checks["broker"] = "ok" if state.worker_alive() else "embedded worker stopped"
    else:
        checks["broker"] = "no worker attached"

    circuits: dict[str, dict[str, object]] | str
    try:
        async with asyncio.timeout(3):
            circuits = {v.route: {"state": v.state.value, "failures": v.failures, "retry_in_s": v.retry_in_s}
                        for v in await state.circuits.views()}
    except Exception as exc:
        circuits = f"unreadable: {type(exc).__name__}"

    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "mode": state.settings.mode, "checks": checks,
         "circuits": circuits},
        status_code=200 if healthy else 503,
    )
