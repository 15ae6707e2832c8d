"""Alembic environment: the schema is core.models; the URL comes from imagegate's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

import core.models
import core.models.ledger  # noqa: F401
from core.config import get_settings
from core.db import Base, create_sync_engine, is_sqlite

config = context.config
target_metadata = Base.metadata

# a lock id of our own, so that API replicas starting together migrate one at a time
_MIGRATION_LOCK_ID = 0x1A6E6A7E


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = create_sync_engine(url, pool_size=1, max_overflow=0)
    with engine.connect() as connection:
        if not is_sqlite(url):
            connection.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_ID})"))
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=True, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if not is_sqlite(url):
                connection.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_ID})"))
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
