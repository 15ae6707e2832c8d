"""Shared fixtures: the real services integration tests run against, and the fake upstream.

PostgreSQL (127.0.0.1:5432, trust auth, database ``test``) and Redis (127.0.0.1:6379) are used for
real. When one is missing the tests that need it skip, saying why — unless
``IMAGEGATE_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import (
    PG_ADMIN_URL,
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    create_database,
    database_url,
    drop_databases,
    reachable,
)

REQUIRE_SERVICES = os.environ.get("IMAGEGATE_REQUIRE_SERVICES") == "1"


def need_service(name: str, host: str, port: int) -> None:
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (IMAGEGATE_REQUIRE_SERVICES=1: integration tests are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def make_pg_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases (their URLs), all dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        created.append(create_database("imagegate_test", postgres_admin_url))
        return database_url(created[-1])

    yield make
    drop_databases(created, postgres_admin_url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    return REDIS_URL


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    """The fake upstream (tests/fakes/upstream.py), a real HTTP server on 127.0.0.1."""
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake upstream, reset for this test; fails the test if imagegate broke a wire format."""
    fake.reset()
    yield fake
    assert fake.violations == [], "imagegate sent requests that break the upstream wire format"
