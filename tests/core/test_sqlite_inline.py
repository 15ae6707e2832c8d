"""SQLite through the async engine: statements run on the event loop (no thread per connection),
and a statement that meets another connection's write lock waits on the loop, so the holder, a
coroutine of the same loop, can finish its transaction."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import sqlite_inline
from core.db import async_session_factory, create_async_db_engine, transaction

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _engine(tmp_path: Path) -> AsyncEngine:
    engine = create_async_db_engine(f"sqlite:///{tmp_path / 'inline.db'}", pool_size=5, max_overflow=5)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        await connection.execute(text("INSERT INTO counter (id, value) VALUES (1, 0)"))
    return engine


async def test_statements_run_on_the_loop_without_a_thread_per_connection(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    engine = await _engine(tmp_path)
    try:
        async with engine.connect() as a, engine.connect() as b:
            assert (await a.execute(text("SELECT value FROM counter"))).scalar_one() == 0
            assert (await b.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await b.execute(text("PRAGMA busy_timeout"))).scalar_one() == 0, "the loop waits, not SQLite"
            assert set(threading.enumerate()) == before
    finally:
        await engine.dispose()


async def test_a_writer_waits_on_the_loop_for_a_lock_held_by_a_coroutine_of_the_same_loop(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    holding = asyncio.Event()

    async def holder() -> None:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
            holding.set()
            await asyncio.sleep(0.3)  # suspended inside its transaction, the write lock held

    async def waiter() -> None:
        await holding.wait()
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE counter SET value = value + 10 WHERE id = 1"))

    try:
        await asyncio.wait_for(asyncio.gather(holder(), waiter()), timeout=10)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT value FROM counter"))).scalar_one() == 11
    finally:
        await engine.dispose()


async def test_a_lock_never_let_go_fails_after_the_busy_timeout(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT_S", 0.2)
    engine = await _engine(tmp_path)
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer, holding its lock throughout
        async with engine.connect() as connection:
            with pytest.raises(Exception, match="database is locked"):
                await connection.execute(text("UPDATE counter SET value = 5 WHERE id = 1"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await engine.dispose()


async def _committed_when_the_loop_next_turns(tmp_path: Path, block: Callable[[Any], Any]) -> int:
    """The counter another connection reads, from a callback that was ready on the loop before
    ``block``'s transaction ended: what any other task of the loop would see by then."""
    engine = await _engine(tmp_path)
    seen: list[int] = []
    reader = sqlite3.connect(tmp_path / "inline.db")

    def read() -> None:
        seen.append(reader.execute("SELECT value FROM counter").fetchone()[0])

    try:
        async with block(async_session_factory(engine)) as session:
            await session.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
            asyncio.get_running_loop().call_soon(read)  # another task's turn, queued behind this one
        return seen[0]
    finally:
        reader.close()
        await engine.dispose()


async def test_a_transaction_commits_before_the_other_tasks_of_the_loop_run(tmp_path: Path) -> None:
    # SQLAlchemy's sessions.begin() would commit in a task of its own, after the waiting ones,
    # holding the write lock meanwhile: the callback would still read 0
    assert await _committed_when_the_loop_next_turns(tmp_path, transaction) == 1


async def test_sqlalchemys_begin_block_commits_a_turn_of_the_loop_later(tmp_path: Path) -> None:
    # what transaction() is for: if SQLAlchemy changes this, transaction() can become begin() again
    assert await _committed_when_the_loop_next_turns(tmp_path, lambda sessions: sessions.begin()) == 0


def test_no_transaction_of_the_gateway_is_a_sessionmaker_begin_block() -> None:
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*async with [\w.]+\.begin\(\)")
    found = [f"{path.relative_to(root)}:{number}"
             for package in ("api", "worker", "core", "imagegate")
             for path in sorted((root / package).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"use core.db.transaction(sessions), which commits at once: {found}"
