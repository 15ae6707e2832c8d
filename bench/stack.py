"""The processes a benchmark runs against, started as an operator would start them:

* the bench fake upstream (``python -m bench.fake``), one uvicorn process;
* imagegate: ``imagegate migrate``, ``imagegate serve`` and, in distributed mode, ``imagegate
  worker`` processes, with a fresh PostgreSQL database and a Redis queue of their own (both
  removed afterwards), or embedded mode (SQLite in a temporary data dir, in-process worker).

Everything listens on 127.0.0.1 at free ports. Every wait is bounded; every process started here is
stopped here, by its own pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench import fake

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql+psycopg://127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB = 4
START_TIMEOUT_S = 60.0


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


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def spawn(name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_dir: Path) -> Process:
    log = log_dir / f"{name}.log"
    with log.open("wb") as handle:
        popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    return Process(name, popen, log)


def wait_http_ok(process: Process, url: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.output()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{process.name} did not answer {url} within {timeout:g} s:\n{process.output()[-4000:]}")


@dataclass
class FakeUpstreamProcess:
    """``python -m bench.fake`` on a free port."""

    log_dir: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstreamProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = spawn("fake-upstream", [sys.executable, "-m", "bench.fake", "--port", str(self.port)],
                             env=env, cwd=ROOT, log_dir=self.log_dir)
        wait_http_ok(self.process, self.base_url + "/_bench/stats")
        return self

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(self.base_url + "/_bench/stats", timeout=5).json())

    def reset(self) -> None:
        httpx.post(self.base_url + "/_bench/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Gateway:
    """One imagegate deployment: its data dir, database, queue, API and workers."""

    mode: str  # "distributed" | "embedded"
    upstream: FakeUpstreamProcess
    api_workers: int = 2
    worker_processes: int = 2
    total_concurrency: int = 256
    log_level: str = "INFO"
    db_connections: int = 80  # PostgreSQL connections for all the processes together (max_connections is 100)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="imagegate-bench-")))
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    api: Process | None = None
    workers: list[Process] = field(default_factory=list)
    database: str | None = None
    queue: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.env.get("IMAGEGATE_DATABASE_URL") or f"sqlite:///{self.tmp / 'data' / 'imagegate.db'}"

    @property
    def processes(self) -> list[Process]:
        return ([self.api] if self.api else []) + self.workers

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        per_worker = self.total_concurrency if self.mode == "embedded" else -(-self.total_concurrency
                                                                              // self.worker_processes)
        env.update({
            "IMAGEGATE_HOST": "127.0.0.1",
            "IMAGEGATE_PORT": str(self.port),
            "IMAGEGATE_DATA_DIR": str(self.tmp / "data"),
            "IMAGEGATE_LOG_LEVEL": self.log_level,
            "IMAGEGATE_OPENAI_BASE_URL": self.upstream.base_url + "/v1",
            "IMAGEGATE_OPENAI_API_KEY": fake.OPENAI_KEY,
            "IMAGEGATE_GEMINI_BASE_URL": self.upstream.base_url,
            "IMAGEGATE_GEMINI_API_KEY": fake.GEMINI_KEY,
            "IMAGEGATE_WORKER_CONCURRENCY": str(per_worker),
            "IMAGEGATE_UPSTREAM_TIMEOUT_S": "60",
            "IMAGEGATE_SYNC_TIMEOUT_S": "120",
            "PYTHONUNBUFFERED": "1",
        })
        if self.mode == "distributed":
            # as an operator would: the pools of every process together fit the server's limit
            per_process = max(2, self.db_connections // (self.api_workers + self.worker_processes))
            env["IMAGEGATE_DB_POOL_SIZE"] = str(per_process // 2)
            env["IMAGEGATE_DB_MAX_OVERFLOW"] = str(per_process - per_process // 2)
            env["IMAGEGATE_REDIS_URL"] = f"{REDIS_URL}/{REDIS_DB}"
            env["IMAGEGATE_QUEUE"] = self.queue or ""
            env["IMAGEGATE_DATABASE_URL"] = f"postgresql://127.0.0.1:5432/{self.database}"
        env.update(self.extra_env)
        return env

    def _admin(self) -> sa.Engine:
        return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def start(self) -> Gateway:
        if self.mode == "distributed":
            for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
                if not reachable("127.0.0.1", port):
                    raise RuntimeError(f"distributed mode needs {name} on 127.0.0.1:{port}")
            self.database = f"imagegate_bench_{uuid.uuid4().hex[:12]}"
            self.queue = f"imagegate-bench-{uuid.uuid4().hex[:12]}"
            admin = self._admin()
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
            finally:
                admin.dispose()
        self.env = self._environment()
        self.cli("migrate")
        serve = [str(BIN / "imagegate"), "serve"]
        if self.mode == "distributed":
            serve += ["--workers", str(self.api_workers)]
        self.api = spawn("api", serve, env=self.env, cwd=self.tmp, log_dir=self.tmp)
        wait_http_ok(self.api, self.base_url + "/health")
        if self.mode == "distributed":
            for i in range(self.worker_processes):
                self.workers.append(self._start_worker(i))
        return self

    def _start_worker(self, i: int) -> Process:
        worker = spawn(f"worker-{i}", [str(BIN / "imagegate"), "worker", "--hostname", f"bench{i}-{self.port}@local"],
                       env=self.env, cwd=self.tmp, log_dir=self.tmp)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"imagegate worker exited:\n{worker.output()[-4000:]}")
            if "ready." in worker.output():
                return worker
            time.sleep(0.2)
        worker.stop()
        raise RuntimeError(f"imagegate worker did not become ready:\n{worker.output()[-4000:]}")

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "imagegate"), *args], env=self.env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"imagegate {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_key(self, name: str = "bench") -> str:
        return self.cli("keys", "create", "--name", name).strip().splitlines()[-1]

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-tail:]}" for p in self.processes)

    def log_findings(self, limit: int = 12) -> list[str]:
        """What went wrong, from every process log: exceptions, ERROR and WARNING lines and task
        retries, without timestamps or ids, counted ("37 x ...")."""
        counts: dict[str, int] = {}
        for process in self.processes:
            for line in process.output().splitlines():
                signature = _signature(line)
                if signature:
                    key = f"{process.name.split('-')[0]}: {signature}"
                    counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
        return [f"{count} x {signature}" for signature, count in ranked]

    def stop(self, *, keep: bool = False) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.stop(timeout=40)
        if self.mode == "distributed":
            self._drop_database()
            self._clear_redis()
        if keep:
            print(f"kept {self.tmp} (logs and images)", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drop_database(self) -> None:
        if not self.database:
            return
        admin = self._admin()
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        finally:
            admin.dispose()

    def _clear_redis(self) -> None:
        """The queue's own keys (the queue, kombu's bindings, unacked entries naming it)."""
        if not self.queue:
            return
        import redis

        client = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
        try:
            keys = list(client.scan_iter(match=f"*{self.queue}*", count=1000))[:10_000]
            if keys:
                client.delete(*keys)
            # Celery's remote-control binding, left by the workers in this bench-only database
            if set(client.zrange("_kombu.binding_deadlines", 0, 10)) <= {b"celery.pidbox"}:
                client.delete("_kombu.binding_deadlines")
        finally:
            client.close()


_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Detected|Timeout)\b[:(]?")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
_IDS = re.compile(r"\b(?:job|img)_[0-9a-f]{8,}|\[[0-9a-f-]{36}\]|\b\d+\.\d{3,}s\b")


def _signature(line: str) -> str | None:
    """A log line as a countable signature (ids and durations removed), or None if unremarkable."""
    if "retry: Retry in" in line:
        return "task retried: " + _IDS.sub("*", re.sub(r"^Retry in \d+s: ", "", line.split("retry: ", 1)[1]))[:150]
    if _EXCEPTION.match(line):
        return line[:160]
    text = _STAMP.sub("", line)
    if text.startswith(("ERROR ", "CRITICAL ", "WARNING ")):
        return _IDS.sub("*", text)[:160]
    return None
