"""core.settlement on a real (SQLite) database: a cancel takes the queued images and those whose
lease expired, never one running under a live lease; the job's counters, status and the ledger
come out exact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import settlement
from core.config import Settings
from core.db import create_sync_engine, sync_sessionmaker
from core.jobs import ImageStatus, JobStatus
from core.migrate import upgrade_head
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry
from core.models.types import utcnow
from tests.worker.factories import hold, make_api_key, make_image, make_job

HOLD = 40_000


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    settings = Settings(data_dir=tmp_path, database_url=None, _env_file=None)  # type: ignore[call-arg]
    upgrade_head(settings)
    engine = create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=1)
    yield sync_sessionmaker(engine)
    engine.dispose()


def held_job(sessions: sessionmaker[Session], images: list[dict[str, object]]) -> tuple[str, str, list[str]]:
    """A job of len(images) images (each with these fields) and its hold: (key id, job id, image ids)."""
    with sessions.begin() as session:
        key = make_api_key(session)
        job = make_job(session, key, n=len(images))
        hold(session, key, job, per_image=HOLD)
        ids = [make_image(session, job, index=i, **fields).id for i, fields in enumerate(images)]  # type: ignore[arg-type]
        return key.id, job.id, ids


def money(sessions: sessionmaker[Session], key_id: str) -> tuple[int, int, int]:
    """(committed spend, sum of the key's ledger rows, release rows)."""
    with sessions() as session:
        committed = session.get_one(ApiKey, key_id).committed_micros
        total = session.scalar(select(func.sum(LedgerEntry.amount_micros)).where(LedgerEntry.api_key_id == key_id))
        releases = session.scalar(select(func.count()).where(LedgerEntry.api_key_id == key_id,
                                                             LedgerEntry.kind == "release"))
        return committed, int(total or 0), int(releases or 0)


def expired(attempts: int) -> dict[str, object]:
    return {"status": ImageStatus.RUNNING, "attempts": attempts, "lease_until": utcnow() - timedelta(seconds=1)}


def live(attempts: int) -> dict[str, object]:
    return {"status": ImageStatus.RUNNING, "attempts": attempts, "lease_until": utcnow() + timedelta(minutes=5)}


def test_cancel_takes_queued_and_expired_images_and_leaves_live_and_finished_ones(
    sessions: sessionmaker[Session],
) -> None:
    key_id, job_id, ids = held_job(sessions, [
        {},                                                # queued
        expired(1),                                        # its worker died
        live(1),                                           # being made
        {"status": ImageStatus.SUCCEEDED, "attempts": 1},  # delivered (its settlement is not this test's)
    ])

    with sessions.begin() as session:
        canceled = settlement.cancel_images(session, job_id, now=utcnow())

    assert sorted(canceled) == sorted([ids[0], ids[1]])
    with sessions() as session:
        statuses = [session.get_one(JobImage, i).status for i in ids]
        job = session.get_one(Job, job_id)
    assert statuses == [ImageStatus.CANCELED, ImageStatus.CANCELED, ImageStatus.RUNNING, ImageStatus.SUCCEEDED]
    assert (job.status, job.canceled) == (JobStatus.QUEUED, 2)
    # the two canceled images' holds came back; the other two still hold theirs
    assert money(sessions, key_id) == (2 * HOLD, 2 * HOLD, 2)

    with sessions.begin() as session:
        assert settlement.cancel_images(session, job_id, now=utcnow()) == []


def test_cancel_of_the_last_images_closes_the_job(sessions: sessionmaker[Session]) -> None:
    key_id, job_id, _ = held_job(sessions, [expired(1), expired(2)])

    with sessions.begin() as session:
        assert len(settlement.cancel_images(session, job_id, now=utcnow())) == 2

    with sessions() as session:
        job = session.get_one(Job, job_id)
    assert (job.status, job.canceled, job.finished_at is not None) == (JobStatus.CANCELED, 2, True)
    assert money(sessions, key_id) == (0, 0, 2)
