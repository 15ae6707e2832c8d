"""The heartbeat of a worker process: it keeps the leases of the images it runs alive.

A claim gives an image a lease of ``IMAGEGATE_IMAGE_LEASE_S``. While an attempt runs (upstream
calls, retries, fallbacks, storing, recording), :class:`LeaseKeeper` renews the leases of every
image the process holds, every third of the lease, in one statement per beat
(:func:`core.repo.jobs.renew_leases`). So the lease can be short whatever an attempt takes, and
an image whose worker died is taken over once its lease lapses (see ``api/sweeper.py``).

While the database is unreachable the beat is tried again every second, so that a lease is
renewed as soon as the database answers, before anyone else may take the image over.

The heartbeat is an asyncio task on the worker process's event loop (``worker/pool.py``), started
by the first image held; a beat is one short transaction, so it never holds the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models.types import utcnow
from core.repo import jobs

log = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
    """An exception's first line (a database error's is the driver's message, without the SQL)."""
    return (str(exc).splitlines() or [""])[0]


RETRY_WHILE_FAILING_S = 1.0


class LeaseKeeper:
    """The images this process runs, as (id, attempt), and the task that renews their leases. Used
    from one event loop (the worker's), so its bookkeeping needs no lock."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, lease_s: float) -> None:
        self._sessions = sessions
        self.lease_s = lease_s
        self.interval_s = lease_s / 3
        self._held: dict[str, int] = {}
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def holding(self, images: Iterable[tuple[str, int]]) -> Iterator[None]:
        """Keep the leases of ``images`` (id, attempt) alive for the duration of the block (entered
        on the event loop, which runs the heartbeat)."""
        mine = dict(images)
        self._held.update(mine)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imagegate-leases")
        try:
            yield
        finally:
            for image_id, attempt in mine.items():
                if self._held.get(image_id) == attempt:
                    del self._held[image_id]

    @property
    def held(self) -> dict[str, int]:
        return dict(self._held)

    async def beat(self) -> int:
        """Renew every held lease now, in one statement; returns how many were renewed. An image
        that is no longer its attempt's (taken over, canceled, failed) is let go of."""
        held = self.held
        if not held:
            return 0
        async with transaction(self._sessions) as session:
            renewed = set((await session.execute(
                jobs.renew_leases(list(held.items()), now=utcnow(), lease_s=self.lease_s))).scalars())
        # an image whose outcome was recorded while the statement ran was let go of meanwhile
        lost = {image_id for image_id in held.keys() - renewed if self._held.get(image_id) == held[image_id]}
        if lost:
            log.warning("lease of %d image(s) no longer ours (taken over, canceled or failed): %s",
                        len(lost), ", ".join(sorted(lost)))
            for image_id in lost:
                del self._held[image_id]
        return len(renewed)

    def release(self, image_id: str, attempt: int) -> None:
        """Stop renewing one image's lease: its outcome is recorded (its row no longer running)."""
        if self._held.get(image_id) == attempt:
            del self._held[image_id]

    async def _run(self) -> None:
        delay = self.interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await self.beat()
                delay = self.interval_s
            except Exception as exc:
                delay = min(self.interval_s, RETRY_WHILE_FAILING_S)
                log.warning("could not renew the leases of %d image(s) (%s: %s); trying again in %.1f s",
                            len(self._held), type(exc).__name__, first_line(exc), delay)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
