"""Embedded mode: the API and a real Celery worker (thread pool, in-memory transport) in one
process, sharing an in-process event bus. Same tasks, same code path as distributed mode."""

from __future__ import annotations

from fastapi import FastAPI

from api.main import create_app
from core.circuit_redis import open_circuits
from core.config import Settings
from core.events import InProcessEventBus
from worker.celery_app import EmbeddedWorker
from worker.runtime import WorkerRuntime


def create_embedded_app(settings: Settings) -> FastAPI:
    bus = InProcessEventBus()
    circuits = open_circuits(settings)  # the process's own: the worker's, shown by the API
    holder: dict[str, EmbeddedWorker] = {}
    runtime_holder: dict[str, WorkerRuntime] = {}

    def start() -> None:
        runtime = WorkerRuntime.build(settings, events=bus, circuits=circuits)
        worker = EmbeddedWorker(runtime)
        worker.start()
        runtime_holder["runtime"], holder["worker"] = runtime, worker

    def stop() -> None:
        if "worker" in holder:
            holder.pop("worker").stop()
        if "runtime" in runtime_holder:
            runtime_holder.pop("runtime").close()

    def alive() -> bool:
        worker = holder.get("worker")
        return worker is not None and worker.alive

    return create_app(settings, event_bus=bus, worker_alive=alive, on_startup=[start], on_shutdown=[stop],
                      circuits=circuits)
