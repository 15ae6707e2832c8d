"""The billing module against a real (SQLite) database: a quote prices every planned route and
drops an unpriced fallback; the hold is taken within the total and monthly budgets or refused with
nothing written; a delivered image is charged (never past its hold) and its hold released; a
failed or canceled image only gets its hold back. The key's committed spend is always its ledger's
sum. Also the one money parser and formatter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from core.billing import ledger, repo
from core.billing.ledger import Charge, ImageRecord, JobBilling, PricingSnapshot
from core.billing.money import MoneyError, format_usd, parse_usd
from core.billing.prices import ModelPrice, PriceTable
from core.config import Settings
from core.db import async_session_factory, create_async_db_engine, create_sync_engine, sync_sessionmaker
from core.errors import QuotaExceededError, ServiceUnavailableError
from core.generation import AppliedParams, GenerationRequest, Usage
from core.migrate import alembic_config, upgrade_head
from core.models import ApiKey
from core.models.ledger import KeySpend, LedgerEntry
from core.models.types import utcnow
from core.repo.binds import Prepared, param
from tests.worker.factories import make_api_key, make_image, make_job

DEMO = ModelPrice(id="demo", source="test", effective=date(2026, 11, 1), per_image={"*": {"*": Decimal("0.04")}})
OTHER = ModelPrice(id="other", source="test", effective=date(2026, 11, 1), per_image={"*": {"*": Decimal("0.10")}})


def applied(model: str) -> AppliedParams:
    return AppliedParams(model=model, provider="demo", upstream_model=model, quality="auto", output_format="png")


REQUEST = GenerationRequest(prompt="a fox")


# -- quote (pure) -------------------------------------------------------------------------------


def test_the_hold_is_the_dearest_priced_route_marked_up() -> None:
    quote = ledger.quote(REQUEST, [applied("demo"), applied("other")], prices=PriceTable([DEMO, OTHER]),
                         markup=Decimal("1.25"))
    assert [r.model for r in quote.routes] == ["demo", "other"]
    assert quote.per_image_micros == 125_000  # $0.10 x 1.25
    assert set(quote.pricing.routes) == {"demo", "other"} and quote.pricing.markup == Decimal("1.25")


def test_an_unpriced_fallback_is_left_out_of_the_plan() -> None:
    quote = ledger.quote(REQUEST, [applied("demo"), applied("other")], prices=PriceTable([DEMO]), markup=Decimal(1))
    assert [r.model for r in quote.routes] == ["demo"]
    assert quote.per_image_micros == 40_000 and set(quote.pricing.routes) == {"demo"}


def test_an_unpriced_first_route_is_refused() -> None:
    with pytest.raises(ServiceUnavailableError) as info:
        ledger.quote(REQUEST, [applied("other"), applied("demo")], prices=PriceTable([DEMO]), markup=Decimal(1))
    assert info.value.code == "model_not_priced"


# -- charge (pure) ------------------------------------------------------------------------------

TOKENS = ModelPrice.model_validate({
    "id": "demo", "source": "test", "effective": "2026-11-01",
    "per_token": {"text_in": "2", "image_in": "2", "text_out": "12", "image_out": "120"},
    "bounds": {"text_in_overhead_tokens": 0, "input_image_tokens": 0, "text_out_tokens": 0},
    "output_image_tokens": {"*": {"*": 1000}},
})


def billing(*, hold: int, price: ModelPrice = DEMO, markup: str = "1.5") -> JobBilling:
    return JobBilling(key_id="key_1", job_id="job_1", model="demo", hold_per_image=hold,
                      pricing=PricingSnapshot(markup=Decimal(markup), routes={"demo": price}))


def test_a_charge_is_the_snapshot_price_marked_up() -> None:
    assert ledger.charge_for(billing(hold=60_000), applied("demo"), Usage()) == Charge(40_000, 60_000)


def test_a_charge_is_never_more_than_the_hold() -> None:
    # the upstream reports 10x the output the estimate allowed for: billed at the hold, not past it
    usage = Usage(output_tokens=10_000, output_image_tokens=10_000)
    charge = ledger.charge_for(billing(hold=200_000, price=TOKENS, markup="1"), applied("demo"), usage)
    assert charge == Charge(upstream_micros=1_200_000, billed_micros=200_000)


def test_a_route_without_a_price_in_the_snapshot_costs_nothing() -> None:
    assert ledger.charge_for(billing(hold=10), applied("other"), Usage()) == Charge(0, 0)
    free = JobBilling(key_id="k", job_id="j", model="demo", hold_per_image=0, pricing=None)
    assert ledger.charge_for(free, applied("demo"), Usage()) == Charge(0, 0)


# -- statements against a database --------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """SQLite, or a fresh PostgreSQL database for a test parametrized with ``postgresql``."""
    url = request.getfixturevalue("make_pg_database")() if getattr(request, "param", None) == "postgresql" else None
    s = Settings(data_dir=tmp_path, database_url=url, redis_url=None, _env_file=None)  # type: ignore[call-arg]
    upgrade_head(s)
    return s


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    engine = create_sync_engine(settings.resolved_database_url, pool_size=1, max_overflow=0)
    with sync_sessionmaker(engine)() as s:
        yield s
    engine.dispose()


def _sums(session: Session, key_id: str) -> tuple[int, int, dict[str, int]]:
    rows = session.execute(select(LedgerEntry.kind, func.sum(LedgerEntry.amount_micros))
                           .where(LedgerEntry.api_key_id == key_id).group_by(LedgerEntry.kind)).all()
    committed = session.scalar(select(ApiKey.committed_micros).where(ApiKey.id == key_id))
    by_kind = {kind: int(total) for kind, total in rows}
    return int(committed or 0), sum(by_kind.values()), by_kind


def _run(session: Session, steps: list[tuple[Prepared, dict[str, Any]]]) -> None:
    for statement, params in steps:
        session.connection().exec_driver_sql(statement.sql, statement.parameters(params))


def test_settling_a_delivered_and_a_failed_image(session: Session) -> None:
    key = make_api_key(session)
    job = make_job(session, key, n=2)
    a, b = (make_image(session, job, index=i).id for i in range(2))
    key.committed_micros = 2 * 60_000
    session.add(LedgerEntry(api_key_id=key.id, job_id=job.id, kind="hold", amount_micros=120_000, model="demo"))
    session.flush()
    job_billing = JobBilling(key_id=key.id, job_id=job.id, model="demo", hold_per_image=60_000,
                             pricing=PricingSnapshot(markup=Decimal("1.5"), routes={"demo": DEMO}))

    delivered = ImageRecord(outcome="succeeded", size="1K", quality="high", input_tokens=12, output_tokens=1120)
    _run(session, ledger.settle_image(job_billing, a, charge=Charge(40_000, 60_000), model="demo",
                                      record=delivered, dialect=session.get_bind().dialect))
    _run(session, ledger.settle_image(job_billing, b, charge=None, model=None,
                                      record=ImageRecord(outcome="failed"), dialect=session.get_bind().dialect))
    session.flush()

    committed, total, by_kind = _sums(session, key.id)
    assert by_kind == {"hold": 120_000, "charge": 60_000, "release": -120_000}
    assert committed == total == 60_000
    assert session.scalar(select(ApiKey.charged_micros).where(ApiKey.id == key.id)) == 60_000
    charge = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "charge")).one()
    assert (charge.job_image_id, charge.upstream_cost_micros) == (a, 40_000)
    assert (charge.outcome, charge.size, charge.quality, charge.input_tokens, charge.output_tokens) == (
        "succeeded", "1K", "high", 12, 1120)
    assert PricingSnapshot.model_validate(charge.pricing).routes == {"demo": DEMO}
    # one row per image says how it ended
    outcomes = session.execute(select(LedgerEntry.job_image_id, LedgerEntry.outcome)
                               .where(LedgerEntry.outcome.is_not(None))).all()
    assert sorted(outcomes) == sorted([(a, "succeeded"), (b, "failed")])
    # and the day's and month's counters hold the charge
    spend = dict(session.execute(select(KeySpend.period, KeySpend.charged_micros)
                                 .where(KeySpend.api_key_id == key.id)).all())
    assert set(spend.values()) == {60_000} and len(spend) == 2


def test_releasing_canceled_images(session: Session) -> None:
    key = make_api_key(session)
    job = make_job(session, key, n=3)
    ids = [make_image(session, job, index=i).id for i in range(3)]
    key.committed_micros = 3 * 7
    session.add(LedgerEntry(api_key_id=key.id, job_id=job.id, kind="hold", amount_micros=21, model="demo"))
    session.flush()
    job_billing = JobBilling(key_id=key.id, job_id=job.id, model="demo", hold_per_image=7, pricing=None)

    for statement in ledger.release_images(job_billing, ids):
        session.execute(statement)
    session.flush()

    assert _sums(session, key.id) == (0, 0, {"hold": 21, "release": -21})


def test_a_free_image_gets_one_row_of_zero_and_moves_no_counter(session: Session) -> None:
    key = make_api_key(session)
    job = make_job(session, key, n=2)
    a, b = (make_image(session, job, index=i).id for i in range(2))
    free = JobBilling(key_id=key.id, job_id=job.id, model="demo", hold_per_image=0, pricing=None)
    delivered = ledger.settle_image(free, a, charge=Charge(0, 0), model="demo",
                                    record=ImageRecord(outcome="succeeded"), dialect=session.get_bind().dialect)
    assert len(delivered) == 1  # the row alone: no counter moves
    _run(session, delivered)
    for statement in ledger.release_images(free, [b]):
        session.execute(statement)
    session.flush()
    rows = session.execute(select(LedgerEntry.kind, LedgerEntry.amount_micros, LedgerEntry.outcome)
                           .where(LedgerEntry.job_id == job.id)).all()
    assert sorted(rows) == [("charge", 0, "succeeded"), ("release", 0, "canceled")]
    assert _sums(session, key.id)[0] == 0


# -- the hold -----------------------------------------------------------------------------------


def _hold(settings: Settings, key_id: str, *, job_id: str, per_image: int, n: int,
          statements: list[str] | None = None) -> None:
    """Take a hold in its own transaction; the statements it ran go to ``statements``."""
    async def run() -> None:
        engine = create_async_db_engine(settings.resolved_database_url, pool_size=1, max_overflow=0)
        if statements is not None:
            event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        try:
            async with async_session_factory(engine)() as s:
                key = await s.scalar(select(ApiKey).where(ApiKey.id == key_id))
                assert key is not None
                quote = ledger.Quote(routes=[applied("demo")], per_image_micros=per_image,
                                     pricing=PricingSnapshot(markup=Decimal(1), routes={"demo": DEMO}))
                await ledger.take_hold(s, key=key, job_id=job_id, quote=quote, n=n, model="demo")
                await s.commit()
        finally:
            await engine.dispose()

    asyncio.run(run())


BOTH_DATABASES = pytest.mark.parametrize("settings", ["sqlite", "postgresql"], indirect=True)


@BOTH_DATABASES
def test_a_hold_within_the_budget_is_taken_and_one_past_it_refused(settings: Settings, session: Session) -> None:
    key = make_api_key(session)
    key.budget_micros = 100_000
    job = make_job(session, key)
    other = make_job(session, key)
    session.commit()

    statements: list[str] = []
    _hold(settings, key.id, job_id=job.id, per_image=30_000, n=3, statements=statements)
    # on PostgreSQL the reserve and the hold row are one statement
    hold = [s for s in statements if not s.startswith("SELECT api_keys.id")]  # not the key's read
    assert len(hold) == (1 if settings.resolved_database_url.startswith("postgresql") else 2), hold
    with pytest.raises(QuotaExceededError) as info:
        _hold(settings, key.id, job_id=other.id, per_image=30_000, n=1)
    assert "budget of $0.100000" in info.value.message

    session.expire_all()
    assert _sums(session, key.id) == (90_000, 90_000, {"hold": 90_000})


@BOTH_DATABASES
def test_a_monthly_budget_refuses_with_nothing_written(settings: Settings, session: Session) -> None:
    key = make_api_key(session)
    key.monthly_budget_micros = 50_000
    job = make_job(session, key)
    session.commit()

    with pytest.raises(QuotaExceededError) as info:
        _hold(settings, key.id, job_id=job.id, per_image=30_000, n=2)
    assert "monthly budget" in info.value.message

    session.expire_all()
    assert _sums(session, key.id) == (0, 0, {})


def test_the_budget_precheck_reads_the_committed_spend() -> None:
    key = ApiKey(id="k", name="k", prefix="p", secret_hash="h", budget_micros=100, committed_micros=60)
    quote = ledger.Quote(routes=[applied("demo")], per_image_micros=20, pricing=PricingSnapshot(
        markup=Decimal(1), routes={}))
    ledger.check_budget(key, quote, n=2)
    with pytest.raises(QuotaExceededError):
        ledger.check_budget(key, quote, n=3)


# -- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "micros"), [
    ("25", 25_000_000), ("12.50", 12_500_000), (0.3, 300_000), (7, 7_000_000), ("0.0000005", 1),
    ("0.00000049", 0), ("1e3", 1_000_000_000), (Decimal("0.0000015"), 2),
])
def test_parse_usd_rounds_half_up_to_the_micro_dollar(text: object, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize("text", ["Infinity", "NaN", "-1", "1e309", "1e30", "1e13", "", "ten", True, None, [1]])
def test_parse_usd_refuses_what_is_not_an_amount(text: object) -> None:
    with pytest.raises(MoneyError):
        parse_usd(text)


def test_format_usd_is_exact() -> None:
    assert [format_usd(m) for m in (0, 1, 38_700, -5, 10**18 + 1)] == [
        "0.000000", "0.000001", "0.038700", "-0.000005", "1000000000000.000001"]


def test_monthly_budget_and_markup_tiers_read_counters_not_the_key_history(settings: Settings,
                                                                           session: Session) -> None:
    """The checks at submit cost the same for a key with years of charges as for a new one: they
    read the key's counters, never an aggregate over its ledger rows."""
    from sqlalchemy import event

    from core.billing.prices import MarkupConfig, MarkupTier

    key = make_api_key(session)
    key.monthly_budget_micros = 10_000_000
    job = make_job(session, key)
    session.commit()
    table = PriceTable([DEMO], markup=MarkupConfig(default=Decimal("1.5"), tiers=[
        MarkupTier(min_spend_usd=Decimal(0), markup=Decimal("1.5")),
        MarkupTier(min_spend_usd=Decimal(10), markup=Decimal("1.2"))]))
    statements: list[str] = []

    async def run() -> Decimal:
        engine = create_async_db_engine(settings.resolved_database_url, pool_size=1, max_overflow=0)
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        try:
            async with async_session_factory(engine)() as s:
                stored = await s.scalar(select(ApiKey).where(ApiKey.id == key.id))
                assert stored is not None
                markup = await ledger.markup_in_force(s, key=stored, prices=table)
                quote = ledger.quote(REQUEST, [applied("demo")], prices=table, markup=markup)
                await ledger.take_hold(s, key=stored, job_id=job.id, quote=quote, n=1, model="demo")
                await s.commit()
                return markup
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == Decimal("1.5")
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads and not any("ledger_entries" in s for s in reads), reads


