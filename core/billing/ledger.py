"""The cost ledger's rows and the statements that keep a key's budget exact.

Money moves in three kinds of append-only rows, all integer micro-dollars:

- ``hold``   at submit: the upper-bound estimate for the job's n images (n x hold per image);
- ``charge`` per delivered image: what it actually costs (with the upstream's list cost beside it),
  together with a ``release`` of that image's share of the hold;
- ``release`` per image not delivered (failed, canceled): its share of the hold comes back.

When a job has ended its holds are all released, and the sum of its rows is exactly what its
delivered images cost. ``api_keys.committed_micros`` is the running sum of a key's rows, updated in
the same transaction as the rows themselves; the budget check is one conditional update of it, so
concurrent submits cannot overspend (the update takes the key's row lock).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.sql.dml import ReturningUpdate, Update

from core.models import ApiKey, LedgerEntry, LedgerKind


def hold(*, key_id: str, job_id: str, amount: int, pricing: dict[str, Any], model: str) -> LedgerEntry:
    return LedgerEntry(api_key_id=key_id, job_id=job_id, kind=LedgerKind.HOLD, amount_micros=amount,
                       upstream_cost_micros=0, model=model, pricing=pricing)


def charge(*, key_id: str, job_id: str, image_id: str, amount: int, upstream: int, model: str,
           pricing: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(api_key_id=key_id, job_id=job_id, job_image_id=image_id, kind=LedgerKind.CHARGE,
                       amount_micros=amount, upstream_cost_micros=upstream, model=model, pricing=pricing)


def release(*, key_id: str, job_id: str, image_id: str | None, amount: int, model: str) -> LedgerEntry:
    return LedgerEntry(api_key_id=key_id, job_id=job_id, job_image_id=image_id, kind=LedgerKind.RELEASE,
                       amount_micros=-amount, upstream_cost_micros=0, model=model)


def reserve(key_id: str, amount: int) -> ReturningUpdate[int]:
    """Add ``amount`` to the key's committed spend if it stays within the key's budget."""
    return (
        update(ApiKey)
        .where(ApiKey.id == key_id,
               or_(ApiKey.budget_micros.is_(None), ApiKey.committed_micros + amount <= ApiKey.budget_micros))
        .values(committed_micros=ApiKey.committed_micros + amount)
        .returning(ApiKey.committed_micros)
    )


def adjust_committed(key_id: str, delta: int) -> Update:
    return update(ApiKey).where(ApiKey.id == key_id).values(committed_micros=ApiKey.committed_micros + delta)


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def charges_since(key_id: str, since: datetime) -> Select[int]:
    """What the key was billed since ``since`` (spend-based markup tiers)."""
    return select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
        LedgerEntry.api_key_id == key_id, LedgerEntry.kind == LedgerKind.CHARGE, LedgerEntry.created_at >= since)
