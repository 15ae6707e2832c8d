"""Finds the images nothing is making and sees that they end. Runs in every API process, every
``IMAGEGATE_SWEEP_INTERVAL_S``:

- an image whose lease expired during its last allowed attempt (``IMAGEGATE_IMAGE_MAX_ATTEMPTS``)
  is failed and its hold released (:func:`core.settlement.fail_out_of_attempts`);
- an image whose task was lost is sent again: never sent (the broker was down at submit), queued
  for ``IMAGEGATE_REQUEUE_AFTER_S``, or taken by a worker that died (its lease expired);

The conditional updates of :mod:`core.repo.jobs` keep concurrent sweepers from sending the same
image twice in one window, and a duplicate delivery is harmless anyway (the claim is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from api.enqueue import Enqueuer
from core import settlement
from core.models.types import utcnow
from core.repo.jobs import (
    expired_on_last_attempt,
    mark_unsent,
    release_all_running,
    requeue_orphans,
)

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class Sweeper:
    sessions: async_sessionmaker[AsyncSession]
    enqueuer: Enqueuer
    requeue_after_s: float
    max_attempts: int
    on_job_changed: Callable[[str], None] = field(default=lambda job_id: None)

    async def sweep_once(self) -> int:
        """One pass; returns how many image tasks were sent."""
        await self._fail_out_of_attempts()
        return await self._mark_and_send(
            requeue_orphans(now=utcnow(), requeue_after_s=self.requeue_after_s, max_attempts=self.max_attempts,
                            limit=BATCH))

    async def run(self, *, interval_s: float) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("sweeper pass failed; will retry", exc_info=True)
            await asyncio.sleep(interval_s)

    async def _fail_out_of_attempts(self) -> None:
        now = utcnow()
        async with self.sessions() as session:
            ids = list((await session.execute(
                expired_on_last_attempt(now=now, max_attempts=self.max_attempts))).scalars())
        for image_id in ids:
            # one transaction per image: its row, its job's, its key's, in that order
            async with self.sessions.begin() as session:
                job_id = await session.run_sync(_fail, image_id, now, self.max_attempts)
            if job_id is not None:
                self.on_job_changed(job_id)

    async def _mark_and_send(self, mark: ReturningUpdate[str]) -> int:
        async with self.sessions() as session:
            ids = list((await session.execute(mark)).scalars())
            await session.commit()
        if not ids:
            return 0
        log.info("sweeper: sending %d image task(s)", len(ids))
        return len(ids) if await _send(self.sessions, self.enqueuer, ids) else 0


def _fail(session: Session, image_id: str, now: datetime, max_attempts: int) -> str | None:
    return settlement.fail_out_of_attempts(session, image_id, now=now, max_attempts=max_attempts)


async def _send(sessions: async_sessionmaker[AsyncSession], enqueuer: Enqueuer, ids: Sequence[str]) -> bool:
    """Send the images' tasks; if the broker cannot take them, leave them for the next pass."""
    if await enqueuer.send(ids):
        return True
    async with sessions() as session:
        await session.execute(mark_unsent(list(ids)))
        await session.commit()
    return False


async def release_embedded_orphans(sessions: async_sessionmaker[AsyncSession], enqueuer: Enqueuer) -> int:
    """Embedded mode at startup: every unfinished image belongs to no living worker."""
    async with sessions() as session:
        ids = list((await session.execute(release_all_running(now=utcnow()))).scalars())
        await session.commit()
    if ids:
        log.info("resuming %d unfinished image(s) from the previous run", len(ids))
        await _send(sessions, enqueuer, ids)
    return len(ids)
