"""Real imagegate processes for end-to-end tests: ``imagegate serve`` (uvicorn) and
``imagegate worker`` (Celery), started as the operator would, on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

BIN = Path(sys.executable).parent
ADMIN_KEY = "test-admin-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Stack:
    """One gateway (and, in distributed mode, its workers) with its own data dir and database."""

    tmp: Path
    env: dict[str, str]
    mode: str
    port: int = field(default_factory=free_port)
    api: Process | None = None
    workers: list[Process] = field(default_factory=list)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.env["IMAGEGATE_PORT"] = str(self.port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.env.get("IMAGEGATE_DATABASE_URL") or f"sqlite:///{self.tmp / 'data' / 'imagegate.db'}"

    def _spawn(self, name: str, *args: str) -> Process:
        self._counter += 1
        log = self.tmp / f"{name}-{self._counter}.log"
        handle = log.open("wb")
        popen = subprocess.Popen([str(BIN / "imagegate"), *args], env=self.env, stdout=handle,
                                 stderr=subprocess.STDOUT, cwd=self.tmp)
        return Process(name, popen, log)

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "imagegate"), *args], env=self.env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"imagegate {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_key(self, name: str, **limits: object) -> str:
        """A new API key, made through the running gateway's admin API (or the CLI when it is down)."""
        if self.api is None or self.api.popen.poll() is not None:
            return self.cli("keys", "create", "--name", name).strip().splitlines()[-1]
        response = httpx.post(f"{self.base_url}/admin/keys", json={"name": name, **limits}, timeout=30,
                              headers={"Authorization": f"Bearer {self.env['IMAGEGATE_ADMIN_KEY']}"})
        response.raise_for_status()
        return str(response.json()["secret"])

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.popen.poll() is not None:
                raise RuntimeError(f"imagegate serve exited:\n{self.api.output()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"imagegate serve did not become healthy:\n{self.api.output()}")

    def start_worker(self) -> Process:
        worker = self._spawn("worker", "worker", "--hostname", f"w{self._counter}-{self.port}@test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"imagegate worker exited:\n{worker.output()}")
            if "ready." in worker.output():
                self.workers.append(worker)
                return worker
            time.sleep(0.2)
        raise RuntimeError(f"imagegate worker did not become ready:\n{worker.output()}")

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        if self.api is not None:
            self.api.kill()

    def logs(self) -> str:
        parts = [f"--- {p.name} ({p.log.name})\n{p.output()[-6000:]}" for p in
                 ([self.api] if self.api else []) + self.workers]
        return "\n".join(parts)

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
            "(SELECT COUNT(*) FROM ledger_entries WHERE api_key_id = k.id AND kind = 'charge') AS charges, "
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


@dataclass(frozen=True)
class Money:
    """A key's money as the database has it, in micro-dollars."""

    committed: int
    """api_keys.committed_micros: open holds plus charges."""
    ledger: int
    """The sum of the key's ledger rows (always equal to ``committed``)."""
    charges: int
    """How many images were charged."""
    charged: int
    """What they were charged, in all."""


DEMO_USD = "0.04"


def priced_demo(tmp: Path, usd: str = DEMO_USD) -> dict[str, str]:
    """Settings under which the demo model costs ``usd`` per image (it is free otherwise), so
    that holds, charges and releases can be counted."""
    path = tmp / "prices.toml"
    path.write_text(f'[[models]]\nid = "demo"\nsource = "test: a paid demo"\neffective = 2026-11-21\n'
                    f'per_image = {{ "*" = {{ "*" = "{usd}" }} }}\n')
    return {"IMAGEGATE_PRICES_FILE": str(path)}


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env.update({
        "IMAGEGATE_DATA_DIR": str(tmp / "data"),
        "IMAGEGATE_LOG_LEVEL": "INFO",
        "IMAGEGATE_ADMIN_KEY": ADMIN_KEY,
        # many stacks share one PostgreSQL during a test session: keep their pools small
        "IMAGEGATE_DB_POOL_SIZE": "3",
        "IMAGEGATE_DB_MAX_OVERFLOW": "12",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env
