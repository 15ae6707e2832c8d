"""Real imagegate processes, started as an operator starts them, for the end-to-end tests
(``tests/e2e``) and the benchmark (``bench/``): ``imagegate migrate``, ``imagegate serve`` (uvicorn,
one or more API processes) and ``imagegate worker`` (Celery), on free ports of 127.0.0.1.

A :class:`Stack` is one gateway: its data dir, its environment (built by :func:`base_env`, which
drops every ``IMAGEGATE_*`` variable of the calling process), its API process and its worker
processes, each with a log file in the data dir's parent. Every wait is bounded, and every process
started here is stopped by its own pid. The PostgreSQL and Redis that distributed stacks use are
the ones ``make test`` expects; :func:`create_database` and :func:`drop_databases` give each stack a
database of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

BIN = Path(sys.executable).parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_ADMIN_URL = f"postgresql+psycopg://{PG_HOST}:{PG_PORT}/test"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}"
ADMIN_KEY = "test-admin-key"
START_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Process:
    """A started process and the file its stdout and stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Send ``sig`` and wait up to ``timeout`` seconds; then SIGKILL."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def spawn(name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Process:
    with log.open("wb") as handle:
        popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    return Process(name, popen, log)


def _wait(process: Process, done: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``done`` until it holds; raise (with the log's tail) if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.running:
            raise RuntimeError(f"{process.name} exited:\n{process.output()[-4000:]}")
        if done():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{process.name} did not {what} within {timeout:g} s:\n{process.output()[-4000:]}")


def wait_http_ok(process: Process, url: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until ``url`` answers 200."""

    def ok() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(process, ok, f"answer {url}", timeout)


def wait_output(process: Process, marker: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until ``marker`` appears in the process's log."""
    _wait(process, lambda: marker in process.output(), f"log {marker!r}", timeout)


# -- databases ------------------------------------------------------------------------------------


def create_database(prefix: str, admin_url: str = PG_ADMIN_URL) -> str:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return name


def drop_databases(names: list[str], admin_url: str = PG_ADMIN_URL) -> None:
    """Drop the databases, closing their connections first."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def database_url(name: str) -> str:
    """The URL imagegate is given for the database ``name`` of the test PostgreSQL."""
    return f"postgresql://{PG_HOST}:{PG_PORT}/{name}"


# -- a gateway ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Money:
    """A key's money as the database has it, in micro-dollars."""

    committed: int
    """api_keys.committed_micros: open holds plus charges."""
    ledger: int
    """The sum of the key's ledger rows (always equal to ``committed``)."""
    charges: int
    """How many images were charged (a charge of more than 0)."""
    charged: int
    """What they were charged, in all."""


DEMO_USD = "0.04"


def priced_demo(tmp: Path, usd: str = DEMO_USD) -> dict[str, str]:
    """Settings under which the demo model costs ``usd`` per image (it is free otherwise), so
    that holds, charges and releases can be counted."""
    path = tmp / "prices.toml"
    path.write_text(f'[[models]]\nid = "demo-image"\nsource = "test: a paid demo"\neffective = 2026-11-21\n'
                    f'per_image = {{ "*" = {{ "*" = "{usd}" }} }}\n')
    return {"IMAGEGATE_PRICES_FILE": str(path)}


def base_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of a gateway's processes: this process's, without any ``IMAGEGATE_*``
    variable, then a data dir in ``tmp``, the admin key, unbuffered output and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env.update({
        "IMAGEGATE_HOST": "127.0.0.1",
        "IMAGEGATE_DATA_DIR": str(tmp / "data"),
        "IMAGEGATE_LOG_LEVEL": "INFO",
        "IMAGEGATE_ADMIN_KEY": ADMIN_KEY,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(settings)
    return env


def env_names(settings: dict[str, str]) -> dict[str, str]:
    """Settings by field name (``gemini_api_key``) under their environment names
    (``IMAGEGATE_GEMINI_API_KEY``)."""
    return {f"IMAGEGATE_{name.upper()}": value for name, value in settings.items()}


@dataclass
class Stack:
    """One gateway (and, in distributed mode, its workers) with its own data dir and database."""

    tmp: Path
    env: dict[str, str]
    mode: str  # "embedded" | "distributed"
    port: int = field(default_factory=free_port)
    api: Process | None = None
    workers: list[Process] = field(default_factory=list)
    _started: int = 0

    def __post_init__(self) -> None:
        self.env["IMAGEGATE_PORT"] = str(self.port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.env.get("IMAGEGATE_DATABASE_URL") or f"sqlite:///{self.tmp / 'data' / 'imagegate.db'}"

    @property
    def processes(self) -> list[Process]:
        return ([self.api] if self.api else []) + self.workers

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        self._started += 1
        return spawn(name, [str(BIN / "imagegate"), *args], env={**self.env, **(env or {})}, cwd=self.tmp,
                     log=self.tmp / f"{name}-{self._started}.log")

    def cli(self, *args: str) -> str:
        """Run ``imagegate ARGS`` to its end; its stdout (a RuntimeError with both streams if it fails)."""
        done = subprocess.run([str(BIN / "imagegate"), *args], env=self.env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"imagegate {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, *, api_workers: int = 1, workers: int | None = None) -> Stack:
        """Migrate, start the API (``api_workers`` processes) and, in distributed mode, ``workers``
        worker processes (default 1)."""
        self.cli("migrate")
        self.start_api(workers=api_workers)
        for _ in range((1 if workers is None else workers) if self.mode == "distributed" else 0):
            self.start_worker()
        return self

    def start_api(self, *, workers: int = 1, env: dict[str, str] | None = None) -> Process:
        """``imagegate serve`` (``--workers N`` for more than one process), once ``/health`` is 200;
        ``env`` adds to or overrides the stack's settings for this process."""
        self.api = self._spawn("api", "serve", *(["--workers", str(workers)] if workers > 1 else []), env=env)
        try:
            wait_http_ok(self.api, self.base_url + "/health")
        except RuntimeError:
            self.api.stop()
            raise
        return self.api

    def start_worker(self, *, hostname: str | None = None, env: dict[str, str] | None = None,
                     beat: bool = False) -> Process:
        """``imagegate worker`` (``--beat``: with Celery beat), once Celery logs that it is ready;
        ``env`` as for start_api."""
        worker = self._spawn("worker", "worker", "--hostname",
                             hostname or f"w{self._started + 1}-{self.port}@localhost", *(["--beat"] if beat else []),
                             env=env)
        try:
            wait_output(worker, "ready.")
        except RuntimeError:
            worker.stop()
            raise
        self.workers.append(worker)
        return worker

    def create_key(self, name: str, **limits: object) -> str:
        """A new API key, made through the running gateway's admin API (or the CLI when it is down)."""
        if self.api is None or not self.api.running:
            return self.cli("keys", "create", "--name", name).strip().splitlines()[-1]
        response = httpx.post(f"{self.base_url}/admin/keys", json={"name": name, **limits}, timeout=30,
                              headers={"Authorization": f"Bearer {self.env['IMAGEGATE_ADMIN_KEY']}"})
        response.raise_for_status()
        return str(response.json()["secret"])

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.stop(timeout=40)

    def logs(self, tail: int = 6000) -> str:
        return "\n".join(f"--- {p.name} ({p.log.name})\n{p.output()[-tail:]}" for p in self.processes)

    def db(self) -> sa.Engine:
        from core.db import sync_url

        return sa.create_engine(sync_url(self.database_url))

    def rows(self, sql: str, **params: object) -> list[dict[str, Any]]:
        """The rows of one query on the stack's database, as dicts."""
        engine = self.db()
        try:
            with engine.connect() as conn:
                return [dict(row) for row in conn.execute(sa.text(sql), params).mappings()]
        finally:
            engine.dispose()

    def images(self, job_id: str) -> dict[int, dict[str, Any]]:
        """The job's image rows by index: status, attempts, where the bytes are, when it was sent,
        started, leased until and finished, its cost and error."""
        rows = self.rows('SELECT "index", status, attempts, object_key, enqueued_at, started_at, lease_until, '
                         'finished_at, cost_micros, error_code, error_message FROM job_images '
                         'WHERE job_id = :job ORDER BY "index"', job=job_id)
        return {row["index"]: row for row in rows}

    def money(self, key_name: str) -> Money:
        """The key's committed spend and ledger, by its name."""
        [row] = self.rows(
            "SELECT k.committed_micros AS committed, "
            "(SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries WHERE api_key_id = k.id) AS total, "
            "(SELECT COUNT(*) FROM ledger_entries WHERE api_key_id = k.id AND kind = 'charge' "
            "AND amount_micros > 0) AS charges, "
            "(SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries WHERE api_key_id = k.id "
            "AND kind = 'charge') AS charged "
            "FROM api_keys k WHERE k.name = :name", name=key_name)
        return Money(int(row["committed"]), int(row["total"]), int(row["charges"]), int(row["charged"]))

    def stored_files(self, job_id: str) -> list[Path]:
        """The image files stored for the job (one per attempt that delivered)."""
        return sorted((self.tmp / "data" / "images").glob(f"*/{job_id}/*"))

    def count_rows(self) -> dict[str, int]:
        engine = self.db()
        try:
            with engine.connect() as conn:
                return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                        for t in ("jobs", "job_images", "ledger_entries")}
        finally:
            engine.dispose()
