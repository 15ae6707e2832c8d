"""core.settlement on a real (SQLite) database: an image out of attempts is failed with its reason
and its hold released; a cancel takes the queued images and those whose lease expired, never one
running under a live lease; the job's counters, status and the ledger come out exact; an image
whose end ends its job says with what status. Rows are written and read with a synchronous
session; settlement runs on the async one, as in the worker and the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from core import settlement
from core.config import Settings
from core.db import async_session_factory, create_async_db_engine, create_sync_engine, sync_sessionmaker
from core.jobs import ImageStatus, JobStatus
from core.migrate import upgrade_head
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry
from core.models.types import utcnow
from tests.worker.factories import hold, make_api_key, make_image, make_job

HOLD = 40_000

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, database_url=None, _env_file=None)  # type: ignore[call-arg]
    upgrade_head(settings)
    return settings


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=1)
    yield sync_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
async def asessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_db_engine(settings.resolved_database_url, pool_size=1, max_overflow=1)
    yield async_session_factory(engine)
    await engine.dispose()


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


async def test_an_expired_lease_on_the_last_attempt_fails_the_image_and_releases_its_hold(
    sessions: sessionmaker[Session], asessions: async_sessionmaker[AsyncSession],
) -> None:
    key_id, job_id, [image_id] = held_job(sessions, [expired(3)])

    async with asessions.begin() as session:
        failed = await settlement.fail_out_of_attempts(session, image_id, now=utcnow(), max_attempts=3)
    assert (failed.job_id, failed.ended) == (job_id, JobStatus.FAILED) and failed.model  # its only image: the job ended

    with sessions() as session:
        image = session.get_one(JobImage, image_id)
        job = session.get_one(Job, job_id)
    assert (image.status, image.attempts, image.error_code) == (ImageStatus.FAILED, 3, "attempts_exhausted")
    assert image.error_message == ("The image could not be made in 3 attempts: none ended with an outcome, and "
                                   "during the last one its worker stopped renewing its lease (the worker died "
                                   "or lost its database).")
    assert image.lease_until is None and image.finished_at is not None
    assert (job.status, job.failed, job.error_code) == (JobStatus.FAILED, 1, "all_images_failed")
    assert money(sessions, key_id) == (0, 0, 1)


async def test_a_queued_image_out_of_attempts_says_the_gateway_restarted(
    sessions: sessionmaker[Session], asessions: async_sessionmaker[AsyncSession],
) -> None:
    # embedded mode puts the images of a killed gateway back in the queue, attempts kept
    _, _, [image_id] = held_job(sessions, [{"status": ImageStatus.QUEUED, "attempts": 2}])

    async with asessions.begin() as session:
        assert await settlement.fail_out_of_attempts(session, image_id, now=utcnow(), max_attempts=2) is not None

    with sessions() as session:
        message = session.get_one(JobImage, image_id).error_message
    assert message is not None and message.startswith("The image could not be made in 2 attempts")
    assert message.endswith("during the last one the gateway restarted while it ran.")


@pytest.mark.parametrize("fields", [
    pytest.param(expired(2), id="an-attempt-left"),
    pytest.param(live(3), id="live-lease"),
    pytest.param({"status": ImageStatus.SUCCEEDED, "attempts": 3}, id="succeeded"),
    pytest.param({"status": ImageStatus.CANCELED, "attempts": 3}, id="canceled"),
])
async def test_an_image_with_an_attempt_left_or_a_live_lease_or_an_end_is_left_alone(
    sessions: sessionmaker[Session], asessions: async_sessionmaker[AsyncSession], fields: dict[str, object]
) -> None:
    key_id, job_id, [image_id] = held_job(sessions, [fields])

    async with asessions.begin() as session:
        assert await settlement.fail_out_of_attempts(session, image_id, now=utcnow(), max_attempts=3) is None

    with sessions() as session:
        image = session.get_one(JobImage, image_id)
        job = session.get_one(Job, job_id)
    assert (image.status, image.error_code) == (fields["status"], None)
    assert (job.status, job.failed) == (JobStatus.QUEUED, 0)
    assert money(sessions, key_id) == (HOLD, HOLD, 0)


async def test_cancel_takes_queued_and_expired_images_and_leaves_live_and_finished_ones(
    sessions: sessionmaker[Session], asessions: async_sessionmaker[AsyncSession],
) -> None:
    key_id, job_id, ids = held_job(sessions, [
        {},                                                # queued
        expired(1),                                        # its worker died
        live(1),                                           # being made
        {"status": ImageStatus.SUCCEEDED, "attempts": 1},  # delivered (its settlement is not this test's)
    ])

    async with asessions.begin() as session:
        canceled = await settlement.cancel_images(session, job_id, now=utcnow())

    assert sorted(canceled.image_ids) == sorted([ids[0], ids[1]]) and canceled.ended is None
    with sessions() as session:
        statuses = [session.get_one(JobImage, i).status for i in ids]
        job = session.get_one(Job, job_id)
    assert statuses == [ImageStatus.CANCELED, ImageStatus.CANCELED, ImageStatus.RUNNING, ImageStatus.SUCCEEDED]
    assert (job.status, job.canceled) == (JobStatus.QUEUED, 2)
    # the two canceled images' holds came back; the other two still hold theirs
    assert money(sessions, key_id) == (2 * HOLD, 2 * HOLD, 2)

    async with asessions.begin() as session:
        assert (await settlement.cancel_images(session, job_id, now=utcnow())).image_ids == []


async def test_cancel_of_the_last_images_closes_the_job(
    sessions: sessionmaker[Session], asessions: async_sessionmaker[AsyncSession],
) -> None:
    key_id, job_id, _ = held_job(sessions, [expired(1), expired(2)])

    async with asessions.begin() as session:
        canceled = await settlement.cancel_images(session, job_id, now=utcnow())
    assert len(canceled.image_ids) == 2 and canceled.ended is JobStatus.CANCELED

    with sessions() as session:
        job = session.get_one(Job, job_id)
    assert (job.status, job.canceled, job.finished_at is not None) == (JobStatus.CANCELED, 2, True)
    assert money(sessions, key_id) == (0, 0, 2)
