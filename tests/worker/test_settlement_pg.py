"""Concurrent settlement on PostgreSQL: the images of one job finish at the same instant, some
delivered, some failed, and every ledger row, job counter and key balance comes out exact — with
no deadlock (each transaction locks image row, then job row, then key row)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.billing.ledger import PricingSnapshot
from core.billing.money import format_usd
from core.billing.prices import ModelPrice
from core.config import Settings
from core.errors import ContentPolicyError
from core.events import InProcessEventBus
from core.generation import ProviderImage
from core.migrate import upgrade_head
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry
from tests.worker.factories import db, hold, make_api_key, make_image, make_job
from worker.providers.base import ProviderCall
from worker.providers.demo import DemoProvider
from worker.providers.registry import ProviderRegistry
from worker.run_job import run_image
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
