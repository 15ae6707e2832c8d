"""Circuit breaking per upstream route: an upstream that is down costs one probe per cool-down.

A *route* is one upstream model behind one provider protocol (``gemini:gemini-3-pro-image``).
Each route's circuit is in one of three states:

- **closed**: calls go through; each route failure counts, each answer resets the count;
- **open**: after ``IMAGEGATE_CIRCUIT_FAILURES`` consecutive route failures, for
  ``IMAGEGATE_CIRCUIT_COOLDOWN_S``: no call is made, images go straight to the next route of
  their planned fallback chain, or fail with ``upstream_unavailable`` (503) when there is none;
- **half-open**: once the cool-down is over, exactly one call (the *probe*) is let through, under
  a probe lease; everyone else still skips the route. The probe's answer closes the circuit, its
  failure opens it for another cool-down. A probe whose worker died frees the route when its
  lease (``probe_lease_s``) runs out.

What counts (:func:`counts_as_route_failure`): a route failure after the provider's own retries —
a 5xx, a timeout, a connection error, a 429 that outlasted every retry (the upstream is shedding
load; sending it more makes it worse). What never counts: a content-policy refusal, the caller's
own error (any other 4xx), and refused credentials or an unknown model (401/403/404: a
configuration error, which the fallback chain handles without hiding it behind a circuit).

The transitions are the pure functions of this module, on :class:`RouteState` and an explicit
time, so that tests drive them with a fake clock. Two stores keep the state:
:class:`MemoryCircuitStore` (one process: embedded mode) and
:class:`core.circuit_redis.RedisCircuitStore` (every worker of a distributed gateway, atomically,
in Lua scripts that mirror these functions). Both have ``async`` methods; a synchronous caller
goes through an adapter that runs them on an event loop of its own.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from core.errors import ContentPolicyError, GatewayError, ServiceUnavailableError, UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``); tests pass a fake one."""


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit(enum.StrEnum):
    """What a caller may do with a route now."""

    CALL = "call"
    """The circuit is closed: call."""
    PROBE = "probe"
    """The cool-down is over and this caller holds the one probe: call, and report the result."""
    SKIP = "skip"
    """Open, or half-open with another caller's probe in flight: do not call."""


STATE_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
"""The number each state is graphed as (``imagegate_circuit_state``)."""


@dataclass(frozen=True)
class CircuitPolicy:
    failures: int = 5
    """Consecutive route failures that open the circuit."""
    cooldown_s: float = 30.0
    """How long an open circuit stays open before one probe is let through."""
    probe_lease_s: float = 600.0
    """How long a probe may take before another caller may probe instead (its worker died)."""


@dataclass(frozen=True)
class RouteState:
    failures: int = 0
    open_until: float = 0.0
    """0 while closed; else when the cool-down ends."""
    probe_until: float = 0.0
    """While later than now, a probe is in flight."""


CLOSED = RouteState()


def state_at(state: RouteState, now: float) -> CircuitState:
    if not state.open_until:
        return CircuitState.CLOSED
    return CircuitState.OPEN if now < state.open_until else CircuitState.HALF_OPEN


def permit(state: RouteState, now: float, policy: CircuitPolicy) -> tuple[Permit, RouteState]:
    """Whether a caller may call the route at ``now``, and the state after it asked."""
    current = state_at(state, now)
    if current is CircuitState.CLOSED:
        return Permit.CALL, state
    if current is CircuitState.OPEN or state.probe_until > now:
        return Permit.SKIP, state
    return Permit.PROBE, replace(state, probe_until=now + policy.probe_lease_s)


def after_failure(state: RouteState, now: float, policy: CircuitPolicy, *, probe: bool) -> RouteState:
    """The state after a route failure. A failed probe re-opens the circuit; a call that was in
    flight when it opened leaves the cool-down as it is."""
    failures = state.failures + 1
    if probe or (not state.open_until and failures >= policy.failures):
        return RouteState(failures=failures, open_until=now + policy.cooldown_s)
    return replace(state, failures=failures)


def after_success(state: RouteState) -> RouteState:
    """The route answered: closed, count reset."""
    return CLOSED


def counts_as_route_failure(error: GatewayError) -> bool:
    """Whether ``error`` (what a route's call raised, after its retries) counts against the route."""
    if not isinstance(error, UpstreamError) or isinstance(error, ContentPolicyError):
        return False
    status = error.upstream_status
    if status is None:
        return error.retryable  # a timeout, a connection error, a broken answer through every retry
    return status >= 500 or status == 429


def route_key(provider: str, upstream_model: str) -> str:
    return f"{provider}:{upstream_model}"


