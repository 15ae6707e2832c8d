"""The worker's Celery app, built from settings (never at import time)."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, signals
from celery.worker import WorkController
from prometheus_client import start_http_server

from core import metrics
from core.config import Settings
from core.queue import celery_config
from worker.runtime import WorkerRuntime
from worker.tasks import register_tasks


def create_celery_app(runtime: WorkerRuntime, *, keep_logging: bool = False) -> Celery:
    """The worker's app. ``keep_logging``: Celery leaves the logging configured by imagegate as
    it is (the JSON format) instead of installing its own handlers on the root logger."""
    app = Celery("imagegate", set_as_current=False)
    app.conf.update(celery_config(runtime.settings))
    register_tasks(app, runtime)
    if keep_logging:
        # Celery configures no logging when a receiver of setup_logging is connected
        # (https://docs.celeryq.dev/en/stable/userguide/signals.html#setup-logging)
        signals.setup_logging.connect(_keep_logging, weak=False)
    return app


def _keep_logging(**_: Any) -> None:
    """imagegate's logging is configured already."""


def serve_metrics(host: str, port: int) -> None:
    """This worker's Prometheus metrics on ``http://host:port/metrics`` (a thread of its own)."""
    start_http_server(port, addr=host, registry=metrics.registry())


def worker_argv(settings: Settings, *, hostname: str | None = None, beat: bool = False) -> list[str]:
    """``celery worker`` arguments: a thread pool, because an image call is I/O for minutes.
    ``beat``: this worker also runs Celery beat, which sends the periodic tasks (the retention
    clean-up); one worker of a deployment is enough (a second one's passes are harmless)."""
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={settings.queue}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # no banner: every line of the output is a JSON object
    if beat:
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    return argv


_embedded_lock = threading.Lock()
_embedded_running: EmbeddedWorker | None = None


class EmbeddedWorker:
    """A real Celery worker (thread pool) running inside the API process, for embedded mode.

    It consumes the same tasks from the in-memory transport that ``imagegate worker`` consumes
    from Redis; only the transport differs.

    A pool thread finds the task it runs by name on the process's default Celery app
    (``celery.app.trace.trace_task_ret``), so the worker makes its app the default one, as
    ``imagegate worker`` does through Celery's own start-up (``celery.apps.worker``). Hence one
    embedded worker per process at a time: a second one is refused while the first runs.
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.app = create_celery_app(runtime)
        self._concurrency = runtime.settings.worker_concurrency
        self._queue = runtime.settings.queue
        self._controller: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> None:
        global _embedded_running
        with _embedded_lock:
            if _embedded_running is not None and _embedded_running.alive:
                raise RuntimeError("an embedded worker is already running in this process")
            _embedded_running = self
        self.app.set_default()
        self._controller = WorkController(
            app=self.app,
            pool_cls="threads",
            concurrency=self._concurrency,
            queues=[self._queue],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=lambda _consumer: self._ready.set(),
            loglevel="WARNING",
        )
        self._thread = threading.Thread(target=self._controller.start, name="imagegate-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded worker did not start")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        global _embedded_running
        if self._controller is not None:
            self._controller.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with _embedded_lock:
            if _embedded_running is self:
                _embedded_running = None
