"""Every image ends, in bounded time and money, on a real (SQLite) database: the claim refuses an
image out of attempts and fails it; whatever goes wrong inside an attempt fails the image with its
reason (hold released, nothing re-sent); the heartbeat keeps a long attempt's lease alive, in one
statement per beat, and lets go of an image another attempt took over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from core.config import Settings
from core.events import InProcessEventBus
from core.generation import InputImage, ProviderImage
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry
from core.models.types import utcnow
from core.repo.jobs import requeue_orphans
from tests.worker.factories import db, hold, make_api_key, make_image, make_job
from tests.worker.test_run_job import image_row, job_row, with_provider
from worker.providers.base import ProviderCall
from worker.providers.demo import DemoProvider
from worker.run_job import run_image
from worker.runtime import WorkerRuntime

HOLD = 30_000

pytestmark = pytest.mark.anyio


class CountingProvider:
    """The demo model, counting its calls."""

    name = "demo"

    def __init__(self) -> None:
        self.calls: list[ProviderCall] = []

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        self.calls.append(call)
        return await DemoProvider().generate(call)


def held_job(runtime: WorkerRuntime, *, n: int = 1, request: dict[str, object] | None = None,
             **image_fields: object) -> tuple[str, str, list[str]]:
    """A job with its hold, as submit leaves it: (key id, job id, image ids)."""
    with db(runtime).begin() as session:
        key = make_api_key(session)
        job = make_job(session, key, n=n, **(request or {}))
        hold(session, key, job, per_image=HOLD)
        ids = [make_image(session, job, index=i, **image_fields).id for i in range(n)]  # type: ignore[arg-type]
        return key.id, job.id, ids


def money(runtime: WorkerRuntime, key_id: str) -> tuple[int, int]:
    """(the key's committed spend, the sum of its ledger rows): equal, always."""
    with db(runtime)() as session:
        committed = session.get_one(ApiKey, key_id).committed_micros
        total = session.scalar(select(func.sum(LedgerEntry.amount_micros)).where(LedgerEntry.api_key_id == key_id))
        return committed, int(total or 0)


async def not_resent(runtime: WorkerRuntime, image_id: str) -> bool:
    """Neither a redelivered task nor the sweeper, even much later, would run the image again."""
    later = utcnow() + timedelta(hours=1)
    with db(runtime).begin() as session:
        orphans = set(session.execute(requeue_orphans(now=later, requeue_after_s=1, max_attempts=99)).scalars())
    return image_id not in orphans and await run_image(runtime, image_id) == "skipped"


# -- the attempt cap -------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "why"), [
    pytest.param(ImageStatus.RUNNING, "its worker stopped renewing its lease", id="lease-expired"),
    pytest.param(ImageStatus.QUEUED, "the gateway restarted while it ran", id="gateway-restarted"),
])
async def test_a_claim_past_the_attempt_cap_fails_the_image_instead(
    runtime: WorkerRuntime, published: list[str], status: ImageStatus, why: str
) -> None:
    provider = CountingProvider()
    key_id, job_id, [image_id] = held_job(runtime, status=status, attempts=3,
                                          lease_until=utcnow() - timedelta(seconds=1))

    assert await run_image(with_provider(runtime, provider), image_id) == "failed"

    assert provider.calls == []
    image = image_row(runtime, image_id)
    assert (image.status, image.attempts, image.error_code) == (ImageStatus.FAILED, 3, "attempts_exhausted")
    assert image.error_message is not None and "3 attempts" in image.error_message and why in image.error_message
    job = job_row(runtime, job_id)
    assert (job.status, job.failed) == (JobStatus.FAILED, 1)
    assert money(runtime, key_id) == (0, 0)
    assert published == [job_id]
    assert await not_resent(runtime, image_id)


