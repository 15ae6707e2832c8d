"""Use case: price a job at submit and hold its estimate against the key's budgets.

The hold is the most an image of this request can cost — over every route that may serve it
(the planned model and its configured fallbacks) — times the markup in force, times n. The prices
and markup in force now are snapshotted on the job: settlement uses them, never a later price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing import ledger
from core.billing.pricing import PriceTable, billed_micros, estimate_image_micros, markup_for, usd
from core.errors import PermissionDeniedError, QuotaExceededError, ServiceUnavailableError
from core.generation import AppliedParams, GenerationRequest
from core.models import ApiKey, LedgerEntry, LedgerKind
from core.models.types import utcnow

TIER_WINDOW = timedelta(days=90)


@dataclass(frozen=True)
class Hold:
    per_image_micros: int
    total_micros: int
    pricing: dict[str, Any]


def check_model_allowed(key: ApiKey, model: str) -> None:
    if key.models_allowed is not None and model not in key.models_allowed:
        raise PermissionDeniedError(f"This API key may not use the model '{model}'.", param="model",
                                    code="model_not_allowed")


async def price_and_hold(session: AsyncSession, *, key: ApiKey, job_id: str, request: GenerationRequest,
                         routes: list[AppliedParams], prices: PriceTable) -> Hold:
    """Compute the hold, reserve it within the key's budgets and add the hold row (no commit)."""
    route_prices = {}
    for route in routes:
        price = prices.get(route.model)
        if price is None:
            raise ServiceUnavailableError(f"The model '{route.model}' has no price configured.",
                                          code="model_not_priced")
        route_prices[route.model] = price
    now = utcnow()
    spend_90d = int(await session.scalar(ledger.charges_since(key.id, now - TIER_WINDOW)) or 0)
    markup = markup_for(key_markup=Decimal(key.markup) if key.markup else None, table=prices,
                        spend_90d_micros=spend_90d)
    estimate = max(estimate_image_micros(route_prices[r.model], r, request) for r in routes)
    per_image = billed_micros(estimate, markup)
    total = per_image * request.n
    pricing = {"markup": str(markup), "hold_per_image_micros": per_image,
               "routes": {model: price.snapshot() for model, price in route_prices.items()}}

    if total > 0 or key.budget_micros is not None:
        committed = (await session.execute(ledger.reserve(key.id, total))).scalar_one_or_none()
        if committed is None:
            raise _over_budget("budget", key.budget_micros, total)
    if key.monthly_budget_micros is not None:
        # the reserve above holds the key's row lock: concurrent submits of this key wait here
        month = await _month_spend(session, key.id, ledger.month_start(now))
        if month > key.monthly_budget_micros:
            raise _over_budget("monthly budget", key.monthly_budget_micros, total)
    if total > 0:
        session.add(ledger.hold(key_id=key.id, job_id=job_id, amount=total, pricing=pricing,
                                model=routes[0].model))
    return Hold(per_image_micros=per_image, total_micros=total, pricing=pricing)


async def _month_spend(session: AsyncSession, key_id: str, since: Any) -> int:
    """This month's charges plus every hold still open (committed includes the new hold)."""
    committed = int(await session.scalar(select(ApiKey.committed_micros).where(ApiKey.id == key_id)) or 0)
    charges_all = int(await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
            LedgerEntry.api_key_id == key_id, LedgerEntry.kind == LedgerKind.CHARGE)) or 0)
    charges_month = int(await session.scalar(ledger.charges_since(key_id, since)) or 0)
    return charges_month + (committed - charges_all)


def _over_budget(which: str, limit: int | None, needed: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"This request would exceed the API key's {which} of ${usd(limit or 0)} "
        f"(it holds up to ${usd(needed)} until its images are delivered).",
        code="insufficient_quota")
