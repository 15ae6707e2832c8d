"""Database plumbing: the declarative base and engine factories (built at startup, not import).

The API and the worker use async engines (the worker's on its pool's event loop); the sync ones
serve commands (migrations, ``imagegate keys``) and tests. All come from the same URL. PostgreSQL
URLs use psycopg 3 (sync and async); SQLite uses the standard driver, through aiosqlite's interface
with its calls run on the event loop (core/sqlite_inline.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy.exc
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.util.concurrency import greenlet_spawn

from core.sqlite_inline import inline_creator

if TYPE_CHECKING:
    from core.config import Settings

T = TypeVar("T")

DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)
"""What the database raises while it cannot be reached (down, restarting, failing over, its pool
exhausted): callers answer 503 or try again, never 500."""

POOL_RECYCLE_S = 300
"""PostgreSQL connections are replaced after this many seconds, and never pinged on checkout (a
ping is a round trip per transaction). A connection the server dropped fails its next statement;
SQLAlchemy then invalidates every connection of the pool opened before the failure, so one error
(during an outage, that of the first statement to meet it) renews the whole pool
(https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-optimistic). Reads that
meet a dropped connection try once more (:func:`retry_dropped`)."""


def is_dropped_connection(exc: BaseException) -> bool:
    """A statement that failed because its pooled connection was dead (now invalidated): run on
    a fresh one, it may well succeed."""
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


async def retry_dropped(read: Callable[[], Awaitable[T]]) -> T:
    """Run a read; once more if its connection turned out to be dead. Only for reads: a write
    whose connection died may or may not have been committed."""
    try:
        return await read()
    except sqlalchemy.exc.DBAPIError as exc:
        if not is_dropped_connection(exc):
            raise
    return await read()


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def sync_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int = 30000) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while the worker writes; busy_timeout waits out a writer's lock.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_sync_engine(url: str, *, pool_size: int, max_overflow: int) -> Engine:
    """A blocking engine, for commands and tests; the pool sizes are the caller's."""
    if is_sqlite(url):
        engine = create_engine(sync_url(url), connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(sync_url(url), pool_size=pool_size, max_overflow=max_overflow, pool_recycle=POOL_RECYCLE_S)


def settings_engine(settings: Settings) -> AsyncEngine:
    """The async engine of a serving process: the settings' database and pool sizes."""
    return create_async_db_engine(settings.resolved_database_url, pool_size=settings.db_pool_size,
                                  max_overflow=settings.db_max_overflow)


def create_async_db_engine(url: str, *, pool_size: int, max_overflow: int) -> AsyncEngine:
    """The API's and the worker's engine; the pool sizes are the settings' (``IMAGEGATE_DB_POOL_SIZE``
    and ``IMAGEGATE_DB_MAX_OVERFLOW``)."""
    if is_sqlite(url):
        # statements run on the event loop, which also waits out another writer's lock
        # (core/sqlite_inline.py): no busy timeout in SQLite itself
        engine = create_async_engine(async_url(url), async_creator=inline_creator(make_url(url).database or ":memory:"),
                                     pool_size=pool_size, max_overflow=max_overflow)
        event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_ms=0))
        return engine
    _cache_long_queries()
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow,
                               pool_recycle=POOL_RECYCLE_S)


PSYCOPG_CACHED_QUERY_BYTES = 16 * 1024
PSYCOPG_CACHED_QUERY_PARAMS = 256


def _cache_long_queries() -> None:
    """psycopg converts a query's ``%(name)s`` placeholders to PostgreSQL's ``$n`` on every
    execution, caching the conversion only for queries up to 4 KiB with up to 50 parameters
    (``psycopg._queries.MAX_CACHED_STATEMENT_LENGTH`` and ``MAX_CACHED_STATEMENT_PARAMS``); the
    worker's record of an image is one 7 KiB statement with about a hundred parameters
    (core/settlement.py), so both limits are raised for this process. Every statement of the hot
    path has a fixed shape (core/repo/binds.py), so the cache (128 entries) stays small."""
    from psycopg import _queries

    if getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", PSYCOPG_CACHED_QUERY_BYTES) < PSYCOPG_CACHED_QUERY_BYTES:
        _queries.MAX_CACHED_STATEMENT_LENGTH = PSYCOPG_CACHED_QUERY_BYTES
    if getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", PSYCOPG_CACHED_QUERY_PARAMS) < PSYCOPG_CACHED_QUERY_PARAMS:
        _queries.MAX_CACHED_STATEMENT_PARAMS = PSYCOPG_CACHED_QUERY_PARAMS


