"""Embedded mode's broker: kombu's in-memory transport, without its polling delay.

kombu's memory transport (``kombu.transport.memory``) looks for messages by polling: when its
queues are empty it sleeps ``polling_interval`` and looks again, which adds up to that interval to
every image and spins while idle. This transport is the same one (same global, in-process queues,
so the API's sending Celery client and the embedded worker's consumer meet on it) with a doorbell:
a message put, acknowledged or rejected rings it, and a consumer with nothing to take waits for
the bell instead of sleeping. An ack or a reject rings too, because the consumer may have stopped
taking messages at its prefetch limit and can take the next one now.

``core.queue.celery_config`` names it (``broker_transport``) for embedded mode.
"""

from __future__ import annotations

import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import memory

IDLE_WAIT_S = 1.0
"""The longest a consumer waits for the bell before it looks again anyway (a safety net only)."""


class Doorbell:
    """Counts rings; a waiter sleeps until the count moves past the one it saw."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._rings = 0

    @property
    def rings(self) -> int:
        return self._rings

    def ring(self) -> None:
        with self._condition:
            self._rings += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._rings != seen, timeout)


DOORBELL = Doorbell()
"""One per process, like the memory transport's queues."""


class Channel(memory.Channel):
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)
        DOORBELL.ring()

    def _put_fanout(self, exchange: str, message: Any, routing_key: str | None = None, **kwargs: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        DOORBELL.ring()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        DOORBELL.ring()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        DOORBELL.ring()


class Transport(memory.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: Any = None) -> None:  # type: ignore[override]
        """Deliver one message; while there is none to take, wait for the doorbell (kombu's own
        loop with the doorbell in place of its sleep)."""
        started = time.monotonic()
        assert self.cycle is not None
        while True:
            seen = DOORBELL.rings
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            wait = IDLE_WAIT_S
            if timeout is not None:
                remaining = timeout - (time.monotonic() - started)
                if remaining <= 0:
                    raise TimeoutError()
                wait = min(wait, remaining)
            DOORBELL.wait(seen, wait)
