"""The sweeper on a real database (SQLite) and a real Redis of the test's own: an expired lease on
an image's last attempt fails it (hold released) instead of sending it again; an expired lease
with an attempt left is sent again; a broker that restarted, or answers again after being down,
gets every waiting image's task at once, not IMAGEGATE_REQUEUE_AFTER_S later."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.enqueue import Enqueuer
from api.sweeper import BrokerWatch, Sweeper
from core.config import Settings
from core.db import async_session_factory, create_async_db_engine, create_sync_engine, sync_sessionmaker
from core.jobs import ImageStatus, JobStatus
from core.migrate import upgrade_head
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry
from core.models.types import utcnow
from tests.outage import RedisServer
from tests.worker.factories import hold, make_api_key, make_image, make_job

pytestmark = pytest.mark.integration

QUEUE = "imagegate-sweeper-test"


@pytest.fixture
def settings(tmp_path: Path, own_redis: RedisServer) -> Settings:
    s = Settings(data_dir=tmp_path, database_url=None, redis_url=own_redis.url(0), queue=QUEUE,
                 image_max_attempts=3, requeue_after_s=300, _env_file=None)  # type: ignore[call-arg]
    upgrade_head(s)
    return s


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=1)
    yield sync_sessionmaker(engine)
    engine.dispose()


def sent(own_redis: RedisServer) -> list[str]:
    """The image ids of the tasks waiting in the broker's queue (kombu's Redis list)."""
    client = redis.Redis.from_url(own_redis.url(0))
    ids = []
    for raw in client.lrange(QUEUE, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.append(body[0][0])
    return sorted(ids)


def sweep(settings: Settings, broker: RedisServer, steps: list[str]) -> list[int]:
    """Sweeper passes ("sweep") of one sweeper, as one API process runs them, with the broker
    "restart"-ed, "stop"-ped or "start"-ed between them. Returns what each pass sent."""

    async def main() -> list[int]:
        engine = create_async_db_engine(settings.resolved_database_url, pool_size=1, max_overflow=1)
        client = aioredis.Redis.from_url(broker.url(0))
        enqueuer = Enqueuer(settings)
        sweeper = Sweeper(async_session_factory(engine), enqueuer, requeue_after_s=settings.requeue_after_s,
                          max_attempts=settings.image_max_attempts, broker=BrokerWatch(client, timeout_s=1))
        counts = []
        try:
            for step in steps:
                if step == "sweep":
                    counts.append(await sweeper.sweep_once())
                else:
                    await asyncio.to_thread(getattr(broker, step))
        finally:
            await enqueuer.aclose()
            await client.aclose()
            await engine.dispose()
        return counts

    return asyncio.run(main())


def test_an_expired_lease_on_the_last_attempt_fails_instead_of_being_sent_again(
    settings: Settings, sessions: sessionmaker[Session], own_redis: RedisServer
) -> None:
    expired = utcnow() - timedelta(seconds=1)
    with sessions.begin() as session:
        key = make_api_key(session)
        job = make_job(session, key, n=2)
        hold(session, key, job, per_image=25_000)
        last = make_image(session, job, index=0, status=ImageStatus.RUNNING, attempts=3, lease_until=expired,
                          enqueued_at=expired - timedelta(seconds=60)).id
        again = make_image(session, job, index=1, status=ImageStatus.RUNNING, attempts=2, lease_until=expired,
                           enqueued_at=expired - timedelta(seconds=60)).id
        job_id, key_id = job.id, key.id

    assert sweep(settings, own_redis, ["sweep", "sweep"]) == [1, 0]

    assert sent(own_redis) == [again]
    with sessions() as session:
        failed = session.get_one(JobImage, last)
        assert (failed.status, failed.error_code) == (ImageStatus.FAILED, "attempts_exhausted")
        assert session.get_one(JobImage, again).status == ImageStatus.RUNNING
        job = session.get_one(Job, job_id)
        assert (job.status, job.failed) == (JobStatus.QUEUED, 1)  # image 1 is still to come
        ledger_total = session.scalar(select(func.sum(LedgerEntry.amount_micros))
                                      .where(LedgerEntry.api_key_id == key_id))
        assert session.get_one(ApiKey, key_id).committed_micros == ledger_total == 25_000  # one hold left


@pytest.mark.parametrize("outage", [["restart"], ["stop", "sweep", "start"]], ids=["restarted", "down-then-back"])
def test_a_broker_that_lost_its_queue_gets_every_waiting_task_at_once(
    settings: Settings, sessions: sessionmaker[Session], own_redis: RedisServer, outage: list[str]
) -> None:
    expired = utcnow() - timedelta(seconds=1)
    with sessions.begin() as session:
        job = make_job(session, make_api_key(session), n=4)
        waiting = [make_image(session, job, index=0).id,  # queued a moment ago: not stale by far
                   make_image(session, job, index=1).id,
                   # its lease expired and its re-sent task was in the lost queue
                   make_image(session, job, index=2, status=ImageStatus.RUNNING, attempts=1, lease_until=expired,
                              enqueued_at=utcnow()).id]
        make_image(session, job, index=3, status=ImageStatus.RUNNING, attempts=1,
                   lease_until=utcnow() + timedelta(minutes=5))  # being made: its task is done with

    counts = sweep(settings, own_redis, ["sweep", *outage, "sweep", "sweep"])

    assert counts[0] == 0 and counts[-2:] == [3, 0]
    assert sent(own_redis) == sorted(waiting)
