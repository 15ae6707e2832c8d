"""The worker's Celery app, built from settings (never at import time), and the two ways to run
its worker: ``imagegate worker`` (:func:`run_worker`) and embedded mode (:class:`EmbeddedWorker`).
Both run the tasks on :class:`worker.pool.AsyncioPool`, with the same options
(:func:`worker_options`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from celery import Celery, signals
from celery.worker import WorkController
from prometheus_client import start_http_server

from core import metrics
from core.config import Settings
from core.memory import keep_freed_memory
from core.queue import celery_config
from worker.pool import AsyncioPool, register_loop_closer, register_loop_opener, run_on_loop
from worker.run_job import prepare
from worker.runtime import WorkerRuntime
from worker.tasks import register_tasks


def create_celery_app(runtime: WorkerRuntime, *, keep_logging: bool = False) -> Celery:
    """The app, its tasks bound to ``runtime``, whose clients are opened on the pool's event loop
    as the worker starts and closed there when it shuts down. ``keep_logging``: Celery leaves the
    logging configured by imagegate as it is (the JSON format) instead of installing its own
    handlers on the root logger."""
    app = Celery("imagegate", set_as_current=False)
    app.conf.update(celery_config(runtime.settings))
    register_tasks(app, runtime)
    register_loop_opener(app, runtime.open)
    register_loop_opener(app, lambda: prepare(runtime))
    register_loop_closer(app, runtime.aclose)
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


def worker_options(settings: Settings, *, hostname: str | None) -> dict[str, Any]:
    """The worker's options: the event-loop pool, ``IMAGEGATE_WORKER_CONCURRENCY`` images at
    once (Celery's prefetch limit bounds them), the image queue."""
    options: dict[str, Any] = {
        "pool_cls": AsyncioPool,
        "concurrency": settings.worker_concurrency,
        "queues": [settings.queue],
        "without_mingle": True,
        "without_gossip": True,
    }
    if hostname:
        options["hostname"] = hostname
    return options


def run_worker(app: Celery, runtime: WorkerRuntime, hostname: str | None, *, beat: bool = False) -> int:
    """``imagegate worker``: Celery's worker (banner, signal handlers: SIGTERM is a warm shutdown
    that lets the images in flight end) until it is stopped; returns its exit code. ``beat``: this
    worker also runs Celery beat, which sends the periodic tasks (the retention clean-up); one
    worker of a deployment is enough (a second one's passes are harmless)."""
    settings = runtime.settings
    keep_freed_memory(settings.malloc_keep_mb)  # this process moves megabyte images (core/memory.py)
    extra: dict[str, Any] = {}
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        extra = {"beat": True, "schedule_filename": str(settings.data_dir / "celerybeat-schedule")}
    worker = app.Worker(loglevel=settings.log_level, redirect_stdouts=False,
                        quiet=settings.log_format == "json",  # no banner: every line of the output is JSON
                        **worker_options(settings, hostname=hostname), **extra)
    worker.start()
    return int(worker.exitcode or 0)


_embedded_lock = threading.Lock()
_embedded_running: EmbeddedWorker | None = None


class EmbeddedWorker:
    """A real Celery worker (the event-loop pool) running inside the API process, for embedded
    mode: Celery's consumer on a thread of its own, the tasks on ``loop`` (the API's, see
    :func:`worker.pool.run_on_loop`), or, without one, on a loop of the pool's own.

    It consumes the same tasks from the in-process transport (``imagegate/inprocess_broker.py``)
    that ``imagegate worker`` consumes from Redis; only the transport differs. One embedded worker
    per process at a time (the in-process transport's queues are the process's): a second one is
    refused while the first runs.
    """

    def __init__(self, runtime: WorkerRuntime, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.app = create_celery_app(runtime)
        self.runtime = runtime
        if loop is not None:
            run_on_loop(self.app, loop)
        self._settings = runtime.settings
        self._controller: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> None:
        global _embedded_running
        with _embedded_lock:
            if _embedded_running is not None and _embedded_running.alive:
                raise RuntimeError("an embedded worker is already running in this process")
            _embedded_running = self
        self._controller = WorkController(
            app=self.app,
            without_heartbeat=True,
            ready_callback=lambda _consumer: self._ready.set(),
            loglevel="WARNING",
            **worker_options(self._settings, hostname=None),
        )
        self._thread = threading.Thread(target=self._controller.start, name="imagegate-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded worker did not start")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pool(self) -> AsyncioPool | None:
        """The worker's pool, once it runs."""
        pool = getattr(self._controller, "pool", None)
        return pool if isinstance(pool, AsyncioPool) else None

    def stop(self) -> None:
        """Warm shutdown: the images in flight end, then the runtime's clients are closed."""
        global _embedded_running
        if self._controller is not None:
            self._controller.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with _embedded_lock:
            if _embedded_running is self:
                _embedded_running = None