async def test_an_expired_lease_with_an_attempt_left_is_taken_over(runtime: WorkerRuntime) -> None:
    key_id, _, [image_id] = held_job(runtime, status=ImageStatus.RUNNING, attempts=2,
                                     lease_until=utcnow() - timedelta(seconds=1))

    assert await run_image(runtime, image_id) == "succeeded"

    assert image_row(runtime, image_id).attempts == 3
    assert money(runtime, key_id) == (0, 0)  # the demo model costs nothing: the hold came back


async def test_siblings_out_of_attempts_are_left_out_of_a_group_call(runtime: WorkerRuntime) -> None:
    provider = CountingProvider()
    with db(runtime).begin() as session:
        job = make_job(session, make_api_key(session), n=3)
        job.routes = [{**job.routes[0], "n_per_call": 3}]
        expired = utcnow() - timedelta(seconds=1)
        ids = [make_image(session, job, index=0).id,
               make_image(session, job, index=1, status=ImageStatus.RUNNING, attempts=3, lease_until=expired).id,
               make_image(session, job, index=2, status=ImageStatus.RUNNING, attempts=2, lease_until=expired).id]

    assert await run_image(with_provider(runtime, provider), ids[0]) == "succeeded"

    assert [call.indices for call in provider.calls] == [[0, 2]]
    assert image_row(runtime, ids[1]).status == ImageStatus.RUNNING  # the sweeper or its own task fails it
    assert await run_image(runtime, ids[1]) == "failed"
    assert image_row(runtime, ids[1]).error_code == "attempts_exhausted"
    assert job_row(runtime, job.id).status == JobStatus.PARTIAL


# -- whatever goes wrong inside an attempt ends it as a failure --------------------------------


async def test_an_input_image_gone_from_the_store_fails_the_image_and_releases_its_hold(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    provider = CountingProvider()
    runtime.store.put("inputs/ab/gone.png", b"not for long")
    key_id, job_id, [image_id] = held_job(runtime, request={
        "prompt": "edit me", "input_images": [InputImage(object_key="inputs/ab/gone.png", mime_type="image/png")]})
    path = runtime.store.path_for("inputs/ab/gone.png")
    assert path is not None
    path.unlink()

    assert await run_image(with_provider(runtime, provider), image_id) == "failed"

    assert provider.calls == []
    image = image_row(runtime, image_id)
    assert (image.status, image.attempts, image.error_code) == (ImageStatus.FAILED, 1, "input_image_missing")
    assert image.error_message is not None and "no longer in the gateway's image store" in image.error_message
    assert image.lease_until is None
    assert job_row(runtime, job_id).status == JobStatus.FAILED
    assert money(runtime, key_id) == (0, 0)
    assert published == [job_id, job_id]  # its start, then its end
    assert await not_resent(runtime, image_id)


async def test_a_job_whose_stored_plan_cannot_be_read_fails_its_image(runtime: WorkerRuntime) -> None:
    key_id, job_id, [image_id] = held_job(runtime)
    with db(runtime).begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(routes=[]))

    assert await run_image(runtime, image_id) == "failed"

    image = image_row(runtime, image_id)
    assert (image.status, image.attempts, image.error_code) == (ImageStatus.FAILED, 1, "internal_error")
    assert money(runtime, key_id) == (0, 0)
    assert await not_resent(runtime, image_id)


# -- the heartbeat ---------------------------------------------------------------------------


@pytest.fixture
async def short_lease(settings: Settings) -> AsyncIterator[WorkerRuntime]:
    """A runtime whose leases last 1.5 s (renewed every 0.5 s: a second of slack for a loop slowed
    by a busy machine)."""
    built = WorkerRuntime.build(settings.model_copy(update={"image_lease_s": 1.5}), events=InProcessEventBus())
    yield built
    await built.aclose()


class HeldOpen:
    """An upstream call that lasts until the test lets it go."""

    name = "demo"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        self.started.set()
        await asyncio.wait_for(self.release.wait(), 30)
        return await DemoProvider().generate(call)


