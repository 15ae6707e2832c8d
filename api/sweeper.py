"""Re-sends image tasks that were lost: never sent (broker down at submit), or taken by a worker
that died (lease expired). Runs in every API process; the conditional update in
:func:`core.repo.jobs.requeue_orphans` keeps concurrent sweepers from sending the same image
twice in one window, and a duplicate delivery is harmless anyway (the claim is idempotent)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.enqueue import Enqueuer
from core.models.types import utcnow
from core.repo.jobs import mark_unsent, release_all_running, requeue_orphans

log = logging.getLogger(__name__)


async def sweep_once(
    sessions: async_sessionmaker[AsyncSession], enqueuer: Enqueuer, *, requeue_after_s: float
) -> int:
    async with sessions() as session:
        ids = list((await session.execute(
            requeue_orphans(now=utcnow(), requeue_after_s=requeue_after_s)
        )).scalars())
        await session.commit()
    if ids:
        log.info("sweeper: re-sending %d image task(s)", len(ids))
        if not await enqueuer.send(ids):
            async with sessions() as session:
                await session.execute(mark_unsent(ids))
                await session.commit()
            return 0
    return len(ids)


async def release_embedded_orphans(sessions: async_sessionmaker[AsyncSession], enqueuer: Enqueuer) -> int:
    """Embedded mode at startup: every unfinished image belongs to no living worker."""
    async with sessions() as session:
        ids = list((await session.execute(release_all_running(now=utcnow()))).scalars())
        await session.commit()
    if ids:
        log.info("resuming %d unfinished image(s) from the previous run", len(ids))
        if not await enqueuer.send(ids):
            async with sessions() as session:
                await session.execute(mark_unsent(ids))
                await session.commit()
    return len(ids)


async def run_sweeper(
    sessions: async_sessionmaker[AsyncSession], enqueuer: Enqueuer, *, interval_s: float, requeue_after_s: float
) -> None:
    while True:
        try:
            await sweep_once(sessions, enqueuer, requeue_after_s=requeue_after_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("sweeper pass failed; will retry", exc_info=True)
        await asyncio.sleep(interval_s)
