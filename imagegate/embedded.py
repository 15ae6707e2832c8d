"""Embedded mode: the API and a real Celery worker (its event-loop pool running the tasks on the
API's own loop, the in-process transport) in one process, sharing an in-process event bus. Same
tasks, same code path as distributed mode."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from api.main import create_app
from core.circuit_redis import open_circuits
from core.config import Settings
from core.db import settings_engine
from core.events import InProcessEventBus
from worker.celery_app import EmbeddedWorker
from worker.runtime import WorkerRuntime


def create_embedded_app(settings: Settings) -> FastAPI:
    bus = InProcessEventBus()
    circuits = open_circuits(settings)  # the process's own: the worker's, shown by the API
    holder: dict[str, EmbeddedWorker] = {}
    # one engine for both, so one pool for the process: fewer SQLite connections, and each of them
    # drops its page cache whenever another connection has written
    engine = settings_engine(settings)

    def start(loop: asyncio.AbstractEventLoop) -> None:
        worker = EmbeddedWorker(WorkerRuntime.build(settings, events=bus, circuits=circuits, engine=engine),
                                loop=loop)
        worker.start()
        holder["worker"] = worker

    def stop(_loop: asyncio.AbstractEventLoop) -> None:
        # the images in flight end, then the worker's runtime is closed on its event loop
        if "worker" in holder:
            holder.pop("worker").stop()

    def alive() -> bool:
        worker = holder.get("worker")
        return worker is not None and worker.alive

    return create_app(settings, event_bus=bus, worker_alive=alive, on_startup=[start], on_shutdown=[stop],
                      circuits=circuits, engine=engine)
