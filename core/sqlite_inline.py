"""SQLite for the async engines without a thread per connection: statements run on the event loop.

aiosqlite (the driver SQLAlchemy's ``sqlite+aiosqlite`` dialect drives) gives each connection a
thread and hands every call to it through a queue: a cursor, an execute, a fetch and a close are
four hand-offs to that thread and back per statement, each a lock, a wake-up of the loop and a
turn of the GIL, which cost far more than the statement itself (a few microseconds for the
indexed reads and writes of the hot path). :class:`InlineConnection` is aiosqlite's connection
with the hand-off taken out: each call runs at once, on the loop that awaits it. The sqlite3
module lets go of the GIL while SQLite works, so another thread (embedded mode's worker loop)
runs meanwhile.

Waiting for another connection's write lock must not block the loop, since the connection
holding it may be a coroutine of the same loop, suspended inside its transaction. So the
connection has no busy timeout of its own (SQLite answers ``SQLITE_BUSY`` at once) and
:meth:`InlineConnection._execute` waits on the loop instead, retrying the call after a short
sleep until :data:`BUSY_TIMEOUT_S` has passed, as SQLite's own busy handler would
(https://www.sqlite.org/c3ref/busy_timeout.html). ``SQLITE_BUSY_SNAPSHOT`` and the other extended
codes, for which SQLite itself does not wait, are raised at once.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

BUSY_TIMEOUT_S = 30.0
"""How long a statement waits for another connection's lock before it fails (the blocking
engines' ``busy_timeout``, core/db.py)."""
FIRST_WAIT_S = 0.0005
LONGEST_WAIT_S = 0.02
SQLITE_BUSY = 5


class _RunAtOnce:
    """Stands in for aiosqlite's queue to its thread (SQLAlchemy's dialect puts calls on it
    directly, to set the isolation level): each call runs as it is put, its future resolved."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is None:
                raise
            future.set_exception(exc)
        else:
            if future is not None:
                future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection, every call run on the awaiting loop (see the module docstring)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _RunAtOnce()  # type: ignore[assignment]  # no thread: calls run at once

    def __await__(self) -> Any:
        return self._connect().__await__()  # aiosqlite starts its thread here; there is none

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        wait = FIRST_WAIT_S
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) != SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(wait)  # the lock's holder may be a coroutine of this loop
            wait = min(wait * 2, LONGEST_WAIT_S)


def inline_creator(database: str, **connect_args: Any) -> Callable[[], Awaitable[InlineConnection]]:
    """``create_async_engine(..., async_creator=inline_creator(path))``: connections to
    ``database`` whose calls run on the loop, with no busy timeout of their own."""
    connector = functools.partial(sqlite3.connect, database, **{**connect_args, "timeout": 0,
                                                                  "check_same_thread": False})

    async def create() -> InlineConnection:
        connection = InlineConnection(connector)
        await connection._connect()
        return connection

    return create