class Rows:
    """The rows of a statement run by :func:`run_alone` (named tuples: ``row.job_id``), with the
    accessors of SQLAlchemy's results that its callers use."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def all(self) -> list[Any]:
        return self.rows

    def one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise sqlalchemy.exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]


async def run_alone(engine: AsyncEngine, sql: str, parameters: dict[str, Any]) -> Rows:
    """Run one statement (its SQL text and its driver parameters, :class:`core.repo.binds.Prepared`)
    on PostgreSQL on a connection of the engine's pool in autocommit mode: one round trip, the
    statement is its own transaction. For the hot path's statements that do their work alone (the
    submit, the worker's claim and record).

    The statement goes to psycopg directly, not through a SQLAlchemy ``Connection`` and session:
    their bookkeeping for one statement (checkout events, the execution context, the result) costs
    some 0.2 ms of CPU, three times psycopg's own. What they do that matters is kept: a driver
    error is raised as SQLAlchemy's (``OperationalError``, ``IntegrityError``, ... from
    ``DBAPIError.instance``), a connection found dead invalidates the pool's connections opened
    before it (as :data:`POOL_RECYCLE_S` describes), the connection goes back to the pool as it was
    taken (autocommit off, no transaction; otherwise it is closed), and ``before_cursor_execute``
    listeners hear of the statement (with no ``Connection``: tests and bench/roundtrips.py count
    statements this way)."""
    import psycopg
    from psycopg.rows import namedtuple_row

    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    def translated(exc: psycopg.Error, fairy: Any) -> sqlalchemy.exc.StatementError:
        dropped = fairy is not None and dialect.is_disconnect(exc, fairy.dbapi_connection, None)  # type: ignore[arg-type]
        if dropped:
            # what SQLAlchemy's Connection does on a disconnect (Connection._handle_dbapi_exception):
            # every connection of the pool opened before this failure is replaced on its next checkout
            sync_engine.pool._invalidate(fairy, exc, _checkin=False)
        return sqlalchemy.exc.DBAPIError.instance(
            sql, parameters, exc, psycopg.Error, hide_parameters=sync_engine.hide_parameters,
            connection_invalidated=dropped, dialect=dialect)

    try:
        fairy = await engine.raw_connection()
    except psycopg.Error as exc:
        raise translated(exc, None) from exc
    connection: psycopg.AsyncConnection[Any] = fairy.driver_connection  # type: ignore[assignment]
    clean = False
    try:
        await connection.set_autocommit(True)
        try:
            async with connection.cursor(row_factory=namedtuple_row) as cursor:
                for listener in sync_engine.dispatch.before_cursor_execute:
                    listener(None, cursor, sql, parameters, None, False)
                await cursor.execute(sql, parameters)
                rows = await cursor.fetchall() if cursor.description is not None else []
        finally:
            if not connection.broken and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                await connection.set_autocommit(False)
                clean = True
    except psycopg.Error as exc:
        raise translated(exc, fairy) from exc
    finally:
        # back to the pool (its reset's rollback is no round trip on an idle connection), or closed
        await greenlet_spawn(fairy.close if clean else fairy.invalidate)
    return Rows(rows)


def sync_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """``async with transaction(sessions) as session``: a session in a transaction that the task
    running the block commits as the block ends (or rolls back, if it raises).

    Not ``async with sessions.begin()``: SQLAlchemy ends that block in a task of its own
    (``sqlalchemy.ext.asyncio.base._run_to_completion``, shielded from cancellation), and a new
    task runs only after every task already waiting on the event loop has had its turn. The
    transaction's locks are held meanwhile (SQLite's one write lock, PostgreSQL's row locks on a
    key's counters), so every other writer waits a turn of the loop for each commit. Here the
    commit runs at once; only the session's close, after it, goes through SQLAlchemy's task. A
    task cancelled during the commit leaves it done or not done, as a crash would: the claim and
    the record are made to be run again (worker/run_job.py)."""
    async with sessions() as session, session.begin():
        yield session