async def test_an_attempt_longer_than_its_lease_keeps_the_image(short_lease: WorkerRuntime) -> None:
    runtime = short_lease
    upstream = HeldOpen()
    _, job_id, [image_id] = held_job(runtime)
    worker = asyncio.create_task(run_image(with_provider(runtime, upstream), image_id))

    def orphans() -> list[str]:
        with db(runtime).begin() as session:
            return list(session.execute(requeue_orphans(now=utcnow(), requeue_after_s=300, max_attempts=3)).scalars())

    try:
        await asyncio.wait_for(upstream.started.wait(), 10)
        first_lease = image_row(runtime, image_id).lease_until
        assert first_lease is not None
        # three leases' worth of time: the image is renewed all along, never anyone else's to take
        deadline = first_lease + timedelta(seconds=4.5)
        while utcnow() < deadline:
            lease = image_row(runtime, image_id).lease_until
            assert lease is not None and lease > utcnow() - timedelta(seconds=0.1)
            # a write from a thread: the heartbeat's transactions go on meanwhile on this loop
            assert await asyncio.to_thread(orphans) == []
            assert await run_image(runtime, image_id) == "skipped"
            await asyncio.sleep(0.05)
        assert image_row(runtime, image_id).lease_until > first_lease + timedelta(seconds=3)  # type: ignore[operator]
    finally:
        upstream.release.set()
        outcome = await asyncio.wait_for(worker, 30)

    assert outcome == "succeeded"
    image = image_row(runtime, image_id)
    assert (image.status, image.attempts, image.lease_until) == (ImageStatus.SUCCEEDED, 1, None)
    assert job_row(runtime, job_id).status == JobStatus.SUCCEEDED
    assert runtime.leases.held == {}


async def test_one_statement_renews_every_held_lease_and_an_image_taken_over_is_let_go(
    runtime: WorkerRuntime,
) -> None:
    soon = utcnow() + timedelta(seconds=5)
    _, _, ids = held_job(runtime, n=3, status=ImageStatus.RUNNING, attempts=1, lease_until=soon)
    with db(runtime).begin() as session:  # another attempt took image 2 over
        session.execute(update(JobImage).where(JobImage.id == ids[2]).values(attempts=2))
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with runtime.leases.holding([(image_id, 1) for image_id in ids]):
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
        try:
            assert await runtime.leases.beat() == 2
        finally:
            event.remove(runtime.engine.sync_engine, "before_cursor_execute", count)
        assert set(runtime.leases.held) == {ids[0], ids[1]}

    assert [s.split()[0] for s in statements] == ["UPDATE"]
    renewed = [image_row(runtime, i).lease_until for i in ids]
    assert all(lease is not None and lease > soon + timedelta(seconds=800) for lease in renewed[:2])
    assert renewed[2] == soon
    assert runtime.leases.held == {}


async def test_an_image_recorded_while_a_beat_runs_is_released_not_reported_lost(
    runtime: WorkerRuntime, caplog: pytest.LogCaptureFixture,
) -> None:
    """The images of a call group are recorded one by one while their leases are still held: a
    beat that finds one already recorded (no longer running) must not report its lease lost."""
    soon = utcnow() + timedelta(seconds=5)
    _, _, ids = held_job(runtime, n=2, status=ImageStatus.RUNNING, attempts=1, lease_until=soon)
    with db(runtime).begin() as session:  # image 0's outcome is committed...
        session.execute(update(JobImage).where(JobImage.id == ids[0]).values(status=ImageStatus.SUCCEEDED,
                                                                             lease_until=None))
    def release(*_: object) -> None:  # ... and its attempt lets go of it while the beat's statement runs
        runtime.leases.release(ids[0], 1)

    with runtime.leases.holding([(image_id, 1) for image_id in ids]):
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", release)
        try:
            with caplog.at_level(logging.WARNING, logger="worker.lease"):
                assert await runtime.leases.beat() == 1
        finally:
            event.remove(runtime.engine.sync_engine, "before_cursor_execute", release)
        assert set(runtime.leases.held) == {ids[1]}
    assert "no longer ours" not in caplog.text
    assert image_row(runtime, ids[0]).lease_until is None
