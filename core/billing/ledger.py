"""The billing module: where a hold is taken, where an image is charged, where a hold is released.

Money moves in three kinds of append-only ledger rows per API key, all integer micro-dollars:

- **hold**, at submit (:func:`take_hold`): the most one image of the request can cost over every
  route that may serve it, at the markup in force, times n;
- **charge**, per delivered image (:func:`settle_image`): what it actually costs, with the
  upstream's list cost beside it, and a **release** of that image's share of the hold;
- **release**, per image not delivered (:func:`settle_image` for a failure,
  :func:`release_images` for a cancel): its share of the hold comes back.

Every finished image has its row (a charge, or a release, of 0 for a free model), which also says
what the image was (outcome, size, quality, tokens): usage reports read the ledger alone, which is
never deleted. When a job has ended its holds are all released, and the sum of its rows is exactly
what its delivered images cost. ``api_keys.committed_micros`` is the running sum of a key's rows
and ``api_keys.charged_micros`` of its charges, and ``key_spend`` holds its charges per UTC day and
month, all changed in the same transaction as the rows: the budget check is one conditional update,
and the monthly budget and the markup tiers read a few counters, whatever the key's history.

The prices and markup in force at submit are a :class:`PricingSnapshot`, stored on the job and on
each ledger row; settlement prices an image with the job's snapshot, never with a later price.

Who calls what: ``api/submit.py`` calls :func:`quote` and :func:`take_hold` inside the submit
transaction; the worker calls :func:`charge_for` and executes :func:`settle_image`'s statements in
the transaction that records the image; a cancel executes :func:`release_images`'s. The builders
return plain statements, so the async API and the sync worker run the very same ones.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from core.billing import repo
from core.billing.costs import actual_image_micros, billed_micros, estimate_image_micros, markup_for
from core.billing.money import format_usd
from core.billing.prices import Amount, ModelPrice, PriceTable
from core.errors import QuotaExceededError, ServiceUnavailableError
from core.generation import AppliedParams, GenerationRequest, Usage
from core.models import ApiKey, Job, JobImage
from core.models.ledger import LedgerEntry, LedgerKind
from core.models.types import utcnow
from core.repo import jobs
from core.repo.binds import Prepared, bound, param

log = logging.getLogger(__name__)

TIER_WINDOW = timedelta(days=90)
"""Markup tiers look at what a key was billed over this window."""


class PricingSnapshot(BaseModel):
    """The prices in force at submit: the markup, and the price of every route the job may take."""

    # rows written by earlier versions also carried the hold per image (now a column of the job)
    model_config = ConfigDict(frozen=True, extra="ignore")

    markup: Amount
    routes: dict[str, ModelPrice]
    """Catalogue model id -> its price."""

    def price_for(self, model: str) -> ModelPrice | None:
        return self.routes.get(model)

    def only(self, model: str) -> PricingSnapshot:
        """The snapshot narrowed to the one model an image was charged at (a charge row's)."""
        price = self.routes.get(model)
        return PricingSnapshot(markup=self.markup, routes={model: price} if price else {})

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class Quote:
    """What a request costs at most, decided at submit: the routes it may take that are priced,
    the snapshot of their prices, and the hold per image."""

    routes: list[AppliedParams]
    pricing: PricingSnapshot
    per_image_micros: int


def quote(request: GenerationRequest, routes: Sequence[AppliedParams], *, prices: PriceTable,
          markup: Decimal) -> Quote:
    """Price every planned route; the hold per image is the dearest route's estimate, marked up.

    The first route must have a price (a 503 otherwise); a fallback without one is dropped from
    the plan, so that no image is ever made at a price nobody set.
    """
    priced: list[AppliedParams] = []
    route_prices: dict[str, ModelPrice] = {}
    for position, route in enumerate(routes):
        price = prices.get(route.model)
        if price is None:
            if position == 0:
                raise ServiceUnavailableError(f"The model '{route.model}' has no price configured.",
                                              code="model_not_priced")
            log.warning("fallback %s has no price; it is left out of the plan", route.model)
            continue
        priced.append(route)
        route_prices[route.model] = price
    estimate = max(estimate_image_micros(route_prices[r.model], r, request) for r in priced)
    return Quote(routes=priced, pricing=PricingSnapshot(markup=markup, routes=route_prices),
                 per_image_micros=billed_micros(estimate, markup))


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def tier_days(now: datetime) -> list[str]:
    """The UTC days whose charges a markup tier counts: today and the 89 before."""
    return [day_of(now - timedelta(days=d)) for d in range(TIER_WINDOW.days)]


async def markup_in_force(session: AsyncSession, *, key: ApiKey, prices: PriceTable) -> Decimal:
    """The key's own markup, else the spend tier its last 90 days of charges reach, else the default."""
    if key.markup is not None:
        return Decimal(key.markup)
    spend = 0
    if prices.markup.tiers:
        spend = int(await session.scalar(repo.spend_in(key.id, tier_days(utcnow()))) or 0)
    return markup_for(key_markup=None, table=prices, spend_90d_micros=spend)


def check_budget(key: ApiKey, quote: Quote, *, n: int) -> None:
    """Refuse, before anything is loaded or counted, a request whose hold cannot fit the key's
    total budget as it stood when the key was read. :func:`take_hold` decides for good."""
    total = quote.per_image_micros * n
    if key.budget_micros is not None and key.committed_micros + total > key.budget_micros:
        raise _over_budget("budget", key.budget_micros, total)


async def take_hold(session: AsyncSession, *, key: ApiKey, job_id: str, quote: Quote, n: int, model: str) -> None:
    """Reserve ``n`` images' hold within the key's budgets and append the hold row (the caller
    commits). Raises QuotaExceededError when the hold does not fit the total or monthly budget."""
    total = quote.per_image_micros * n
    month = month_of(utcnow())
    hold = repo.row(kind=LedgerKind.HOLD, key_id=key.id, job_id=job_id, amount=total, model=model,
                    pricing=quote.pricing.as_json())
    held = False
    if total > 0 and session.get_bind().dialect.name == "postgresql":
        # one round trip: the reserve and the hold row in one statement
        reserved = (await session.execute(repo.reserve_and_insert(key.id, total, month, hold))).scalar_one_or_none()
        held = True
    elif total > 0 or key.budget_micros is not None or key.monthly_budget_micros is not None:
        reserved = (await _reserve_prepared(session.get_bind().dialect).execute(
            session, {"key_id": key.id, "amount": total, "month": month})).scalar_one_or_none()
    else:
        reserved = 0
    if reserved is None:
        raise await refused_hold(session, key.id, total)
    if total > 0 and not held:
        await _rows_prepared(session.get_bind().dialect, (tuple(hold),)).execute(
            session, {f"r0_{name}": value for name, value in hold.items()})


@functools.lru_cache(maxsize=8)
def _reserve_prepared(dialect: Dialect) -> Prepared:
    return Prepared(repo.reserve(param("key_id"), param("amount"), param("month")), dialect)


@functools.lru_cache(maxsize=64)
def _rows_prepared(dialect: Dialect, ledger_rows: tuple[tuple[str, ...], ...]) -> Prepared:
    """:func:`core.billing.repo.insert_rows` of rows of these columns, parameters ``r<i>_<column>``."""
    table = LedgerEntry.__table__
    return Prepared(repo.insert_rows([{name: bound(param(f"r{i}_{name}"), table.c[name].type) for name in columns}
                                      for i, columns in enumerate(ledger_rows)]), dialect)


def submit_in_one(job: dict[str, Any], images: list[dict[str, Any]], *, key: ApiKey, quote: Quote, n: int,
                  model: str, dialect: Dialect) -> tuple[Prepared, dict[str, Any]]:
    """PostgreSQL: a submit in one statement (:func:`core.repo.jobs.submit_statement`): the job,
    its images and, when there is a hold or a budget, the key's reserve (no job is inserted when
    the hold does not fit the budget: the statement then counts 0) and the hold row. Built and
    compiled once per shape; given here with its parameters."""
    job = jobs.with_defaults(Job, job)
    images = [jobs.with_defaults(JobImage, image) for image in images]
    params: dict[str, Any] = {f"j_{name}": value for name, value in job.items()}
    for i, image in enumerate(images):
        params.update({f"i{i}_{name}": value for name, value in image.items()})
    total = quote.per_image_micros * n
    reserve = total > 0 or key.budget_micros is not None or key.monthly_budget_micros is not None
    hold_columns: tuple[str, ...] = ()
    if reserve:
        params.update(key_id=key.id, amount=total, month=month_of(job["created_at"]))
    if total > 0:
        hold = repo.row(kind=LedgerKind.HOLD, key_id=key.id, job_id=job["id"], amount=total, model=model,
                        pricing=quote.pricing.as_json())
        hold_columns = tuple(hold)
        params.update({f"h_{name}": value for name, value in hold.items()})
    return _submit_prepared(dialect, tuple(job), tuple(images[0]), len(images), reserve, hold_columns), params


@functools.lru_cache(maxsize=128)
def _submit_prepared(dialect: Dialect, job_columns: tuple[str, ...], image_columns: tuple[str, ...], n: int,
                     reserve: bool, hold_columns: tuple[str, ...]) -> Prepared:
    guard = repo.reserve(param("key_id"), param("amount"), param("month")).cte("reserved") if reserve else None
    writes = []
    if hold_columns and guard is not None:
        writes.append(repo.insert_rows_if([{name: param(f"h_{name}") for name in hold_columns}], guard).cte("hold"))
    statement = jobs.submit_statement({name: param(f"j_{name}") for name in job_columns},
                                      [{name: param(f"i{i}_{name}") for name in image_columns} for i in range(n)],
                                      guard=guard, writes=writes)
    return Prepared(statement, dialect)


async def refused_hold(session: AsyncSession, key_id: str, needed: int) -> QuotaExceededError:
    """The error of a hold of ``needed`` the key's budgets refused, naming the budget it did not
    fit (read again: the refusal is decided on the key's row, not on the key as authenticated)."""
    row = (await session.execute(repo.budget_counters(key_id))).one()
    if row.budget_micros is not None and row.committed_micros + needed > row.budget_micros:
        return _over_budget("budget", row.budget_micros, needed)
    return _over_budget("monthly budget", row.monthly_budget_micros, needed)


def _over_budget(which: str, limit: int | None, needed: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"This request would exceed the API key's {which} of ${format_usd(limit or 0)} "
        f"(it holds up to ${format_usd(needed)} until its images are delivered).",
        code="insufficient_quota")


# -- settlement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobBilling:
    """What settlement needs from a job: whose money, the prices in force at submit, the hold."""

    key_id: str
    job_id: str
    model: str
    hold_per_image: int
    pricing: PricingSnapshot | None

    @classmethod
    def of(cls, *, key_id: str, job_id: str, model: str, hold_per_image: int,
           pricing: dict[str, Any] | None) -> JobBilling:
        return cls(key_id=key_id, job_id=job_id, model=model, hold_per_image=hold_per_image,
                   pricing=PricingSnapshot.model_validate(pricing) if pricing else None)


@dataclass(frozen=True)
class Charge:
    """A delivered image's cost: the upstream's list cost and what the key is billed."""

    upstream_micros: int
    billed_micros: int


def charge_for(billing: JobBilling, applied: AppliedParams, usage: Usage) -> Charge:
    """The cost of an image delivered by ``applied``'s route, at the prices of the job's snapshot.

    The hold is an upper bound, so a bill is never more than the hold: should the upstream report
    more than the estimate allowed for, the excess is logged and not billed, and a budget can never
    be overrun.
    """
    price = billing.pricing.price_for(applied.model) if billing.pricing else None
    if price is None or billing.pricing is None:
        return Charge(upstream_micros=0, billed_micros=0)
    upstream = actual_image_micros(price, applied, usage)
    billed = billed_micros(upstream, billing.pricing.markup)
    if billing.hold_per_image and billed > billing.hold_per_image:
        log.error("image cost %d exceeds its hold %d (model %s); billed at the hold", billed,
                  billing.hold_per_image, applied.model)
        billed = billing.hold_per_image
    return Charge(upstream_micros=upstream, billed_micros=billed)


@dataclass(frozen=True)
class ImageRecord:
    """What an image's ledger rows say it was: how it ended, its size class, quality and tokens."""

    outcome: str
    size: str | None = None
    quality: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def columns(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "size": self.size, "quality": self.quality,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True)
class Settlement:
    """What settling one image writes: its ledger rows, the move of the key's committed spend and
    of its charges in all, and the charge added to its spend counters of ``periods``."""

    rows: list[dict[str, Any]]
    committed_delta: int
    charged: int
    periods: list[str]
    month: str | None = None
    """The UTC month its charge counts in, on the key's row (one of ``periods``)."""

    def shape(self) -> tuple[tuple[tuple[str, ...], ...], bool, bool, int]:
        """What its statements' form depends on: the ledger rows' columns, whether the key's
        counters move, whether it charged, how many spend counters it adds to."""
        return (tuple(tuple(row) for row in self.rows), bool(self.committed_delta or self.charged),
                bool(self.charged), len(self.periods))


def settlement_of(billing: JobBilling, image_id: str, *, charge: Charge | None, model: str | None,
                  record: ImageRecord) -> Settlement:
    """An image's settlement: its charge (a delivered image, 0 for a free one) or the release of
    its share of the hold (any other), the release of the hold share of a delivered image too,
    and the key's counters moved by their sum."""
    model = model or billing.model
    billed = charge.billed_micros if charge is not None else 0
    rows = []
    if charge is not None:
        rows.append(repo.row(
            kind=LedgerKind.CHARGE, key_id=billing.key_id, job_id=billing.job_id, image_id=image_id,
            amount=billed, upstream=charge.upstream_micros, model=model,
            pricing=billing.pricing.only(model).as_json() if billing.pricing else None, **record.columns()))
    if billing.hold_per_image or charge is None:
        image = record.columns() if charge is None else {}
        rows.append(repo.row(kind=LedgerKind.RELEASE, key_id=billing.key_id, job_id=billing.job_id,
                             image_id=image_id, amount=-billing.hold_per_image, model=model, **image))
    now = utcnow()
    return Settlement(rows=rows, committed_delta=billed - billing.hold_per_image, charged=billed,
                      periods=[day_of(now), month_of(now)] if billed else [], month=month_of(now) if billed else None)


def settle_image(billing: JobBilling, image_id: str, *, charge: Charge | None, model: str | None,
                 record: ImageRecord, dialect: Dialect) -> list[tuple[Prepared, dict[str, Any]]]:
    """The statements settling one image (:func:`settlement_of`), run in the transaction that
    records it, each with its parameters: the ledger rows, the key's counters if they move, its
    spend counters if it was charged (upserted, in ``dialect``'s syntax). Each is built and
    compiled once per shape (:func:`_settle_prepared`)."""
    settled = settlement_of(billing, image_id, charge=charge, model=model, record=record)
    params = settlement_params(billing, settled)
    shape = _settle_prepared(dialect, *settled.shape())
    return [(statement, params) for statement in shape]


def settlement_params(billing: JobBilling, settled: Settlement) -> dict[str, Any]:
    """The parameters of a settlement's statements (:func:`settle_image`, and the one-statement
    record of core/settlement.py): ``r<i>_<column>`` for each ledger row, ``period<i>`` for each
    spend counter, ``key_id``, ``delta`` (the committed spend's move) and ``charged``."""
    params: dict[str, Any] = {"key_id": billing.key_id, "delta": settled.committed_delta, "charged": settled.charged}
    if settled.charged:
        params["month"] = settled.month
    for i, row in enumerate(settled.rows):
        params.update({f"r{i}_{name}": value for name, value in row.items()})
    for i, period in enumerate(settled.periods):
        params[f"period{i}"] = period
    return params


@functools.lru_cache(maxsize=64)
def _settle_prepared(dialect: Dialect, ledger_rows: tuple[tuple[str, ...], ...], moves: bool, charged: bool,
                     periods: int) -> tuple[Prepared, ...]:
    statements = [_rows_prepared(dialect, ledger_rows)]
    if moves:
        statements.append(Prepared(repo.adjust_committed(param("key_id"), param("delta"),
                                                         charged=param("charged") if charged else 0,
                                                         month=param("month") if charged else None), dialect))
    if periods:
        statements.append(Prepared(repo.add_spend(param("key_id"), [param(f"period{i}") for i in range(periods)],
                                                  param("charged"), dialect=dialect.name), dialect))
    return tuple(statements)


def release_images(billing: JobBilling, image_ids: Sequence[str], *, outcome: str = "canceled") -> list[Executable]:
    """The statements giving back the hold of images that will never be delivered (canceled)."""
    if not image_ids:
        return []
    rows = [repo.row(kind=LedgerKind.RELEASE, key_id=billing.key_id, job_id=billing.job_id, image_id=image_id,
                     amount=-billing.hold_per_image, model=billing.model, outcome=outcome) for image_id in image_ids]
    statements: list[Executable] = [repo.insert_rows(rows)]
    if billing.hold_per_image:
        statements.append(repo.adjust_committed(billing.key_id, -billing.hold_per_image * len(image_ids)))
    return statements
