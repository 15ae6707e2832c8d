"""Values of a statement built once and run many times (the hot path's claim, record and submit):
each value is a bind parameter, named, typed by its column, given at execution.

SQLAlchemy caches a statement's compiled form, but building the statement and computing its cache
key happen on every call, and for the record of an image (six data-modifying CTEs) that costs more
CPU than PostgreSQL spends running it. A statement whose values are all bind parameters is built
and compiled once per shape and dialect (:class:`Prepared`, kept by ``functools.lru_cache``) and
executed with a dict of parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import BindParameter, ClauseElement, Result, bindparam, literal
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from core.db import Rows, run_alone


def bound(value: Any, type_: TypeEngine[Any]) -> BindParameter[Any]:
    """``value`` as a typed parameter of a statement: a named :func:`bindparam` given as the value
    (typed here by its column), else the value itself as a literal."""
    if isinstance(value, BindParameter):
        return bindparam(value.key, type_=type_)
    return literal(value, type_=type_)


def param(name: str) -> BindParameter[Any]:
    """A named placeholder to pass where a builder takes a value; :func:`bound` types it."""
    return bindparam(name)


class Prepared:
    """A statement compiled once for a dialect, executed as its SQL text with its parameters
    (``exec_driver_sql``): no statement to build, no cache key to compute, no compiled cache to
    look up on each run. Values go through the same bind processors SQLAlchemy would apply (UTC
    datetimes, JSON); rows come back as the driver gives them (psycopg parses JSON itself)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = compiled.string
        processors: dict[str, Any] = dict(compiled._bind_processors)
        self._positions: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None
        """The parameters' names in order, for a driver whose placeholders are positional (SQLite's
        ``?``); None for named ones (psycopg's ``%(name)s``)."""
        escaped: dict[str, str] = {} if compiled.positional else (compiled.escaped_bind_names or {})
        self._binds = tuple((escaped.get(name, name), bind.key, name, bind, processors.get(name))
                            for bind, name in compiled.bind_names.items())
        """What SQLAlchemy's execution goes through for each run (``construct_params``, then each
        bind processor, then the driver's names: sqlalchemy/engine/default.py,
        ``_init_compiled``), worked out once: each parameter's name for the driver, the keys its
        value is given by, the parameter (for its literal value) and its bind processor."""

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        """Every parameter of the statement (its literals included), processed for the driver, by
        name or in order as its placeholders are; a missing value raises (as SQLAlchemy's
        ``construct_params`` does, which this is without its per-run bookkeeping)."""
        named: dict[str, Any] = {}
        for out, key, name, bind, process in self._binds:
            if key in values:
                value = values[key]
            elif name in values:
                value = values[name]
            elif bind.required:
                raise InvalidRequestError(f"A value is required for bind parameter {bind.key!r}", code="cd3x")
            else:
                value = bind.effective_value if bind.callable else bind.value
            named[out] = value if process is None else process(value)
        if self._positions is None:
            return named
        return tuple(named[name] for name in self._positions)

    async def execute(self, session: AsyncSession, values: Mapping[str, Any]) -> Result[Any]:
        connection = await session.connection()
        return await connection.exec_driver_sql(self.sql, self.parameters(values))

    async def run_alone(self, engine: AsyncEngine, values: Mapping[str, Any]) -> Rows:
        """Run on PostgreSQL as a transaction of its own, in one round trip (:func:`core.db.run_alone`)."""
        parameters = self.parameters(values)
        assert isinstance(parameters, dict), "run_alone is for PostgreSQL's named parameters"
        return await run_alone(engine, self.sql, parameters)
