"""A statement compiled once (core/repo/binds.py ``Prepared``) gives the driver exactly the
parameters SQLAlchemy's ``construct_params`` and bind processors would: for the hot path's own
statements (the claim, the record, the submit's inserts, the job read) on PostgreSQL and SQLite,
and for every kind of parameter they could hold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.types.json import Json
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, bindparam, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidRequestError

from core.billing.ledger import Charge, JobBilling
from core.jobs import ImageStatus, JobStatus
from core.models.types import UTCDateTime
from core.repo import jobs
from core.repo.binds import Prepared
from core.settlement import Ended, record_statement

DIALECTS = [postgresql.psycopg.dialect(), sqlite.pysqlite.dialect()]  # type: ignore[attr-defined]
NOW = datetime(2026, 12, 4, 4, 30, tzinfo=UTC)


def _reference(prepared: Prepared, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
    """What SQLAlchemy's own execution hands the driver for ``values`` (the steps of
    sqlalchemy/engine/default.py, ``DefaultExecutionContext._init_compiled``)."""
    compiled = prepared.compiled
    built = compiled.construct_params(dict(values), escape_names=False) or {}
    processors = compiled._bind_processors
    processed = {name: processors[name](value) if name in processors else value for name, value in built.items()}
    if compiled.positional:
        return tuple(processed[name] for name in compiled.positiontup or ())
    escaped = compiled.escaped_bind_names or {}
    return {escaped.get(name, name): value for name, value in processed.items()}


def _comparable(parameters: dict[str, Any] | tuple[Any, ...]) -> object:
    """psycopg's JSON wrappers compare by identity: their documents, instead."""
    def plain(value: Any) -> Any:
        return ("json", value.obj) if isinstance(value, Json) else value
    if isinstance(parameters, dict):
        return {name: plain(value) for name, value in parameters.items()}
    return tuple(plain(value) for value in parameters)


def _hot_statements(dialect: Dialect) -> list[tuple[Prepared, dict[str, Any]]]:
    job = {"id": "job_1", "api_key_id": "key_1", "dialect": "openai_images", "request": {"prompt": "p", "n": 2},
           "routes": [{"model": "demo"}], "model": "demo", "status": JobStatus.QUEUED, "n": 2, "created_at": NOW,
           "pricing": {"markup": "1.5"}, "hold_per_image_micros": 40_000, "webhook_url": None}
    images = [{"id": f"img_{i}", "job_id": "job_1", "index": i, "status": ImageStatus.QUEUED, "attempts": 0,
               "enqueued_at": NOW} for i in range(2)]
    statements = list(jobs.insert_steps(job, images, dialect=dialect))
    read = jobs.job_read(dialect, keyed=True)
    statements.append((read.prepared, {"job_id": "job_1", "key_id": "key_1"}))
    if dialect.name == "postgresql":
        statements.append(jobs.claim_with_context("img_0", now=NOW, lease_s=900, max_attempts=3, dialect=dialect))
        values = {"status": ImageStatus.SUCCEEDED, "model": "demo", "object_key": "k/img_0.png", "size": "64x64",
                  "cost_micros": 40_000, "upstream_cost_micros": 30_000, "finished_at": NOW, "lease_until": None,
                  "input_tokens": 5, "output_tokens": 1290, "text": None}
        charge = Charge(upstream_micros=30_000, billed_micros=40_000)
        billing = JobBilling.of(key_id="key_1", job_id="job_1", model="demo", hold_per_image=40_000, pricing=None)
        statements.append(record_statement(billing, "img_0", attempt=1, values=values,
                                           ended=Ended.of("img_0", values, charge), now=NOW, dialect=dialect))
    else:
        claim, start, parameters = jobs.claim_steps("img_0", now=NOW, lease_s=900, max_attempts=3, dialect=dialect)
        statements += [(claim, parameters), (start, {**parameters, "job_id": "job_1"})]
    return statements


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_the_hot_paths_statements_get_sqlalchemys_parameters(dialect: Dialect) -> None:
    statements = _hot_statements(dialect)
    assert len(statements) >= 5
    for prepared, values in statements:
        assert _comparable(prepared.parameters(values)) == _comparable(_reference(prepared, values)), \
            prepared.sql[:80]


TABLE = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(20)),
              Column("at", UTCDateTime()), Column("doc", JSON))


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_every_kind_of_parameter(dialect: Dialect) -> None:
    """Named values, literals, a value computed at execution, a name the driver needs escaped,
    processed types (UTC datetimes, JSON), one value used twice."""
    statement = select(TABLE.c.id, literal(7).label("seven")).where(
        TABLE.c.name == bindparam("name"), TABLE.c.at > bindparam("since", type_=UTCDateTime()),
        TABLE.c.doc == bindparam("doc", type_=JSON), TABLE.c.id > bindparam("computed", callable_=lambda: 41),
        TABLE.c.id != bindparam("per cent%", type_=Integer()), TABLE.c.name != bindparam("name"))
    prepared = Prepared(statement, dialect)
    values = {"name": "a", "since": NOW - timedelta(hours=1), "doc": {"k": [1, 2]}, "per cent%": 3}
    assert _comparable(prepared.parameters(values)) == _comparable(_reference(prepared, values))
    given = {**values, "computed": 5}
    assert _comparable(prepared.parameters(given)) == _comparable(_reference(prepared, given))
    assert "per cent%" not in prepared.sql  # a name the driver could not take: escaped in the SQL


def test_a_missing_value_raises_as_sqlalchemy_does() -> None:
    prepared = Prepared(select(TABLE.c.id).where(TABLE.c.name == bindparam("name")), DIALECTS[0])
    with pytest.raises(InvalidRequestError, match="A value is required for bind parameter 'name'"):
        prepared.parameters({})
    with pytest.raises(InvalidRequestError, match="A value is required for bind parameter 'name'"):
        _reference(prepared, {"other": 1})
