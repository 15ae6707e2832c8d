"""Everything the API builds at startup, held on ``app.state.imagegate``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.auth import KeyCache
from api.enqueue import Enqueuer
from api.ratelimit import RateLimiter
from api.wait import JobWaiter
from core.billing.prices import PriceTable
from core.circuit import CircuitStore
from core.config import Settings
from core.db import async_session_factory
from core.events import InProcessEventBus
from core.routing import Catalogue
from core.storage import ImageStore


@dataclass
class AppState:
    settings: Settings
    prices: PriceTable
    limiter: RateLimiter
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalogue: Catalogue
    store: ImageStore
    enqueuer: Enqueuer
    waiter: JobWaiter
    signing_key: bytes
    redis: aioredis.Redis | None
    worker_alive: Callable[[], bool] | None
    """Embedded mode: whether the in-process worker runs (the broker check of /health)."""
    keys: KeyCache
    circuits: CircuitStore
    """The upstream routes' circuits (the workers' own, read here for /health and /metrics)."""
    event_bus: InProcessEventBus | None = None
    """Embedded mode: the bus the in-process worker publishes on (its partial-image log)."""

    @cached_property
    def reads(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for reads that need no transaction (a finished job, its images, a poll), and
        for a write made in one statement (PostgreSQL's submit, ``api/submit.py``): their
        connections autocommit, so a statement goes alone, without a BEGIN before it and a
        COMMIT or ROLLBACK after. Other writes use :attr:`sessions`.

        On SQLite they are :attr:`sessions`: its driver begins a transaction before a write only,
        so a read goes alone already, and the isolation level set on each checkout and reset on
        each return would be two statements more per read."""
        if self.engine.dialect.name == "sqlite":
            return self.sessions
        return async_session_factory(self.engine.execution_options(isolation_level="AUTOCOMMIT"))
