"""The ledger's statements: its rows and the key's committed spend (the billing repository).

Plain SQLAlchemy Core statements, executed by whichever side moves the money (the API's async
session at submit and cancel, the worker's sync session at settlement), always inside the caller's
transaction. :mod:`core.billing.ledger` decides what to write; this module only says how.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, func, insert, or_, select, update
from sqlalchemy.sql.dml import ReturningUpdate, Update

from core.models import ApiKey
from core.models.ledger import LedgerEntry, LedgerKind
from core.models.types import utcnow


def row(*, kind: LedgerKind, key_id: str, job_id: str, amount: int, model: str, image_id: str | None = None,
        upstream: int = 0, pricing: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ledger row's values (append-only: rows are only ever inserted)."""
    return {"api_key_id": key_id, "job_id": job_id, "job_image_id": image_id, "kind": kind,
            "amount_micros": amount, "upstream_cost_micros": upstream, "model": model, "pricing": pricing,
            "created_at": utcnow()}


def insert_rows(rows: list[dict[str, Any]]) -> Insert:
    """Append ledger rows, in one statement."""
    return insert(LedgerEntry).values(rows)


def reserve(key_id: str, amount: int) -> ReturningUpdate[int]:
    """Add ``amount`` to the key's committed spend if it stays within the key's budget; returns the
    new committed spend, or no row when the budget would be exceeded. The update takes the key's
    row lock: concurrent submits of one key are serialised here and cannot overspend."""
    return (
        update(ApiKey)
        .where(ApiKey.id == key_id,
               or_(ApiKey.budget_micros.is_(None), ApiKey.committed_micros + amount <= ApiKey.budget_micros))
        .values(committed_micros=ApiKey.committed_micros + amount)
        .returning(ApiKey.committed_micros)
    )


def adjust_committed(key_id: str, delta: int) -> Update:
    """Move the key's committed spend by ``delta`` (a charge minus the hold it replaces)."""
    return update(ApiKey).where(ApiKey.id == key_id).values(committed_micros=ApiKey.committed_micros + delta)


def charges_since(key_id: str, since: datetime) -> Select[int]:
    """What the key was billed since ``since``."""
    return select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
        LedgerEntry.api_key_id == key_id, LedgerEntry.kind == LedgerKind.CHARGE, LedgerEntry.created_at >= since)


def charges_total(key_id: str) -> Select[int]:
    """What the key was ever billed."""
    return select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
        LedgerEntry.api_key_id == key_id, LedgerEntry.kind == LedgerKind.CHARGE)


def committed(key_id: str) -> Select[int]:
    """The key's committed spend: open holds plus charges."""
    return select(ApiKey.committed_micros).where(ApiKey.id == key_id)