# -- the month's charges on the key row ---------------------------------------------------------


def _month_counters(session: Session, key_id: str) -> tuple[str | None, int, int]:
    session.expire_all()
    key = session.get_one(ApiKey, key_id)
    return key.charged_month, key.month_charged_micros, key.charged_micros


@BOTH_DATABASES
def test_a_charge_counts_in_its_month_a_new_month_starts_at_it_and_a_late_one_leaves_it(
    settings: Settings, session: Session,
) -> None:
    key = make_api_key(session)
    session.commit()

    def charge(amount: int, month: str) -> tuple[str | None, int, int]:
        statement = Prepared(repo.adjust_committed(param("key_id"), param("delta"), charged=param("charged"),
                                                   month=param("month")), session.get_bind().dialect)
        _run(session, [(statement, {"key_id": key.id, "delta": 0, "charged": amount, "month": month})])
        session.commit()
        return _month_counters(session, key.id)

    assert _month_counters(session, key.id) == (None, 0, 0)
    assert charge(10_000, "2026-11") == ("2026-11", 10_000, 10_000)
    assert charge(5_000, "2026-11") == ("2026-11", 15_000, 15_000)
    assert charge(7_000, "2026-12") == ("2026-12", 7_000, 22_000)  # a new month starts at its first charge
    assert charge(1_000, "2026-11") == ("2026-12", 7_000, 23_000)  # settled late: November's, not December's
    assert charge(2_000, "2026-12") == ("2026-12", 9_000, 25_000)
    with pytest.raises(ValueError, match="counted in its month"):
        repo.adjust_committed(key.id, 0, charged=1)


