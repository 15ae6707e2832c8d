"""Finds the images nothing is making and sees that they end. Runs in every API process, every
``IMAGEGATE_SWEEP_INTERVAL_S``:

- an image whose lease expired during its last allowed attempt (``IMAGEGATE_IMAGE_MAX_ATTEMPTS``)
  is failed and its hold released (:func:`core.settlement.fail_out_of_attempts`);
- an image whose task was lost is sent again: never sent (the broker was down at submit), queued
  for ``IMAGEGATE_REQUEUE_AFTER_S``, or taken by a worker that died (its lease expired);
- when the broker (Redis) restarted, or answers again after being unreachable, its queue may be
  gone: every image waiting for a task is sent again at once (:class:`BrokerWatch`);
- webhook deliveries that are due (a job just ended, or a retry's backoff has passed) get their
  task (:func:`core.repo.webhooks.claim_due`).

In embedded mode the API also sends the retention clean-up's task every
``IMAGEGATE_RETENTION_INTERVAL_S`` (:func:`send_periodically`; distributed mode has Celery beat).

The conditional updates of :mod:`core.repo.jobs` keep concurrent sweepers from sending the same
image twice in one window, and a duplicate delivery is harmless anyway (the claim is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningUpdate

from api.enqueue import Enqueuer
from core import logcontext, metrics, settlement
from core.db import transaction
from core.models.types import utcnow
from core.queue import DELIVER_WEBHOOK_TASK
from core.repo import webhooks
from core.repo.jobs import (
    expired_on_last_attempt,
    mark_unsent,
    release_all_running,
    requeue_orphans,
    requeue_waiting,
)

log = logging.getLogger(__name__)

BATCH = 500


class BrokerWatch:
    """Tells when the broker may have lost its queue: Redis restarted (the ``run_id`` of its
    ``INFO server`` changed; a Redis without persistence comes back empty), or it answers again
    after being unreachable (a failover, a restart this process did not see)."""

    def __init__(self, client: aioredis.Redis, *, timeout_s: float = 3.0) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._run_id: str | None = None
        self._unreachable = False

    async def queue_may_be_lost(self) -> bool:
        try:
            info = await self._server_info()
        except Exception as exc:
            if not self._unreachable:
                log.warning("sweeper: the broker does not answer (%s)", type(exc).__name__)
            self._unreachable = True
            return False
        run_id = str(info.get("run_id", ""))
        lost = self._unreachable or (self._run_id is not None and run_id != self._run_id)
        if lost:
            log.warning("sweeper: the broker %s; its queued tasks may be gone",
                        "answers again" if self._unreachable else "restarted")
        self._run_id, self._unreachable = run_id, False
        return lost

    async def _server_info(self) -> dict[str, object]:
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(self._timeout_s):
                    return dict(await self._client.info("server"))
            except aioredis.ConnectionError:
                # after a restart, the first command finds its pooled connection closed
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@dataclass
class Sweeper:
    sessions: async_sessionmaker[AsyncSession]
    enqueuer: Enqueuer
    requeue_after_s: float
    max_attempts: int
    broker: BrokerWatch | None = None
    """Distributed mode; embedded mode's in-memory queue lives and dies with the process."""
    on_job_changed: Callable[[str], None] = field(default=lambda job_id: None)

    async def sweep_once(self) -> int:
        """One pass; returns how many image tasks were sent."""
        sent = 0
        if self.broker is not None and await self.broker.queue_may_be_lost():
            sent += await self._send_all_waiting()
        await self._fail_out_of_attempts()
        now = utcnow()
        sent += await self._mark_and_send(
            requeue_orphans(now=now, requeue_after_s=self.requeue_after_s, max_attempts=self.max_attempts,
                            limit=BATCH))
        await self.dispatch_webhooks()
        return sent

    async def dispatch_webhooks(self) -> int:
        """Send a task for each webhook delivery that is due; returns how many. A task the broker
        does not take is sent again once its claim lapses."""
        async with self.sessions() as session:
            ids = list((await session.execute(webhooks.claim_due(now=utcnow(), limit=BATCH))).scalars())
            await session.commit()
        if ids:
            await self.enqueuer.send(ids, task=DELIVER_WEBHOOK_TASK)
        return len(ids)

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
            async with transaction(self.sessions) as session:
                failed = await settlement.fail_out_of_attempts(session, image_id, now=now,
                                                               max_attempts=self.max_attempts)
            if failed is not None:
                metrics.count_settled("failed", failed.model, 1, job_ended=failed.ended.value if failed.ended else None)
                with logcontext.bound(job_id=failed.job_id, image_id=image_id):
                    log.warning("sweeper: the image's last attempt lapsed; it fails (%s)",
                                settlement.ATTEMPTS_EXHAUSTED)
                self.on_job_changed(failed.job_id)

    async def _send_all_waiting(self) -> int:
        now, sent = utcnow(), 0
        while True:
            batch = await self._mark_and_send(requeue_waiting(now=now, max_attempts=self.max_attempts, limit=BATCH))
            sent += batch
            if batch < BATCH:
                log.info("sweeper: %d waiting image task(s) sent again after the broker came back", sent)
                return sent

    async def _mark_and_send(self, mark: ReturningUpdate[str]) -> int:
        async with self.sessions() as session:
            ids = list((await session.execute(mark)).scalars())
            await session.commit()
        if not ids:
            return 0
        log.info("sweeper: sending %d image task(s)", len(ids))
        return len(ids) if await _send(self.sessions, self.enqueuer, ids) else 0


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


async def send_periodically(enqueuer: Enqueuer, task: str, *, interval_s: float) -> None:
    """Send ``task`` (without arguments) every ``interval_s``, the first time at once: embedded
    mode's scheduler of the retention clean-up."""
    while True:
        await enqueuer.send([""], task=task)
        await asyncio.sleep(interval_s)
