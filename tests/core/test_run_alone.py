"""A statement run alone on psycopg (core/db.py ``run_alone``, the hot path's submit, claim and
record) behaves as one run through SQLAlchemy would: its own transaction, SQLAlchemy's errors, a
dead connection renewing the pool, and connections back in the pool as they were taken, against a
real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import DATABASE_UNAVAILABLE, create_async_db_engine, is_dropped_connection, retry_dropped, run_alone
from tests.core.test_db_pool import _pids, _terminate_others

TABLE = "CREATE TABLE alone (id integer PRIMARY KEY, name text NOT NULL)"


async def _engine(url: str, *, size: int = 1) -> AsyncEngine:
    engine = create_async_db_engine(url, pool_size=size, max_overflow=0)
    async with engine.begin() as conn:
        await conn.execute(sa.text(TABLE))
    return engine


async def _names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.text("SELECT name FROM alone ORDER BY id"))).scalars())


def test_a_statement_alone_is_committed_and_its_rows_are_named(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()

    async def scenario() -> tuple[list[tuple[int, str]], list[str], str | None]:
        engine = await _engine(url)
        try:
            rows = await run_alone(engine, "INSERT INTO alone VALUES (%(id)s, %(name)s) RETURNING id, name",
                                   {"id": 1, "name": "one"})
            assert rows.one_or_none().name == "one" and rows.scalar() == 1
            none = await run_alone(engine, "SELECT name FROM alone WHERE id = %(id)s", {"id": 2})
            return [tuple(r) for r in rows.all()], await _names(engine), none.scalar_one_or_none()
        finally:
            await engine.dispose()

    returned, stored, missing = asyncio.run(scenario())
    assert returned == [(1, "one")]
    assert stored == ["one"]  # read on another transaction: it was committed
    assert missing is None


def test_its_connection_goes_back_to_the_pool_as_it_was_taken(make_pg_database: Callable[[], str]) -> None:
    """The pool's one connection ran a statement alone (autocommit); a session on it afterwards
    is a transaction again: what it wrote is gone after its rollback."""
    url = make_pg_database()

    async def scenario() -> list[str]:
        engine = await _engine(url)
        try:
            await run_alone(engine, "INSERT INTO alone VALUES (1, 'alone')", {})
            async with engine.connect() as conn:
                await conn.execute(sa.text("INSERT INTO alone VALUES (2, 'rolled back')"))
                await conn.rollback()
            return await _names(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == ["alone"]


def test_a_driver_error_is_sqlalchemys_and_leaves_the_connection_usable(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()

    async def scenario() -> tuple[sa.exc.IntegrityError, list[str]]:
        engine = await _engine(url)
        try:
            await run_alone(engine, "INSERT INTO alone VALUES (1, 'first')", {})
            with pytest.raises(sa.exc.IntegrityError) as duplicate:
                await run_alone(engine, "INSERT INTO alone VALUES (%(id)s, 'again')", {"id": 1})
            async with engine.connect() as conn:  # the same (only) connection, in a transaction again
                await conn.execute(sa.text("INSERT INTO alone VALUES (3, 'rolled back')"))
                await conn.rollback()
            await run_alone(engine, "INSERT INTO alone VALUES (2, 'second')", {})
            return duplicate.value, await _names(engine)
        finally:
            await engine.dispose()

    error, names = asyncio.run(scenario())
    assert not error.connection_invalidated
    assert "alone" in str(error) and "pkey" in str(error)
    assert names == ["first", "second"]


def test_a_dropped_connection_fails_once_renews_the_pool_and_is_tried_again(
    make_pg_database: Callable[[], str],
) -> None:
    url = make_pg_database()

    async def scenario() -> tuple[bool, int, list[int]]:
        engine = await _engine(url, size=3)
        try:
            await _pids(engine, 3)
            terminated = _terminate_others(url, keep=set())
            with pytest.raises(DATABASE_UNAVAILABLE) as failed:
                await run_alone(engine, "SELECT 1", {})
            dropped = is_dropped_connection(failed.value)
            # every other connection of the pool was opened before the failure: renewed, no error
            reads = [(await run_alone(engine, "SELECT 1", {})).scalar() for _ in range(3)]
            _terminate_others(url, keep=set())
            again = await retry_dropped(lambda: run_alone(engine, "SELECT 2", {}))
            return dropped, terminated, [*reads, again.scalar()]
        finally:
            await engine.dispose()

    dropped, terminated, reads = asyncio.run(scenario())
    assert dropped and terminated >= 3
    assert reads == [1, 1, 1, 2]


def test_a_statement_cancelled_while_it_runs_leaves_no_connection_behind(make_pg_database: Callable[[], str]) -> None:
    """A task cancelled during its statement (a request whose client went away): the statement is
    cancelled on the server too, and the pool's one connection serves the next statement."""
    url = make_pg_database()

    async def scenario() -> tuple[int, int]:
        engine = await _engine(url)
        try:
            running = asyncio.ensure_future(run_alone(engine, "SELECT pg_sleep(30)", {}))
            await asyncio.sleep(0.5)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(running, timeout=10)
            after = (await run_alone(engine, "SELECT 7", {})).scalar()
            async with engine.connect() as conn:
                sleeping = await conn.scalar(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"))
            return after, int(sleeping or 0)
        finally:
            await engine.dispose()

    after, sleeping = asyncio.run(scenario())
    assert after == 7
    assert sleeping == 0


def test_before_cursor_execute_listeners_hear_the_statement(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()
    heard: list[tuple[object, str, object]] = []

    async def scenario() -> None:
        engine = await _engine(url)
        sa.event.listen(engine.sync_engine, "before_cursor_execute",
                        lambda conn, cursor, statement, parameters, *rest: heard.append((conn, statement, parameters)))
        try:
            await run_alone(engine, "SELECT %(x)s::int", {"x": 5})
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert heard == [(None, "SELECT %(x)s::int", {"x": 5})]