@BOTH_DATABASES
def test_a_monthly_budget_counts_this_months_charges_and_the_open_holds_on_the_key_row(
    settings: Settings, session: Session,
) -> None:
    """The reserve refuses a hold that would take this month's charges plus the open holds past
    the monthly budget; charges of an earlier month do not count."""
    key = make_api_key(session)
    key.monthly_budget_micros = 100_000
    key.committed_micros, key.charged_micros = 80_000, 60_000  # 20_000 held, 60_000 charged...
    key.charged_month, key.month_charged_micros = ledger.month_of(utcnow()), 60_000  # ... this month
    session.commit()
    reserve = Prepared(repo.reserve(param("key_id"), param("amount"), param("month")), session.get_bind().dialect)

    def reserved(amount: int, month: str) -> bool:
        parameters = reserve.parameters({"key_id": key.id, "amount": amount, "month": month})
        row = session.connection().exec_driver_sql(reserve.sql, parameters).first()
        session.rollback()
        return row is not None

    this_month = ledger.month_of(utcnow())
    assert reserved(20_000, this_month)  # 60_000 + 20_000 + 20_000 = the budget
    assert not reserved(20_001, this_month)
    assert reserved(80_000, "2099-01")  # a month begun since: only the open holds count
    assert not reserved(80_001, "2099-01")


def test_the_migration_counts_this_months_charges_on_each_key(make_pg_database: Callable[[], str]) -> None:
    """Keys charged before the month counters existed get this month's charges from their spend
    counters as the migration runs; others start at nothing."""
    url = make_pg_database()
    config = alembic_config(url)
    command.upgrade(config, "bbdbe93484cf")
    month = ledger.month_of(utcnow())
    engine = create_sync_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            for key_id in ("key_charged", "key_never"):
                conn.exec_driver_sql(
                    "INSERT INTO api_keys (id, name, prefix, secret_hash, created_at, committed_micros, charged_micros)"
                    " VALUES (%(id)s, %(id)s, 'ig-x', %(id)s, now(), 0, 0)", {"id": key_id})
            conn.exec_driver_sql("INSERT INTO key_spend VALUES ('key_charged', %(m)s, 42000), "
                                 "('key_charged', '2001-01', 5), ('key_charged', '2001-01-02', 5)", {"m": month})
        command.upgrade(config, "head")
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, charged_month, month_charged_micros FROM api_keys ORDER BY id").all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("key_charged", month, 42_000), ("key_never", None, 0)]
