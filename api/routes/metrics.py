"""``GET /metrics``: Prometheus metrics (``IMAGEGATE_METRICS``: ``admin``, ``open`` or ``off``).

The counters and histograms are the processes' own (``core/metrics.py``: summed over every
process sharing ``PROMETHEUS_MULTIPROC_DIR``); the queue depth and the circuits are read when
scraped, from the database and the circuit store, so that any API process answers the same.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.deps import StateDep
from api.routes.admin import check_admin
from api.state import AppState
from core import metrics
from core.circuit import STATE_VALUES, RouteView
from core.errors import NotFoundError
from core.jobs import ImageStatus
from core.repo import health as health_repo

log = logging.getLogger(__name__)

router = APIRouter(tags=["Metrics"])


class _Scraped(Collector):
    """Values read at scrape time, as gauge families."""

    def __init__(self, depth: dict[str, int] | None, circuits: list[RouteView] | None) -> None:
        self._depth, self._circuits = depth, circuits

    def collect(self):  # type: ignore[no-untyped-def]
        if self._depth is not None:
            depth = GaugeMetricFamily(
                "imagegate_queue_depth", "Images queued or running, by status.", labels=["status"]
            )
            for status in (ImageStatus.QUEUED, ImageStatus.RUNNING):
                depth.add_metric([status.value], self._depth.get(status.value, 0))
            yield depth
        if self._circuits is not None:
            state = GaugeMetricFamily(
                "imagegate_circuit_state",
                "Upstream route circuits not closed and clean: 0 closed, 1 half-open, 2 open.",
                labels=["route"],
            )
            failures = GaugeMetricFamily(
                "imagegate_circuit_failures", "Consecutive route failures counted by each circuit.", labels=["route"]
            )
            for view in self._circuits:
                state.add_metric([view.route], STATE_VALUES[view.state])
                failures.add_metric([view.route], view.failures)
            yield state
            yield failures


async def _scrape(state: AppState) -> _Scraped:
    depth: dict[str, int] | None = None
    circuits: list[RouteView] | None = None
    try:
        async with asyncio.timeout(3):
            async with state.engine.connect() as conn:
                rows = (await conn.execute(health_repo.queue_depth())).all()
            depth = {str(status): int(count) for status, count in rows}
    except Exception as exc:
        log.warning("metrics: the queue depth could not be read: %s", type(exc).__name__)
    try:
        async with asyncio.timeout(3):
            circuits = await state.circuits.views()
    except Exception as exc:
        log.warning("metrics: the circuits could not be read: %s", type(exc).__name__)
    return _Scraped(depth, circuits)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request, state: StateDep) -> Response:
    access = state.settings.metrics
    if access == "off":
        raise NotFoundError(f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    if access == "admin":
        check_admin(request, state)
    scraped = await _scrape(state)
    registry = metrics.registry()
    # the processes' metrics, then the scraped families (distinct names: one valid exposition)
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body + generate_latest(scraped), media_type=CONTENT_TYPE_LATEST)
