"""Shared fixtures: the real services integration tests run against, and the fake upstream.

PostgreSQL (127.0.0.1:5432, trust auth, database ``test``) and Redis (127.0.0.1:6379) are used for
real. When one is missing the tests that need it skip, saying why — unless
``IMAGEGATE_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.logcontext import DropQueryString
from tests import secret_scan
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
    free_port,
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


class S3Server:
    """A real S3-protocol server (moto's) on a free port, with a bucket made per test module."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key_id, self.secret_access_key = "imagegate-test", "imagegate-test-secret"

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"imagegate-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def client(self) -> Any:
        """A boto3 client of the server, for tests to look into buckets (independent of imagegate's
        own S3 client)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def settings(self, bucket: str, prefix: str = "images") -> dict[str, str]:
        """The gateway's settings for this server."""
        return {"IMAGEGATE_STORAGE_URL": f"s3://{bucket}/{prefix}", "IMAGEGATE_S3_ENDPOINT_URL": self.endpoint,
                "IMAGEGATE_S3_REGION": "us-east-1", "IMAGEGATE_S3_ACCESS_KEY_ID": self.access_key_id,
                "IMAGEGATE_S3_SECRET_ACCESS_KEY": self.secret_access_key}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


# -- no secret in any log of the run: the gateways' process logs and this process's own records


class _Recorder(logging.Handler):
    """Keeps every record logged in the test process, formatted (with its traceback), for the scan."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        # as imagegate's own logging configuration does (core/logcontext.py)
        self.addFilter(DropQueryString())

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in TEST_SERVERS_LOGGERS:
            return
        # a record that cannot be formatted is not this handler's to report
        with contextlib.suppress(Exception):
            self.lines.extend(self.format(record).splitlines())


TEST_SERVERS_LOGGERS = frozenset({"werkzeug"})
"""The request lines of the tests' own servers (moto's S3 server logs the presigned URLs it
serves, signatures included): logs of the test fixtures, not of imagegate."""

_RECORDER = _Recorder()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_RECORDER)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a secret (an API key, an upstream key, a webhook secret or signature, a
    signed URL's signature) appears in any log of it."""
    leaks = secret_scan.leaks_in(_RECORDER.lines, where="the test process's log records")
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp: Path | None = getattr(factory, "_basetemp", None) if factory is not None else None
    if basetemp is not None and basetemp.exists():
        leaks += secret_scan.scan_files(basetemp)
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.section("secrets in the logs", sep="=", red=True, bold=True)
        for leak in leaks[:50]:
            reporter.line(f"{leak.kind} in {leak.where}: {leak.line.strip()[:300]}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# servers of a test's own, to stop and start mid-test (see tests/outage.py)
from tests.outage import own_postgres, own_redis  # noqa: E402, F401
