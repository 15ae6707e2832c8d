"""Connections are not pinged on checkout: one the server dropped fails its statement, the pool
renews every connection older than that failure, and a read tried again on a fresh one succeeds
(core/db.py), against a real PostgreSQL whose backends are terminated under the pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import Settings
from core.db import (
    DATABASE_UNAVAILABLE,
    create_async_db_engine,
    create_sync_engine,
    is_dropped_connection,
    retry_dropped,
    settings_engine,
    sync_url,
)


def _terminate_others(url: str, keep: set[int]) -> int:
    """Terminate the database's backends but ``keep``'s; how many were terminated."""
    admin = sa.create_engine(sync_url(url), poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            database = conn.scalar(sa.text("SELECT current_database()"))
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                        "AND pid <> pg_backend_pid() AND NOT (pid = ANY(:keep))"
                    ),
                    {"db": database, "keep": list(keep)},
                ).all()
            )
    finally:
        admin.dispose()


async def _pids(engine: AsyncEngine, count: int) -> set[int]:
    """Open ``count`` pooled connections (all checked in again); their backend pids."""
    connections = [await engine.connect() for _ in range(count)]
    pids = {await c.scalar(sa.text("SELECT pg_backend_pid()")) for c in connections}
    for c in connections:
        await c.close()
    return {int(p) for p in pids if p is not None}


def test_a_dropped_connection_fails_once_and_the_pool_is_renewed(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()

    async def scenario() -> tuple[bool, int, int, set[int]]:
        engine = create_async_db_engine(url, pool_size=3, max_overflow=0)
        try:
            first = await _pids(engine, 3)
            terminated = _terminate_others(url, keep=set())
            # no ping: the first statement on a dead connection fails, as a database error
            with pytest.raises(DATABASE_UNAVAILABLE) as failed:
                async with engine.connect() as conn:
                    await conn.scalar(sa.text("SELECT 1"))
            dropped = is_dropped_connection(failed.value)
            # ... and every other connection of the pool is renewed: three reads, no error
            results = [await _read_pid(engine) for _ in range(3)]
            return dropped, terminated, len(first), set(results)
        finally:
            await engine.dispose()

    dropped, terminated, opened, after = asyncio.run(scenario())
    assert opened == 3 and terminated >= 3
    assert dropped
    assert len(after) >= 1


async def _read_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT pg_backend_pid()")) or 0)


def test_a_read_on_a_dropped_connection_is_tried_again(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()

    async def scenario() -> tuple[int, int]:
        engine = create_async_db_engine(url, pool_size=1, max_overflow=0)
        calls = 0
        try:
            before = await _read_pid(engine)
            _terminate_others(url, keep=set())

            async def read() -> int:
                nonlocal calls
                calls += 1
                return await _read_pid(engine)

            after = await retry_dropped(read)
            assert after != before
            return calls, after
        finally:
            await engine.dispose()

    calls, _ = asyncio.run(scenario())
    assert calls == 2


def test_the_engines_do_not_ping(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()
    engine = create_sync_engine(url, pool_size=1, max_overflow=0)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        for _ in range(3):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 42"))
        assert engine.pool._pre_ping is False  # type: ignore[attr-defined]
        assert statements.count("SELECT 42") == 3
        assert all(s == "SELECT 42" for s in statements[-3:])
    finally:
        engine.dispose()


def test_a_serving_engine_keeps_every_connection_it_opens(make_pg_database: Callable[[], str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default settings, a peak's connections stay open for the next peak: no connection
    is closed on its return only to be opened again (a handshake on a request's way) a moment later."""
    for name in ("IMAGEGATE_DB_POOL_SIZE", "IMAGEGATE_DB_MAX_OVERFLOW"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(database_url=make_pg_database(), _env_file=None)  # type: ignore[call-arg]
    peak = settings.db_pool_size + settings.db_max_overflow

    async def scenario() -> tuple[int, int]:
        engine = settings_engine(settings)
        opened: list[object] = []
        sa.event.listen(engine.sync_engine, "connect", lambda dbapi_connection, record: opened.append(record))
        try:
            first = await _pids(engine, peak)
            second = await _pids(engine, peak)
            assert len(first) == len(second) == peak
            return len(opened), len(first & second)
        finally:
            await engine.dispose()

    opened, reused = asyncio.run(scenario())
    assert (opened, reused) == (peak, peak)
