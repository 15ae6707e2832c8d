"""Circuit breaking: the pure transitions, and the two stores (memory; Redis, atomic) driven by a
fake clock through a synchronous adapter (tests/core/sync_circuits.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from core.circuit import (
    CircuitPolicy,
    CircuitState,
    MemoryCircuitStore,
    Permit,
    RouteState,
    after_failure,
    counts_as_route_failure,
    permit,
    state_at,
)
from core.circuit_redis import RedisCircuitStore
from core.errors import (
    ContentPolicyError,
    InvalidRequestError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamOverloadedError,
    UpstreamTimeoutError,
)
from tests.core.sync_circuits import SyncCircuits

POLICY = CircuitPolicy(failures=3, cooldown_s=30, probe_lease_s=100)
ROUTE = "gemini:gemini-3-pro-image"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _memory(clock: FakeClock) -> MemoryCircuitStore:
    return MemoryCircuitStore(POLICY, clock=clock)


def _redis(clock: FakeClock) -> RedisCircuitStore:
    from tests.conftest import need_service
    from tests.harness import REDIS_HOST, REDIS_PORT, REDIS_URL

    need_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis.asyncio as aioredis

    return RedisCircuitStore(
        aioredis.Redis.from_url(REDIS_URL + "/5"), POLICY, namespace=f"test-{uuid.uuid4().hex[:12]}", clock=clock
    )


@pytest.fixture(params=[_memory, _redis], ids=["memory", "redis"])
def circuits(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[SyncCircuits]:
    make: Callable[[FakeClock], object] = request.param
    adapter = SyncCircuits(make(clock))  # type: ignore[arg-type]
    yield adapter
    adapter.close()


def _state(circuits: SyncCircuits) -> dict[str, tuple[CircuitState, int]]:
    import asyncio

    views = asyncio.run_coroutine_threadsafe(circuits.store.views(), circuits._loop).result()
    return {v.route: (v.state, v.failures) for v in views}


def test_failures_open_the_circuit_after_the_count(circuits: SyncCircuits) -> None:
    for count in range(2):
        assert circuits.permit(ROUTE) == (Permit.CALL, count)
        circuits.record(ROUTE, failed=True, probe=False)
    assert _state(circuits) == {ROUTE: (CircuitState.CLOSED, 2)}
    assert circuits.permit(ROUTE) == (Permit.CALL, 2)
    circuits.record(ROUTE, failed=True, probe=False)
    assert _state(circuits) == {ROUTE: (CircuitState.OPEN, 3)}
    assert circuits.permit(ROUTE)[0] is Permit.SKIP
    assert circuits.permit("openai:gpt-image-2") == (Permit.CALL, 0)  # per route


def test_an_answer_resets_the_count(circuits: SyncCircuits) -> None:
    for _ in range(2):
        circuits.record(ROUTE, failed=True, probe=False)
    circuits.record(ROUTE, failed=False, probe=False)
    assert _state(circuits) == {}
    for _ in range(2):
        circuits.record(ROUTE, failed=True, probe=False)
    assert circuits.permit(ROUTE) == (Permit.CALL, 2)


def test_one_probe_after_the_cooldown_and_its_success_closes(circuits: SyncCircuits, clock: FakeClock) -> None:
    for _ in range(3):
        circuits.record(ROUTE, failed=True, probe=False)
    clock.now += 29.9
    assert circuits.permit(ROUTE)[0] is Permit.SKIP
    clock.now += 0.2
    assert _state(circuits)[ROUTE][0] is CircuitState.HALF_OPEN
    assert circuits.permit(ROUTE)[0] is Permit.PROBE
    assert [circuits.permit(ROUTE)[0] for _ in range(5)] == [Permit.SKIP] * 5  # exactly one probe
    circuits.record(ROUTE, failed=False, probe=True)
    assert circuits.permit(ROUTE) == (Permit.CALL, 0)
    assert _state(circuits) == {}


def test_a_failed_probe_reopens_for_another_cooldown(circuits: SyncCircuits, clock: FakeClock) -> None:
    for _ in range(3):
        circuits.record(ROUTE, failed=True, probe=False)
    clock.now += 31
    assert circuits.permit(ROUTE)[0] is Permit.PROBE
    circuits.record(ROUTE, failed=True, probe=True)
    assert _state(circuits)[ROUTE] == (CircuitState.OPEN, 4)
    clock.now += 29
    assert circuits.permit(ROUTE)[0] is Permit.SKIP
    clock.now += 2
    assert circuits.permit(ROUTE)[0] is Permit.PROBE


def test_a_lost_probe_frees_the_route_when_its_lease_ends(circuits: SyncCircuits, clock: FakeClock) -> None:
    for _ in range(3):
        circuits.record(ROUTE, failed=True, probe=False)
    clock.now += 31
    assert circuits.permit(ROUTE)[0] is Permit.PROBE  # its worker dies: no record
    clock.now += 99
    assert circuits.permit(ROUTE)[0] is Permit.SKIP
    clock.now += 2
    assert circuits.permit(ROUTE)[0] is Permit.PROBE


def test_a_late_failure_does_not_extend_the_cooldown() -> None:
    opened = after_failure(RouteState(failures=2), 100.0, POLICY, probe=False)
    assert opened.open_until == 130.0
    late = after_failure(opened, 110.0, POLICY, probe=False)
    assert (late.open_until, late.failures) == (130.0, 4)
    assert state_at(late, 129.0) is CircuitState.OPEN and state_at(late, 130.0) is CircuitState.HALF_OPEN
    granted, probing = permit(late, 131.0, POLICY)
    assert granted is Permit.PROBE and probing.probe_until == 231.0


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (UpstreamError("5xx", upstream_status=500, retryable=True), True),
        (UpstreamError("502, not retried", upstream_status=502), True),
        (UpstreamOverloadedError("429 through retries", upstream_status=429, retryable=True), True),
        (UpstreamTimeoutError("timeout", retryable=True), True),
        (UpstreamError("unreachable", retryable=True, code="upstream_unreachable"), True),
        (UpstreamError("bad request", upstream_status=400), False),
        (UpstreamError("key refused", upstream_status=401), False),
        (UpstreamError("model gone", upstream_status=404), False),
        (ContentPolicyError("blocked"), False),
        (InvalidRequestError("caller's error"), False),
        (ServiceUnavailableError("provider not configured"), False),
    ],
)
def test_what_counts_as_a_route_failure(error: Exception, counts: bool) -> None:
    assert counts_as_route_failure(error) is counts  # type: ignore[arg-type]


def test_a_store_that_cannot_be_reached_lets_the_call_through() -> None:
    """Redis down (restarting): the circuit fails open, the call is made and its answer returned,
    as without circuits; it never becomes the image's error."""
    import asyncio

    import redis.asyncio as aioredis

    from core.circuit import guarded

    async def scenario() -> str:
        unreachable = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        store = RedisCircuitStore(unreachable, POLICY, namespace=f"t-{uuid.uuid4().hex}")
        calls = []

        async def call() -> str:
            calls.append(1)
            return "an image"

        try:
            return await guarded(store, ROUTE, "gemini-3-pro-image", call) + f" after {len(calls)} call"
        finally:
            await unreachable.aclose()

    assert asyncio.run(scenario()) == "an image after 1 call"
