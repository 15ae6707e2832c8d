"""A synchronous face of a circuit store, so that the store tests read as a sequence of calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from core.circuit import CircuitStore, Permit, RouteView, _report, circuit_open_error

T = TypeVar("T")


class SyncCircuits:
    """A synchronous face of a :class:`CircuitStore`: the
    store's coroutines run on one event loop owned by this adapter (a daemon thread), so a Redis
    store's connections stay on the loop they were made on."""

    def __init__(self, store: CircuitStore) -> None:
        self.store = store
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="imagegate-circuits", daemon=True)
        self._thread.start()

    def permit(self, route: str) -> tuple[Permit, int]:
        return asyncio.run_coroutine_threadsafe(self.store.permit(route), self._loop).result()

    def record(self, route: str, *, failed: bool, probe: bool) -> None:
        asyncio.run_coroutine_threadsafe(self.store.record(route, failed=failed, probe=probe), self._loop).result()

    def call(self, route: str, model: str, call: Callable[[], T]) -> T:
        """``call()`` in this thread under the route's circuit (see :func:`guarded`)."""
        granted, failures = self.permit(route)
        if granted is Permit.SKIP:
            raise circuit_open_error(model, self.store.policy.cooldown_s)
        try:
            result = call()
        except BaseException as exc:
            failed = _report(self.store, route, granted, failures, error=exc)
            if failed is not None:
                self.record(route, failed=failed, probe=granted is Permit.PROBE)
            raise
        if _report(self.store, route, granted, failures, error=None) is not None:
            self.record(route, failed=False, probe=granted is Permit.PROBE)
        return result

    def views(self) -> list[RouteView]:
        return asyncio.run_coroutine_threadsafe(self.store.views(), self._loop).result()

    def close(self) -> None:
        close = getattr(self.store, "aclose", None)
        if close is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
