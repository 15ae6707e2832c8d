"""The processes a benchmark runs against, started as an operator would start them:

* the bench fake upstream (``python -m bench.fake``), one uvicorn process;
* imagegate, through the test harness (:mod:`tests.harness`): ``imagegate migrate``,
  ``imagegate serve --workers N`` and, in distributed mode, ``imagegate worker`` processes, with a
  fresh PostgreSQL database and a Redis queue of their own (both removed afterwards), or embedded
  mode (SQLite in a temporary data dir, in-process worker).

Everything listens on 127.0.0.1 at free ports. Every wait is bounded; every process started here is
stopped here, by its own pid.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import fake
from tests.harness import (
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    Process,
    Stack,
    base_env,
    create_database,
    database_url,
    drop_databases,
    free_port,
    reachable,
    spawn,
    wait_http_ok,
)

ROOT = Path(__file__).resolve().parents[1]
REDIS_DB = 4


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
                             env=env, cwd=ROOT, log=self.log_dir / "fake-upstream.log")
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
    """One imagegate deployment (:class:`tests.harness.Stack`) set up for the bench: its providers
    pointed at the fake upstream, worker task slots and database pools shared out over its processes,
    and in distributed mode a database and a queue of its own."""

    mode: str  # "distributed" | "embedded"
    upstream: FakeUpstreamProcess
    api_workers: int = 2
    worker_processes: int = 2
    total_concurrency: int = 1024
    log_level: str = "INFO"
    db_connections: int = 80  # PostgreSQL connections for all the processes together (max_connections is 100)
    extra_env: dict[str, str] = field(default_factory=dict)
    stack: Stack = field(init=False)
    database: str | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        self.stack = Stack(tmp=Path(tempfile.mkdtemp(prefix="imagegate-bench-")), env={}, mode=self.mode)

    def _settings(self) -> dict[str, str]:
        per_worker = self.total_concurrency if self.mode == "embedded" else -(-self.total_concurrency
                                                                              // self.worker_processes)
        settings = {
            "IMAGEGATE_LOG_LEVEL": self.log_level,
            "IMAGEGATE_OPENAI_BASE_URL": self.upstream.base_url + "/v1",
            "IMAGEGATE_OPENAI_API_KEY": fake.OPENAI_KEY,
            "IMAGEGATE_GEMINI_BASE_URL": self.upstream.base_url,
            "IMAGEGATE_GEMINI_API_KEY": fake.GEMINI_KEY,
            "IMAGEGATE_WORKER_CONCURRENCY": str(per_worker),
            "IMAGEGATE_UPSTREAM_TIMEOUT_S": "60",
            "IMAGEGATE_SYNC_TIMEOUT_S": "120",
        }
        if self.mode == "distributed":
            # as an operator would: the pools of every process together fit the server's limit
            per_process = max(2, self.db_connections // (self.api_workers + self.worker_processes))
            settings["IMAGEGATE_DB_POOL_SIZE"] = str(per_process)
            settings["IMAGEGATE_DB_MAX_OVERFLOW"] = "0"
            settings["IMAGEGATE_REDIS_URL"] = f"{REDIS_URL}/{REDIS_DB}"
            settings["IMAGEGATE_QUEUE"] = self.queue or ""
            settings["IMAGEGATE_DATABASE_URL"] = database_url(self.database or "")
        return {**settings, **self.extra_env}

    def start(self) -> Gateway:
        if self.mode == "distributed":
            for name, host, port in (("PostgreSQL", PG_HOST, PG_PORT), ("Redis", REDIS_HOST, REDIS_PORT)):
                if not reachable(host, port):
                    raise RuntimeError(f"distributed mode needs {name} on {host}:{port}")
            self.database = create_database("imagegate_bench")
            self.queue = f"imagegate-bench-{uuid.uuid4().hex[:12]}"
        self.stack.env.update(base_env(self.stack.tmp, **self._settings()))
        distributed = self.mode == "distributed"
        self.stack.start(api_workers=self.api_workers if distributed else 1,
                         workers=self.worker_processes if distributed else 0)
        return self

    def log_findings(self, limit: int = 12) -> list[str]:
        """What went wrong, from every process log: exceptions, ERROR and WARNING lines and task
        retries, without timestamps or ids, counted ("37 x ...")."""
        counts: dict[str, int] = {}
        for process in self.stack.processes:
            for line in process.output().splitlines():
                signature = _signature(line)
                if signature:
                    key = f"{process.name}: {signature}"
                    counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
        return [f"{count} x {signature}" for signature, count in ranked]

    def stop(self, *, keep: bool = False) -> None:
        self.stack.stop()
        if self.database:
            drop_databases([self.database])
        self._clear_redis()
        if keep:
            print(f"kept {self.stack.tmp} (logs and images)", file=sys.stderr)
        else:
            shutil.rmtree(self.stack.tmp, ignore_errors=True)

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