@dataclass(frozen=True)
class RouteView:
    """One route's circuit as /health and the metrics show it."""

    route: str
    state: CircuitState
    failures: int
    retry_in_s: float
    """Seconds until the cool-down ends (0 unless open)."""

    @classmethod
    def of(cls, route: str, state: RouteState, now: float) -> RouteView:
        current = state_at(state, now)
        wait = max(0.0, state.open_until - now) if current is CircuitState.OPEN else 0.0
        return cls(route, current, state.failures, round(wait, 3))


class CircuitStore(Protocol):
    """Where circuits live: one process (memory) or every worker (Redis)."""

    policy: CircuitPolicy

    async def permit(self, route: str) -> tuple[Permit, int]:
        """The permit for a call on ``route`` now, and the route's failure count."""
        ...

    async def record(self, route: str, *, failed: bool, probe: bool) -> None:
        """The outcome of a call made under a permit."""
        ...

    async def views(self) -> list[RouteView]:
        """Every route with a circuit that is not closed and clean, sorted by route."""
        ...


class MemoryCircuitStore:
    """Circuits of one process (embedded mode): the pure transitions under a lock."""

    def __init__(self, policy: CircuitPolicy, *, clock: Clock = time.time) -> None:
        self.policy = policy
        self._clock = clock
        self._states: dict[str, RouteState] = {}
        self._lock = threading.Lock()

    async def permit(self, route: str) -> tuple[Permit, int]:
        with self._lock:
            state = self._states.get(route, CLOSED)
            granted, after = permit(state, self._clock(), self.policy)
            if after is not state:
                self._states[route] = after
            return granted, state.failures

    async def record(self, route: str, *, failed: bool, probe: bool) -> None:
        with self._lock:
            state = self._states.get(route, CLOSED)
            if failed:
                self._states[route] = after_failure(state, self._clock(), self.policy, probe=probe)
            else:
                self._states.pop(route, None)

    async def views(self) -> list[RouteView]:
        with self._lock:
            now = self._clock()
            return [RouteView.of(route, state, now) for route, state in sorted(self._states.items())]


class CircuitOpenError(ServiceUnavailableError):
    """Every route left to an image has an open circuit."""

    default_code = "upstream_unavailable"


def circuit_open_error(model: str, cooldown_s: float) -> CircuitOpenError:
    return CircuitOpenError(
        f"The upstream of {model} failed repeatedly and is paused (up to {cooldown_s:g} s between "
        "probes), and no fallback route is available; try again later."
    )


def _report(
    store: CircuitStore, route: str, granted: Permit, failures: int, *, error: BaseException | None
) -> bool | None:
    """Whether to record the call's outcome as a failure (``True``) or an answer (``False``), or
    ``None`` when nothing changes: an answer on a clean closed circuit (the common case, no
    write), or an outcome that says nothing about the route (an unexpected crash, unless it ended
    a probe, which must not keep the route half-open until its lease ends)."""
    if error is None:
        return False if granted is Permit.PROBE or failures else None
    if isinstance(error, GatewayError):
        failed = counts_as_route_failure(error)
    else:
        failed = granted is Permit.PROBE
        if not failed:
            return None
    policy = store.policy
    if failed and (granted is Permit.PROBE or failures + 1 == policy.failures):
        log.warning(
            "circuit of route %s opens for %g s after %d consecutive failure(s)%s",
            route,
            policy.cooldown_s,
            failures + 1,
            " (its probe failed)" if granted is Permit.PROBE else "",
        )
    elif not failed and failures:
        log.info("circuit of route %s closes: the route answered", route)
    return failed


async def guarded(store: CircuitStore, route: str, model: str, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()`` under the route's circuit: :class:`CircuitOpenError` (without calling)
    while it is open, and the outcome recorded. The one hook an async caller needs. A store that
    cannot be reached fails open: the call goes ahead, as it would without circuits."""
    try:
        granted, failures = await store.permit(route)
    except Exception as exc:  # the store is down (Redis restarting): the circuit fails open
        log.warning("circuit of route %s unknown (%s): the call goes ahead", route, type(exc).__name__)
        return await call()
    if granted is Permit.SKIP:
        raise circuit_open_error(model, store.policy.cooldown_s)
    try:
        result = await call()
    except BaseException as exc:
        failed = _report(store, route, granted, failures, error=exc)
        if failed is not None:
            await _record(store, route, failed=failed, probe=granted is Permit.PROBE)
        raise
    if _report(store, route, granted, failures, error=None) is not None:
        await _record(store, route, failed=False, probe=granted is Permit.PROBE)
    return result


async def _record(store: CircuitStore, route: str, *, failed: bool, probe: bool) -> None:
    """Record an outcome; a store that is down loses it (a probe's lease then frees the route)
    rather than turning the call's outcome into an error."""
    try:
        await store.record(route, failed=failed, probe=probe)
    except Exception as exc:
        log.warning("circuit of route %s: the outcome could not be recorded (%s)", route, type(exc).__name__)
