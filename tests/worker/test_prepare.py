"""A worker does its one-time work as it starts (worker.run_job.prepare), not on its first
image's way to the upstream: the TLS settings of upstream connections, Pillow's format plugins."""

from __future__ import annotations

import pytest
from PIL import Image

from core.config import Settings
from core.events import InProcessEventBus
from worker.providers import http
from worker.run_job import prepare
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.anyio


async def test_a_starting_worker_loads_what_its_first_image_would(settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    http.ssl_context.cache_clear()
    monkeypatch.setattr(Image, "_initialized", 0)  # as in a fresh process: no plugin imported yet
    runtime = WorkerRuntime.build(settings, events=InProcessEventBus())
    try:
        await prepare(runtime, connections=3)
    finally:
        await runtime.aclose()

    assert http.ssl_context.cache_info().currsize == 1
    assert Image._initialized == 2  # type: ignore[attr-defined]
    assert {"PNG", "JPEG", "WEBP", "GIF"} <= set(Image.SAVE)
