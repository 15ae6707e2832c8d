"""End-to-end stacks: real uvicorn, real Celery workers, real Redis and PostgreSQL (distributed)
or SQLite with the in-process worker (embedded). Each stack has its own database, data dir and
Redis database number, so stacks never see each other's queues or rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, base_env, env_names, priced_demo

pytestmark = pytest.mark.integration

REDIS_DB = 3
# many stacks share one PostgreSQL during a test session: keep their pools small
SMALL_POOLS = {"IMAGEGATE_DB_POOL_SIZE": "3", "IMAGEGATE_DB_MAX_OVERFLOW": "12"}


@pytest.fixture(scope="session")
def make_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stack]]:
    """``make_stack(mode, **settings)`` starts a gateway (and a worker in distributed mode)."""
    stacks: list[Stack] = []

    def make(mode: str, *, workers: int = 1, start: bool = True, **settings: str) -> Stack:
        tmp: Path = tmp_path_factory.mktemp(f"stack-{mode}")
        env = base_env(tmp, **{**SMALL_POOLS, **settings})
        if mode == "distributed":
            redis_base = request.getfixturevalue("redis_url")
            env.setdefault("IMAGEGATE_REDIS_URL", f"{redis_base}/{REDIS_DB}")
            # a queue of its own: stacks of concurrent test runs never take each other's tasks
            env.setdefault("IMAGEGATE_QUEUE", f"imagegate-test-{uuid.uuid4().hex[:12]}")
            env.setdefault("IMAGEGATE_DATABASE_URL", request.getfixturevalue("make_pg_database")())
        stack = Stack(tmp=tmp, env=env, mode=mode)
        stacks.append(stack)
        if start:
            stack.start(workers=workers)
        return stack

    yield make
    # all at once: each waits for its processes' graceful shutdown
    with ThreadPoolExecutor(max_workers=max(1, len(stacks))) as pool:
        list(pool.map(Stack.stop, stacks))


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


# -- a gateway whose demo model is slow and paid, for following jobs as they run

SLOW_DEMO_S = "0.6"


@pytest.fixture(scope="session")
def slow_embedded(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return make_stack("embedded", IMAGEGATE_DEMO_LATENCY_S=SLOW_DEMO_S, IMAGEGATE_EVENTS_KEEPALIVE_S="0.25",
                      **priced_demo(tmp_path_factory.mktemp("prices")))


@pytest.fixture(scope="session")
def slow_distributed(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return make_stack("distributed", IMAGEGATE_DEMO_LATENCY_S=SLOW_DEMO_S, IMAGEGATE_EVENTS_KEEPALIVE_S="0.25",
                      **priced_demo(tmp_path_factory.mktemp("prices")))


@pytest.fixture(params=["embedded", "distributed"])
def slow(request: pytest.FixtureRequest) -> Stack:
    """A gateway (each mode in turn) whose demo model takes SLOW_DEMO_S per image and costs
    DEMO_USD, with keep-alives on job event streams every quarter second."""
    return request.getfixturevalue(f"slow_{request.param}")


# -- a gateway whose providers are the fake upstream (every family configured)


@pytest.fixture(scope="session")
def gw(make_stack: Callable[..., Stack], fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return make_stack("distributed", **env_names(fake.gateway_settings(tmp_path_factory.mktemp("providers"))))


@pytest.fixture(scope="session")
def key(gw: Stack) -> str:
    return gw.create_key("providers")


@pytest.fixture(scope="session")
def client(gw: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        stacks = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Stack)]
        if stacks:
            report.sections.append((f"imagegate logs ({stacks[0].mode})", stacks[0].logs()))
