"""The worker's unit tests run against a real, migrated SQLite database and a real runtime, on
the test's own event loop (anyio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.events import InProcessEventBus
from core.migrate import upgrade_head
from tests.worker.factories import dispose_engines
from worker.runtime import WorkerRuntime


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _test_engines() -> Iterator[None]:
    """The synchronous engines the tests read rows with (tests.worker.factories.db), per test."""
    yield
    dispose_engines()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A migrated SQLite database in tmp_path; values that matter set explicitly, so that
    IMAGEGATE_* variables of the machine running the tests change nothing."""
    s = Settings(
        data_dir=tmp_path, database_url=None, redis_url=None, demo_latency_s=0.0,
        image_lease_s=900.0, image_max_attempts=3, gemini_api_key=None, openai_api_key=None,
        vertex_credentials_file=None, vertex_project=None, chat_upstream_base_url=None, models_file=None,
        default_model=None, _env_file=None,
    )
    upgrade_head(s)
    return s


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[WorkerRuntime]:
    rt = WorkerRuntime.build(settings, events=InProcessEventBus())
    yield rt
    await rt.aclose()


@pytest.fixture
def events(runtime: WorkerRuntime) -> list[tuple[str, str | None]]:
    """Events published on the runtime's event bus, in order: (job id, terminal status or None)."""
    seen: list[tuple[str, str | None]] = []
    assert isinstance(runtime.events, InProcessEventBus)
    runtime.events.subscribe_status(lambda job_id, ended: seen.append((job_id, ended)))
    return seen


@pytest.fixture
def published(runtime: WorkerRuntime) -> list[str]:
    """Job ids published on the runtime's event bus, in order."""
    seen: list[str] = []
    assert isinstance(runtime.events, InProcessEventBus)
    runtime.events.subscribe(seen.append)
    return seen
