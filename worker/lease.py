"""The heartbeat of a worker process: it keeps the leases of the images it runs alive.

A claim gives an image a lease of ``IMAGEGATE_IMAGE_LEASE_S``. While an attempt runs (upstream
calls, retries, fallbacks, storing, recording), :class:`LeaseKeeper` renews the leases of every
image the process holds, every third of the lease, in one statement per beat
(:func:`core.repo.jobs.renew_leases`). So the lease can be short whatever an attempt takes, and
an image whose worker died is taken over once its lease lapses (see ``api/sweeper.py``).

While the database is unreachable the beat is tried again every second, so that a lease is
renewed as soon as the database answers, before anyone else may take the image over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator

from sqlalchemy.orm import Session, sessionmaker

from core.models.types import utcnow
from core.repo import jobs

log = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
    """An exception's first line (a database error's is the driver's message, without the SQL)."""
    return (str(exc).splitlines() or [""])[0]


RETRY_WHILE_FAILING_S = 1.0


class LeaseKeeper:
    """The images this process runs, as (id, attempt), and the thread that renews their leases."""

    def __init__(self, sessions: sessionmaker[Session], *, lease_s: float) -> None:
        self._sessions = sessions
        self.lease_s = lease_s
        self.interval_s = lease_s / 3
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, images: Iterable[tuple[str, int]]) -> Iterator[None]:
        """Keep the leases of ``images`` (id, attempt) alive for the duration of the block."""
        mine = dict(images)
        with self._lock:
            self._held.update(mine)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="imagegate-leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                for image_id, attempt in mine.items():
                    if self._held.get(image_id) == attempt:
                        del self._held[image_id]

    @property
    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)

    def beat(self) -> int:
        """Renew every held lease now, in one statement; returns how many were renewed. An image
        that is no longer its attempt's (taken over, canceled, failed) is let go of."""
        held = self.held
        if not held:
            return 0
        with self._sessions.begin() as session:
            renewed = set(session.execute(
                jobs.renew_leases(list(held.items()), now=utcnow(), lease_s=self.lease_s)).scalars())
        lost = held.keys() - renewed
        if lost:
            log.warning("lease of %d image(s) no longer ours (taken over, canceled or failed): %s",
                        len(lost), ", ".join(sorted(lost)))
            with self._lock:
                for image_id in lost:
                    if self._held.get(image_id) == held[image_id]:
                        del self._held[image_id]
        return len(renewed)

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.wait(delay):
            try:
                self.beat()
                delay = self.interval_s
            except Exception as exc:
                delay = min(self.interval_s, RETRY_WHILE_FAILING_S)
                log.warning("could not renew the leases of %d image(s) (%s: %s); trying again in %.1f s",
                            len(self.held), type(exc).__name__, first_line(exc), delay)

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
