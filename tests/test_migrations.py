"""The migrations build exactly the schema the models describe, on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import core.models
import core.models.ledger  # noqa: F401
from core.config import Settings
from core.db import Base, create_sync_engine
from core.migrate import alembic_config, upgrade_head


def _diff(url: str) -> list[object]:
    engine = create_sync_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_sync_engine(url, pool_size=1, max_overflow=0)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.integration
def test_upgrade_head_on_empty_postgres_gives_the_models_schema(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()
    upgrade_head(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    assert _diff(url) == []
    assert {"api_keys", "jobs", "job_images", "ledger_entries", "alembic_version"} <= _tables(url)


@pytest.mark.integration
def test_downgrade_to_base_and_back(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert _tables(url) == {"alembic_version"}
    command.upgrade(config, "head")
    assert _diff(url) == []


def test_upgrade_head_on_sqlite_gives_the_models_schema(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    upgrade_head(settings)
    assert _diff(settings.resolved_database_url) == []
