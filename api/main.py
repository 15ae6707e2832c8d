"""The FastAPI application: built by :func:`create_app`, resources made in its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import KeyCache
from api.body import BodySizeLimit
from api.cors import add_cors
from api.dashboard import router as dashboard_router
from api.dialects import DialectPackage, anthropic_messages, gemini, openai_chat, openai_images, simple
from api.enqueue import Enqueuer
from api.errors import UnexpectedErrors, install_error_handlers
from api.observe import Observe
from api.ratelimit import limiter_for
from api.routes import admin, files, health, metrics, models, usage
from api.routes.jobs import build_router as build_jobs_router
from api.state import AppState
from api.sweeper import BrokerWatch, Sweeper, release_embedded_orphans, send_periodically
from api.urls import RefuseNulInUrl
from api.wait import JobWaiter, RedisJobEvents, attach_in_process
from core.billing.prices import PriceTable
from core.circuit import CircuitStore
from core.circuit_redis import open_circuits
from core.config import Settings, get_settings
from core.db import async_session_factory, settings_engine
from core.events import InProcessEventBus
from core.memory import keep_freed_memory
from core.queue import RETENTION_TASK
from core.routing import load_for_settings
from core.signing import load_or_create_signing_key
from core.storage import open_store

log = logging.getLogger(__name__)

Hook = Callable[[asyncio.AbstractEventLoop], Any]
"""A start or stop hook: called off the event loop (it may block), with the API's loop."""

DIALECTS: list[DialectPackage] = [
    anthropic_messages.package,  # first: it also claims the Anthropic SDK's GET /v1/models
    openai_images.package,
    openai_chat.package,
    gemini.package,
    simple.package,
]
"""The ingress dialects, each with its routes and error shape (see api/dialects/__init__.py)."""


def create_app(
    settings: Settings,
    *,
    event_bus: InProcessEventBus | None = None,
    worker_alive: Callable[[], bool] | None = None,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    circuits: CircuitStore | None = None,
    engine: AsyncEngine | None = None,
) -> FastAPI:
    """The API. Embedded mode passes the in-process event bus, the worker's start/stop hooks, its
    circuits and the database engine it shares with the worker (the API disposes it as it stops);
    distributed mode passes nothing and talks to Redis."""
    if event_bus is None and settings.redis_url is None:
        raise ValueError("embedded mode (no IMAGEGATE_REDIS_URL) needs the in-process event bus")
    keep_freed_memory(settings.malloc_keep_mb)  # this process moves megabyte images (core/memory.py)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = engine or settings_engine(settings)
        sessions = async_session_factory(database)
        enqueuer = Enqueuer(settings)
        waiter = JobWaiter()
        redis_client = None
        if settings.redis_url:
            # a blocking pool: past its size a call waits for a connection instead of failing
            pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=512, timeout=10)
            redis_client = aioredis.Redis(connection_pool=pool)
        catalogue = load_for_settings(settings)
        prices = PriceTable.load(settings.prices_file)
        unpriced = prices.missing([m.id for m in catalogue.all_models if catalogue.routes(m)])
        if unpriced:
            raise RuntimeError("no price for the offered models " + ", ".join(unpriced)
                               + " (add them to IMAGEGATE_PRICES_FILE)")
        state = AppState(
            settings=settings,
            prices=prices,
            limiter=limiter_for(redis_client),
            engine=database,
            sessions=sessions,
            catalogue=catalogue,
            store=open_store(settings),
            enqueuer=enqueuer,
            waiter=waiter,
            signing_key=load_or_create_signing_key(
                settings.url_signing_key.get_secret_value() if settings.url_signing_key else None,
                settings.data_dir,
            ),
            redis=redis_client,
            worker_alive=worker_alive,
            keys=KeyCache(ttl_s=settings.auth_cache_s),
            event_bus=event_bus,
            circuits=circuits or open_circuits(settings, redis_client),
        )
        app.state.imagegate = state

        events: RedisJobEvents | None = None
        detach: Callable[[], None] | None = None
        if redis_client is not None:
            events = RedisJobEvents(redis_client, waiter)
            events.start()
        if event_bus is not None:
            detach = attach_in_process(event_bus, waiter)
        for hook in on_startup:
            await asyncio.to_thread(hook, asyncio.get_running_loop())
        if event_bus is not None and settings.redis_url is None:
            await release_embedded_orphans(sessions, enqueuer)
        sweeps = Sweeper(sessions, enqueuer, requeue_after_s=settings.requeue_after_s,
                         max_attempts=settings.image_max_attempts,
                         broker=BrokerWatch(redis_client) if redis_client is not None else None,
                         on_job_changed=waiter.notify)
        sweeper = asyncio.create_task(sweeps.run(interval_s=settings.sweep_interval_s), name="imagegate-sweeper")
        background = [sweeper]
        if event_bus is not None and settings.redis_url is None:
            background.append(asyncio.create_task(
                send_periodically(enqueuer, RETENTION_TASK, interval_s=settings.retention_interval_s),
                name="imagegate-retention"))
        log.info("imagegate API ready (%s mode)", settings.mode)
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if events is not None:
                await events.stop()
            if detach is not None:
                detach()
            for hook in on_shutdown:
                await asyncio.to_thread(hook, asyncio.get_running_loop())
            await enqueuer.aclose()
            if redis_client is not None:
                await redis_client.aclose()
            await database.dispose()

    app = FastAPI(
        title="imagegate",
        summary="Queued image generation behind the OpenAI, Anthropic and Gemini wire formats.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app, DIALECTS, default=openai_images.package.render_error)
    for dialect in DIALECTS:
        app.include_router(dialect.router)
    app.include_router(build_jobs_router("/v1"))
    app.include_router(build_jobs_router(""), include_in_schema=False)
    app.include_router(files.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.include_router(dashboard_router)
    # innermost first: each add_middleware wraps the ones before it
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RefuseNulInUrl)
    app.add_middleware(Observe, dialects={route.path: str(d.dialect) for d in DIALECTS
                                          for route in d.router.routes if hasattr(route, "path")})
    if settings.cors_origins:
        add_cors(app, settings.cors_origins)
    return app


def create_distributed_app() -> FastAPI:
    """Factory for ``uvicorn --factory api.main:create_distributed_app`` (distributed mode)."""
    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit("create_distributed_app needs IMAGEGATE_REDIS_URL; use 'imagegate serve'")
    return create_app(settings)
