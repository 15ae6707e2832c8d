"""Shared fixtures: the real services integration tests run against.

PostgreSQL (127.0.0.1:5432, trust auth, database ``test``) and Redis (127.0.0.1:6379) are used for
real. When one is missing the tests that need it skip, saying why — unless
``IMAGEGATE_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REQUIRE_SERVICES = os.environ.get("IMAGEGATE_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (IMAGEGATE_REQUIRE_SERVICES=1: integration tests are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql+psycopg://{PG_HOST}:{PG_PORT}/test"


@pytest.fixture(scope="session")
def make_pg_database(postgres_admin_url: str) -> Iterator[object]:
    """A factory of fresh, empty PostgreSQL databases, all dropped at the end of the session."""
    import sqlalchemy as sa

    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"imagegate_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return f"postgresql://{PG_HOST}:{PG_PORT}/{name}"

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


# servers of a test's own, to stop and start mid-test (see tests/outage.py)
from tests.outage import own_postgres, own_redis  # noqa: E402, F401
