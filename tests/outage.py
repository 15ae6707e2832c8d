"""Servers of a test's own, to take down and bring back mid-test: PostgreSQL and Redis on free
ports in temporary directories, never the shared ones on 5432 and 6379.

Use the fixtures (registered for every test by ``tests/conftest.py``)::

    def test_an_outage(own_postgres: PostgresServer, own_redis: RedisServer) -> None:
        database_url = own_postgres.create_database()   # a fresh, empty database
        redis_url = own_redis.url(0)
        ...                                              # start a gateway against them
        with own_postgres.down():                        # stopped (fast shutdown) for the block
            ...
        own_redis.restart()                              # no persistence: it comes back empty

or the classes directly (``PostgresServer().start()``, ``close()`` at the end). Each fixture gives
a test its own server, stopped and deleted after it.

PostgreSQL is run with ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` (or ``PATH``);
as root they run as the ``postgres`` user, which owns the data directory. Redis is
``redis-server`` without persistence (``--save "" --appendonly no``). Without the binaries the
tests that need them skip, or fail under ``IMAGEGATE_REQUIRE_SERVICES=1`` (as in CI).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import sqlalchemy as sa

from tests.harness import free_port

__all__ = ["PostgresServer", "RedisServer", "Server", "own_postgres", "own_redis", "wait_until"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def need_binary(path: str | None, name: str) -> str:
    """The binary's path; skip the test without it (fail under IMAGEGATE_REQUIRE_SERVICES=1)."""
    if path:
        return path
    message = f"{name} is not installed"
    if os.environ.get("IMAGEGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (IMAGEGATE_REQUIRE_SERVICES=1: integration tests are required)")
    pytest.skip(message)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


S = TypeVar("S", bound="Server")


class Server:
    """A server process of the test's own, in its own directory ``root``."""

    root: Path

    def start(self) -> Server:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stopped for the duration of the block, started again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def close(self) -> None:
        """Stopped, and its directory deleted."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer(Server):
    """A PostgreSQL cluster of its own: ``start()``, ``stop()``, ``down()``, ``create_database()``."""

    def __init__(self) -> None:
        bin_dir = _postgres_bin()
        self.bin = Path(need_binary(str(bin_dir) if bin_dir else None, "PostgreSQL (initdb, pg_ctl)"))
        self.port = free_port()
        # not under pytest's tmp dir: as root, the postgres user must be able to reach it
        self.root = Path(tempfile.mkdtemp(prefix="imagegate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._initialized = False

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}")

    def start(self) -> PostgresServer:
        if not self._initialized:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                           f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                           "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            self._initialized = True
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30")
        return self

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back and every connection is closed."""
        if self._initialized and _listening(self.port):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL (as IMAGEGATE_DATABASE_URL takes it)."""
        name = f"imagegate_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(self.url().replace("postgresql://", "postgresql+psycopg://"),
                                 isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                # copying the template's files is much faster than WAL-logging them (PostgreSQL 15+)
                strategy = " STRATEGY FILE_COPY" if conn.dialect.server_version_info >= (15,) else ""
                conn.execute(sa.text(f'CREATE DATABASE "{name}"{strategy}'))
        finally:
            admin.dispose()
        return self.url(name)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


class RedisServer(Server):
    """A Redis of its own, without persistence: ``start()``, ``stop()``, ``restart()``, ``url()``."""

    def __init__(self) -> None:
        self.binary = need_binary(shutil.which("redis-server"), "redis-server")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="imagegate-redis-"))

    def start(self) -> RedisServer:
        subprocess.run([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.root),
                        "--logfile", str(self.root / "redis.log"), "--pidfile", str(self.root / "redis.pid")],
                       check=True, capture_output=True, timeout=30)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut down without saving: whatever it held is gone."""
        subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                       capture_output=True, timeout=30)
        wait_until(lambda: not _listening(self.port), 10, f"redis-server on port {self.port} to stop")

    def restart(self) -> None:
        """Stop and start again: it comes back empty, with a new ``run_id``."""
        self.stop()
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def _running(server: S) -> Iterator[S]:
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, running; stopped and deleted after the test."""
    yield from _running(PostgresServer())


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (no persistence), running; stopped and deleted after the test."""
    yield from _running(RedisServer())
