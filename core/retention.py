"""The clean-up: what ``IMAGEGATE_RESULT_TTL_S`` and ``IMAGEGATE_INPUT_TTL_S`` keep, and no more.

One pass (:func:`run_retention`), every ``IMAGEGATE_RETENTION_INTERVAL_S`` (the ``retention.sweep``
task, sent by Celery beat in distributed mode and by the API itself in embedded mode):

1. jobs past their retention (ended more than ``IMAGEGATE_RESULT_TTL_S`` ago, or past their own
   shorter ``expires_at``): their objects are deleted from the store, then their image rows, and
   the job row becomes a tombstone (request scrubbed) that answers ``410 Gone``;
2. tombstones older than :data:`TOMBSTONE_S` (or the result TTL, when longer) are deleted;
3. input images no request sent for ``IMAGEGATE_INPUT_TTL_S`` (and none that a job still running
   may read) are forgotten, then deleted from the store.

Each step works in batches of ``IMAGEGATE_RETENTION_BATCH``, one short transaction each, and a
pass is safe to run twice at once or to stop anywhere (a later pass finishes what it left). The
ledger is never deleted: usage reports and balances read it alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.repo import retention
from core.storage import ImageStore, job_prefix

log = logging.getLogger(__name__)

TOMBSTONE_S = 30 * 86400
"""How long an expired job still answers 410 Gone (rather than 404) at the least."""
MAX_BATCHES = 1000
"""A bound on one pass: the next one goes on where it stopped."""


@dataclass
class RetentionReport:
    jobs_expired: int = 0
    tombstones_deleted: int = 0
    inputs_deleted: int = 0


def run_retention(sessions: sessionmaker[Session], store: ImageStore, settings: Settings, *,
                  now: datetime) -> RetentionReport:
    """One pass of the clean-up (see the module docstring)."""
    report = RetentionReport()
    batch = settings.retention_batch
    finished_before = now - timedelta(seconds=settings.result_ttl_s) if settings.result_ttl_s else None
    for _ in range(MAX_BATCHES):
        with sessions() as session:
            ids = list(session.scalars(retention.expired_jobs(now=now, finished_before=finished_before,
                                                              limit=batch)))
        if not ids:
            break
        for job_id in ids:  # objects first: a row is never gone while its bytes remain
            store.delete_prefix(job_prefix(job_id))
        with sessions.begin() as session:
            session.execute(retention.delete_images(ids))
            session.execute(retention.mark_expired(ids, now=now))
        report.jobs_expired += len(ids)
        if len(ids) < batch:
            break
    keep_s = max(TOMBSTONE_S, settings.result_ttl_s or 0)
    for _ in range(MAX_BATCHES):
        with sessions.begin() as session:
            ids = list(session.scalars(retention.old_tombstones(expired_before=now - timedelta(seconds=keep_s),
                                                                limit=batch)))
            if ids:
                session.execute(retention.delete_jobs(ids))
        report.tombstones_deleted += len(ids)
        if len(ids) < batch:
            break
    if settings.input_ttl_s:
        report.inputs_deleted = _forget_inputs(sessions, store, now=now, ttl_s=settings.input_ttl_s, batch=batch)
    if report.jobs_expired or report.tombstones_deleted or report.inputs_deleted:
        log.info("retention: %d job(s) expired, %d tombstone(s) deleted, %d input image(s) deleted",
                 report.jobs_expired, report.tombstones_deleted, report.inputs_deleted)
    return report


def _forget_inputs(sessions: sessionmaker[Session], store: ImageStore, *, now: datetime, ttl_s: int,
                   batch: int) -> int:
    used_before = now - timedelta(seconds=ttl_s)
    with sessions() as session:
        oldest_open = session.scalar(retention.oldest_open_job())
    if oldest_open is not None:
        used_before = min(used_before, oldest_open)
    deleted = 0
    for _ in range(MAX_BATCHES):
        with sessions.begin() as session:
            keys = list(session.scalars(retention.unused_inputs(used_before=used_before, limit=batch)))
        store.delete(keys)
        deleted += len(keys)
        if len(keys) < batch:
            break
    return deleted
