"""What a worker needs to run images, built once at startup and handed to the tasks.

Everything here is used from the worker process's event loop (``worker/pool.py``): an async
database engine, the async Redis publisher, the upstream clients. They are made by :meth:`build`
(no loop is needed to make them), opened by :meth:`WorkerRuntime.open` on that loop as the
worker starts, and closed by :meth:`WorkerRuntime.aclose`, on that loop, once the last image has
ended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import metrics
from core.circuit import CircuitStore
from core.circuit_redis import RedisCircuitStore, open_circuits
from core.config import Settings
from core.db import async_session_factory, is_sqlite, settings_engine
from core.events import InProcessEventBus, JobEvents, RedisEventPublisher
from core.signing import load_or_create_signing_key
from core.storage import ImageStore, open_store
from worker.lease import LeaseKeeper
from worker.providers.registry import ProviderRegistry


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ImageStore
    events: JobEvents
    providers: ProviderRegistry
    leases: LeaseKeeper
    """The heartbeat that keeps the leases of the images this process runs alive."""
    circuits: CircuitStore
    """The upstream routes' circuits: shared in Redis (distributed), or the process's own."""
    url_signing_key: bytes
    """Signs the image URLs of webhook bodies (the API's key: the setting, or the data dir's)."""
    owns_engine: bool = True
    """False when the engine is the API's (embedded mode), which the API disposes."""

    @classmethod
    def build(cls, settings: Settings, *, events: InProcessEventBus | None = None,
              circuits: CircuitStore | None = None, engine: AsyncEngine | None = None) -> WorkerRuntime:
        """Distributed mode publishes on Redis; embedded mode passes the process's event bus (and
        the circuits the API shows, and the API's database engine)."""
        owns_engine = engine is None
        if engine is None:
            # an image holds a connection only around its short transactions, never across an
            # upstream call, so a pool far smaller than the concurrency serves it
            engine = settings_engine(settings)
        publisher: JobEvents
        if events is not None:
            publisher = events
        elif settings.redis_url:
            publisher = RedisEventPublisher(aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5,
                                                                    socket_timeout=10))
        else:
            raise ValueError("embedded mode needs the in-process event bus")
        sessions = async_session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            store=open_store(settings),
            events=publisher,
            providers=ProviderRegistry.from_settings(settings),
            leases=LeaseKeeper(sessions, lease_s=settings.image_lease_s),
            circuits=circuits or open_circuits(settings),
            url_signing_key=load_or_create_signing_key(
                settings.url_signing_key.get_secret_value() if settings.url_signing_key else None,
                settings.data_dir),
            owns_engine=owns_engine,
        )

    @cached_property
    def postgres(self) -> bool:
        return not is_sqlite(self.settings.resolved_database_url)

    async def open(self) -> None:
        """Open the Redis publisher's connection ahead of the first image (the database's:
        :func:`worker.run_job.prepare`)."""
        if isinstance(self.events, RedisEventPublisher):
            await self.events.ping()

    async def aclose(self) -> None:
        """Close what the images used, on the event loop they ran on."""
        metrics.process_exited(os.getpid())
        await self.leases.aclose()
        await self.providers.aclose()
        if isinstance(self.circuits, RedisCircuitStore):
            await self.circuits.aclose()
        if isinstance(self.events, RedisEventPublisher):
            await self.events.aclose()
        if self.owns_engine:
            await self.engine.dispose()
