"""What a worker needs to run images, built once at startup and handed to the tasks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core import metrics
from core.circuit import CircuitStore, SyncCircuits
from core.circuit_redis import open_circuits
from core.config import Settings
from core.db import create_sync_engine, sync_sessionmaker
from core.events import InProcessEventBus, JobEvents, RedisEventPublisher
from core.signing import load_or_create_signing_key
from core.storage import ImageStore, open_store
from worker.lease import LeaseKeeper
from worker.providers.registry import ProviderRegistry


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ImageStore
    events: JobEvents
    providers: ProviderRegistry
    leases: LeaseKeeper
    """The heartbeat that keeps the leases of the images this process runs alive."""
    circuits: SyncCircuits
    """The upstream routes' circuits: shared in Redis (distributed), or the process's own."""
    url_signing_key: bytes
    """Signs the image URLs of webhook bodies (the API's key: the setting, or the data dir's)."""

    @classmethod
    def build(cls, settings: Settings, *, events: InProcessEventBus | None = None,
              circuits: CircuitStore | None = None) -> WorkerRuntime:
        """Distributed mode publishes on Redis; embedded mode passes the process's event bus (and
        the circuits the API shows)."""
        # a worker thread holds a connection only around its short transactions, never across an
        # upstream call, so a pool far smaller than the concurrency serves it
        engine = create_sync_engine(settings.resolved_database_url, pool_size=settings.db_pool_size,
                                    max_overflow=settings.db_max_overflow)
        publisher: JobEvents
        if events is not None:
            publisher = events
        elif settings.redis_url:
            publisher = RedisEventPublisher(redis.Redis.from_url(settings.redis_url))
        else:
            raise ValueError("embedded mode needs the in-process event bus")
        sessions = sync_sessionmaker(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            store=open_store(settings),
            events=publisher,
            providers=ProviderRegistry.from_settings(settings),
            leases=LeaseKeeper(sessions, lease_s=settings.image_lease_s),
            circuits=SyncCircuits(circuits or open_circuits(settings)),
            url_signing_key=load_or_create_signing_key(
                settings.url_signing_key.get_secret_value() if settings.url_signing_key else None,
                settings.data_dir),
        )

    def close(self) -> None:
        metrics.process_exited(os.getpid())
        self.circuits.close()
        self.leases.close()
        self.providers.close()
        self.engine.dispose()

