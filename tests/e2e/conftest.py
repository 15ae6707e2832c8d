"""End-to-end stacks: real uvicorn, real Celery workers, real Redis and PostgreSQL (distributed)
or SQLite with the in-process worker (embedded). Each stack has its own database, data dir and
Redis database number, so stacks never see each other's queues or rows."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.stack import Stack, base_env

pytestmark = pytest.mark.integration

_redis_dbs = itertools.count(3)


@pytest.fixture(scope="session")
def make_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stack]]:
    """``make_stack(mode, **settings)`` starts a gateway (and a worker in distributed mode)."""
    stacks: list[Stack] = []

    def make(mode: str, *, workers: int = 1, start: bool = True, **settings: str) -> Stack:
        tmp: Path = tmp_path_factory.mktemp(f"stack-{mode}")
        env = base_env(tmp, **settings)
        if mode == "distributed":
            db_number = next(_redis_dbs)
            redis_base = request.getfixturevalue("redis_url")
            env.setdefault("IMAGEGATE_REDIS_URL", f"{redis_base}/{db_number}")
            if env["IMAGEGATE_REDIS_URL"].startswith(redis_base):
                redis.Redis.from_url(env["IMAGEGATE_REDIS_URL"]).flushdb()
            env.setdefault("IMAGEGATE_DATABASE_URL", request.getfixturevalue("make_pg_database")())
        stack = Stack(tmp=tmp, env=env, mode=mode)
        stacks.append(stack)
        if start:
            stack.cli("migrate")
            stack.start_api()
            for _ in range(workers if mode == "distributed" else 0):
                stack.start_worker()
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def embedded(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("embedded")


@pytest.fixture(scope="session")
def distributed(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("distributed")


@pytest.fixture(params=["embedded", "distributed"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Each test using it runs once per mode: same code path, two ways to run."""
    return request.getfixturevalue(request.param)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("stack", "embedded", "distributed"):
            value = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(value, Stack):
                report.sections.append((f"imagegate logs ({value.mode})", value.logs()))
                break
