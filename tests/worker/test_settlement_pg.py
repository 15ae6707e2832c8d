"""Concurrent settlement on PostgreSQL: the images of one job finish at the same instant, some
delivered, some failed, and every ledger row, job counter and key balance comes out exact — with
no deadlock (each transaction locks image row, then job row, then key row)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from core.billing.ledger import Charge, JobBilling, PricingSnapshot, day_of, month_of
from core.billing.money import format_usd
from core.billing.prices import ModelPrice
from core.config import Settings
from core.errors import ContentPolicyError
from core.events import InProcessEventBus
from core.generation import ProviderImage
from core.jobs import ImageStatus, JobStatus
from core.migrate import upgrade_head
from core.models import ApiKey, Job, JobImage, WebhookDelivery
from core.models.ledger import KeySpend, LedgerEntry
from core.models.types import utcnow
from core.settlement import Ended, record_outcome
from tests.worker.factories import db, hold, make_api_key, make_image, make_job
from worker.providers.base import ProviderCall
from worker.providers.demo import DemoProvider
from worker.providers.registry import ProviderRegistry
from worker.run_job import Attempt, _claim, run_image
from worker.runtime import WorkerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

N = 10
HOLD = 50_000  # micro-dollars held per image
PRICE = ModelPrice(id="demo-image", source="test: a paid demo", effective=date(2026, 11, 21),
                   per_image={"*": {"*": Decimal("0.04")}})  # $0.04 upstream, billed at 1.25x


class Rendezvous:
    """Every image of the job is made at the same moment; odd ones are refused by the upstream."""

    name = "demo"

    def __init__(self, parties: int) -> None:
        self.barrier = asyncio.Barrier(parties)
        self.demo = DemoProvider()

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        await asyncio.wait_for(self.barrier.wait(), 30)
        if call.indices[0] % 2:
            raise ContentPolicyError("blocked", code="moderation_blocked")
        return await self.demo.generate(call)


@pytest.fixture
async def runtime(make_pg_database: Callable[[], str],
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerRuntime]:
    settings = Settings(database_url=make_pg_database(), data_dir=tmp_path_factory.mktemp("pg-data"),
                        db_pool_size=N, db_max_overflow=N, _env_file=None)  # type: ignore[call-arg]
    upgrade_head(settings)
    built = WorkerRuntime.build(settings, events=InProcessEventBus())
    yield built
    await built.aclose()


async def test_simultaneous_outcomes_settle_exactly_without_deadlock(runtime: WorkerRuntime) -> None:
    for round_ in range(5):
        provider = Rendezvous(N)
        runtime.providers = ProviderRegistry({"demo": provider})
        with db(runtime).begin() as session:
            key = make_api_key(session, name=f"settle-{round_}")
            job = make_job(session, key, n=N, size="64x64")
            hold(session, key, job, per_image=HOLD)
            job.pricing = PricingSnapshot(markup=Decimal("1.25"), routes={"demo-image": PRICE}).as_json()
            images = [make_image(session, job, index=i) for i in range(N)]
            key_id, job_id, image_ids = key.id, job.id, [i.id for i in images]

        outcomes = list(await asyncio.gather(*(run_image(runtime, image_id) for image_id in image_ids)))

        assert sorted(outcomes) == ["failed"] * 5 + ["succeeded"] * 5
        with db(runtime)() as session:
            job = session.get_one(Job, job_id)
            assert (job.status, job.succeeded, job.failed) == ("partial", 5, 5)
            ledger_total = session.scalar(select(func.sum(LedgerEntry.amount_micros))
                                          .where(LedgerEntry.api_key_id == key_id))
            released = session.scalar(select(func.count()).where(LedgerEntry.job_id == job_id,
                                                                 LedgerEntry.kind == "release"))
            billed = session.scalar(select(func.sum(JobImage.cost_micros)).where(JobImage.job_id == job_id))
            committed = session.get_one(ApiKey, key_id).committed_micros
        # five delivered at $0.04 x 1.25 = $0.05 each; every hold came back; the key's balance is its ledger
        assert released == N and ledger_total == billed == job.cost_micros == 5 * 50_000
        assert committed == ledger_total
        assert format_usd(committed) == "0.250000"


class CountingDemo:
    """The demo model making every image of a call at once, counting its calls."""

    name = "demo"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.demo = DemoProvider()

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        self.calls.append(list(call.indices))
        return await self.demo.generate(call)


async def test_sibling_tasks_of_a_group_claim_without_waiting_on_each_other(runtime: WorkerRuntime) -> None:
    """An upstream making 10 images per call: the 10 tasks of the job start together; whoever
    claims first takes the siblings nobody holds (SKIP LOCKED), the others find theirs taken."""
    for round_ in range(5):
        provider = CountingDemo()
        runtime.providers = ProviderRegistry({"demo": provider})
        with db(runtime).begin() as session:
            key = make_api_key(session, name=f"group-{round_}")
            job = make_job(session, key, n=N, size="64x64")
            job.routes = [{**job.routes[0], "n_per_call": N}]
            image_ids = [make_image(session, job, index=i).id for i in range(N)]
            job_id = job.id
        outcomes = list(await asyncio.gather(*(run_image(runtime, image_id) for image_id in image_ids)))
        made = sorted(i for call in provider.calls for i in call)
        assert made == list(range(N)), "every image made exactly once"
        assert set(outcomes) <= {"succeeded", "skipped"} and "succeeded" in outcomes
        with db(runtime)() as session:
            job = session.get_one(Job, job_id)
            assert (job.status, job.succeeded) == ("succeeded", N)


async def test_an_image_alone_is_claimed_without_a_transaction_and_a_group_in_one(runtime: WorkerRuntime) -> None:
    """The claim is one statement on a connection of its own (autocommit); only an image with
    siblings in its call group needs a transaction more, to lock and claim them."""
    statements: list[str] = []
    sessions: list[object] = []
    real = runtime.sessions

    def counted() -> object:
        sessions.append(object())
        return real()

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.split()[0])

    runtime.__dict__["sessions"] = counted  # a cached property: the instance's attribute wins
    event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
    try:
        with db(runtime).begin() as session:
            key = make_api_key(session, name="claims")
            alone = make_job(session, key, size="64x64")
            alone_id = make_image(session, alone).id
            grouped = make_job(session, key, n=3, size="64x64")
            grouped.routes = [{**grouped.routes[0], "n_per_call": 3}]
            grouped_ids = [make_image(session, grouped, index=i).id for i in range(3)]

        attempt = await _claim(runtime, alone_id)
        assert isinstance(attempt, Attempt) and [c.image_id for c in attempt.images] == [alone_id]
        assert (statements, sessions) == (["WITH"], [])

        attempt = await _claim(runtime, grouped_ids[1])
        assert isinstance(attempt, Attempt) and sorted(c.image_id for c in attempt.images) == sorted(grouped_ids)
        assert (statements, len(sessions)) == (["WITH", "WITH", "SELECT", "UPDATE"], 1)
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", count)
        del runtime.__dict__["sessions"]


class NulInText:
    """An upstream whose image comes with a caption PostgreSQL cannot store (a NUL character)."""

    name = "demo"

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        images = await DemoProvider().generate(call)
        return [image.model_copy(update={"text": "a caption\x00with a NUL"}) for image in images]


async def test_an_outcome_the_database_refuses_is_recorded_as_a_failure(runtime: WorkerRuntime) -> None:
    runtime.providers = ProviderRegistry({"demo": NulInText()})
    with db(runtime).begin() as session:
        key = make_api_key(session, name="nul")
        job = make_job(session, key, size="64x64")
        hold(session, key, job, per_image=HOLD)
        image_id, job_id, key_id = make_image(session, job).id, job.id, key.id

    assert await run_image(runtime, image_id) == "failed"

    with db(runtime)() as session:
        image = session.get_one(JobImage, image_id)
        job = session.get_one(Job, job_id)
        committed = session.get_one(ApiKey, key_id).committed_micros
        ledger_total = session.scalar(select(func.sum(LedgerEntry.amount_micros))
                                      .where(LedgerEntry.api_key_id == key_id))
    assert (image.status, image.attempts, image.error_code) == ("failed", 1, "record_refused")
    assert image.lease_until is None and image.text is None
    assert (job.status, job.failed) == ("failed", 1)
    assert committed == ledger_total == 0
    assert await run_image(runtime, image_id) == "skipped"


def _running_job(runtime: WorkerRuntime, *, n: int, name: str, webhook: str | None = None,
                 ttl_s: int | None = None) -> tuple[str, str, list[str]]:
    """A priced job of ``n`` images, each running its first attempt; its key, job and image ids."""
    with db(runtime).begin() as session:
        key = make_api_key(session, name=name)
        job = make_job(session, key, n=n, size="64x64")
        hold(session, key, job, per_image=HOLD)
        job.pricing = PricingSnapshot(markup=Decimal("1.25"), routes={"demo-image": PRICE}).as_json()
        job.webhook_url, job.result_ttl_s = webhook, ttl_s
        images = [make_image(session, job, index=i, status=ImageStatus.RUNNING, attempts=1) for i in range(n)]
        return key.id, job.id, [i.id for i in images]


async def _record(runtime: WorkerRuntime, billing: JobBilling, image_id: str, *, delivered: bool,
                  now: datetime, attempt: int = 1) -> tuple[bool, JobStatus | None]:
    if delivered:
        charge = Charge(upstream_micros=40_000, billed_micros=HOLD)
        values = {"status": ImageStatus.SUCCEEDED, "model": "demo-image", "object_key": f"k/{image_id}.png",
                  "size": "64x64", "cost_micros": HOLD, "upstream_cost_micros": 40_000, "finished_at": now,
                  "lease_until": None}
    else:
        charge = None
        values = {"status": ImageStatus.FAILED, "error_code": "moderation_blocked", "error_message": "blocked",
                  "finished_at": now, "lease_until": None}
    return await record_outcome(runtime.engine, billing, image_id, attempt=attempt, values=values,
                                ended=Ended.of(image_id, values, charge), now=now)


async def test_one_statement_records_settles_and_closes_the_job(runtime: WorkerRuntime) -> None:
    """PostgreSQL records an outcome in one statement: the image, the job's counters, the ledger,
    the key's balance and spend counters; the last image closes the job, starts its retention and
    puts its webhook in the outbox; an attempt that no longer owns its image writes nothing."""
    key_id, job_id, (first, second) = _running_job(runtime, n=2, name="one-statement",
                                                   webhook="https://hooks.example/done", ttl_s=600)
    with db(runtime)() as session:
        row = session.get_one(Job, job_id)
        billing = JobBilling.of(key_id=key_id, job_id=job_id, model=row.model, hold_per_image=HOLD,
                                pricing=row.pricing)
    now = utcnow()

    assert await _record(runtime, billing, first, delivered=True, now=now) == (True, None)
    with db(runtime)() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.succeeded, job.finished_at, job.expires_at) == ("queued", 1, None, None)
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0

    assert await _record(runtime, billing, second, delivered=False, now=now) == (True, JobStatus.PARTIAL)
    assert await _record(runtime, billing, first, delivered=True, now=now) == (False, None), "fenced"
    with db(runtime)() as session:
        job = session.get_one(Job, job_id)
        key = session.get_one(ApiKey, key_id)
        kinds = sorted(session.scalars(select(LedgerEntry.kind).where(LedgerEntry.job_id == job_id)))
        spend = dict(session.execute(select(KeySpend.period, KeySpend.charged_micros)
                                     .where(KeySpend.api_key_id == key_id)).all())
        hooks = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).all()
        images = {i.id: i for i in session.scalars(select(JobImage).where(JobImage.job_id == job_id))}
    assert (job.status, job.succeeded, job.failed, job.cost_micros) == ("partial", 1, 1, HOLD)
    assert job.finished_at == now and job.expires_at == now + timedelta(seconds=600)
    assert job.error_code is None
    assert kinds == ["charge", "hold", "release", "release"]
    assert (key.committed_micros, key.charged_micros) == (HOLD, HOLD), "one charge; both holds released"
    assert spend == {day_of(now): HOLD, month_of(now): HOLD}
    assert [(h.url, h.status, h.attempts) for h in hooks] == [("https://hooks.example/done", "pending", 0)]
    assert (images[first].status, images[first].object_key) == ("succeeded", f"k/{first}.png")
    assert (images[second].status, images[second].error_code) == ("failed", "moderation_blocked")


async def test_one_statement_fails_a_job_whose_images_all_failed(runtime: WorkerRuntime) -> None:
    key_id, job_id, images = _running_job(runtime, n=2, name="all-failed")
    with db(runtime)() as session:
        row = session.get_one(Job, job_id)
        billing = JobBilling.of(key_id=key_id, job_id=job_id, model=row.model, hold_per_image=HOLD,
                                pricing=row.pricing)
    now = utcnow()
    assert [await _record(runtime, billing, i, delivered=False, now=now) for i in images] == [
        (True, None), (True, JobStatus.FAILED)]
    with db(runtime)() as session:
        job = session.get_one(Job, job_id)
        key = session.get_one(ApiKey, key_id)
        assert session.scalar(select(func.count()).select_from(KeySpend).where(KeySpend.api_key_id == key_id)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)
                              .where(WebhookDelivery.job_id == job_id)) == 0
    assert (job.status, job.failed, job.error_code, job.error_message) == (
        "failed", 2, "all_images_failed", "All 2 images failed.")
    assert job.expires_at is None and job.cost_micros == 0
    assert (key.committed_micros, key.charged_micros) == (0, 0)


async def test_psycopg_keeps_the_conversion_of_the_record_statement(runtime: WorkerRuntime,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg rewrites a query's ``%(name)s`` placeholders on each execution unless the query is
    short enough and has few enough parameters for its cache; the record of a charged image (the
    longest statement of the hot path, about a hundred parameters) is kept in it."""
    from psycopg import _queries

    uncached: list[bytes] = []
    convert = _queries._query2pg_nocache

    def counted(query: bytes, encoding: str) -> object:
        uncached.append(query)
        return convert(query, encoding)

    monkeypatch.setattr(_queries, "_query2pg_nocache", counted)  # the path taken past the cache's limits
    key_id, job_id, (first, second) = _running_job(runtime, n=2, name="cached-conversion")
    with db(runtime)() as session:
        row = session.get_one(Job, job_id)
        billing = JobBilling.of(key_id=key_id, job_id=job_id, model=row.model, hold_per_image=HOLD,
                                pricing=row.pricing)
    assert await _record(runtime, billing, first, delivered=True, now=utcnow()) == (True, None)
    assert await _record(runtime, billing, second, delivered=True, now=utcnow()) == (True, JobStatus.SUCCEEDED)
    assert [q for q in uncached if b"ledger" in q] == []
