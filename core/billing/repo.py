"""The ledger's statements: its rows and the key's committed spend (the billing repository).

Plain SQLAlchemy Core statements, executed by whichever side moves the money (the API's async
session at submit and cancel, the worker's async session at settlement), always inside the caller's
transaction. :mod:`core.billing.ledger` decides what to write; this module only says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    Date,
    Insert,
    Select,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningUpdate, Update
from sqlalchemy.sql.elements import BindParameter

from core.billing.reports import Group
from core.models import ApiKey
from core.models.ledger import KeySpend, LedgerEntry, LedgerKind
from core.models.types import utcnow
from core.repo.binds import bound


def row(*, kind: LedgerKind, key_id: str, job_id: str, amount: int, model: str, image_id: str | None = None,
        upstream: int = 0, pricing: dict[str, Any] | None = None, **image: Any) -> dict[str, Any]:
    """One ledger row's values (append-only: rows are only ever inserted). An image's rows also
    say what it was (``outcome``, ``size``, ``quality``, ``input_tokens``, ``output_tokens``)."""
    values = {"api_key_id": key_id, "job_id": job_id, "job_image_id": image_id, "kind": kind,
              "amount_micros": amount, "upstream_cost_micros": upstream, "model": model, "pricing": pricing,
              "created_at": utcnow(), "outcome": None, "size": None, "quality": None, "input_tokens": None,
              "output_tokens": None}
    values.update(image)
    return values


def insert_rows(rows: list[dict[str, Any]]) -> Insert:
    """Append ledger rows, in one statement."""
    return insert(LedgerEntry).values(rows)


def reserve(key_id: Any, amount: Any, month: Any) -> ReturningUpdate[int]:
    """Add ``amount`` to the key's committed spend if it stays within the key's budget and its
    monthly budget (this month's charges plus its open holds, the new one included: ``month`` is
    the UTC month of the request, ``2026-12``); returns the new committed spend, or no row when a
    budget would be exceeded. The update takes the key's row lock: concurrent submits of one key
    are serialised here and cannot overspend, and every value the condition reads is on that row
    (PostgreSQL re-reads it once the lock is granted)."""
    month_charged = case((ApiKey.charged_month == month, ApiKey.month_charged_micros), else_=0)
    return (
        update(ApiKey)
        .where(ApiKey.id == key_id,
               or_(ApiKey.budget_micros.is_(None), ApiKey.committed_micros + amount <= ApiKey.budget_micros),
               or_(ApiKey.monthly_budget_micros.is_(None),
                   ApiKey.committed_micros + amount - ApiKey.charged_micros + month_charged
                   <= ApiKey.monthly_budget_micros))
        .values(committed_micros=ApiKey.committed_micros + amount)
        .returning(ApiKey.committed_micros)
    )


def reserve_and_insert(key_id: str, amount: int, month: str, hold: dict[str, Any]) -> Insert:
    """PostgreSQL: :func:`reserve` and the hold row ``hold`` (from :func:`row`) in one statement,
    a data-modifying CTE: the row is inserted only if the reserve took. Returns the row's id, or
    no row when a budget would be exceeded."""
    return insert_rows_if([hold], reserve(key_id, amount, month).cte("reserved")).returning(LedgerEntry.id)


def insert_rows_if(rows: list[dict[str, Any]], guard: CTE) -> Insert:
    """PostgreSQL, in one statement with ``guard`` (a data-modifying CTE): :func:`insert_rows`,
    only if ``guard`` returned a row. Values may be :func:`core.repo.binds.param` placeholders."""
    table = LedgerEntry.__table__
    columns = list(rows[0])
    selects = [select(*[bound(r[c], table.c[c].type).label(c) for c in columns]).select_from(guard) for r in rows]
    return insert(LedgerEntry).from_select(columns, selects[0] if len(selects) == 1 else union_all(*selects))


def adjust_committed_if(key_id: Any, delta: Any, guard: CTE, *, charged: Any = 0, month: Any = None) -> Update:
    """PostgreSQL, in one statement with ``guard``: :func:`adjust_committed`, only if ``guard``
    returned a row."""
    return adjust_committed(key_id, delta, charged=charged, month=month).where(
        exists(select(literal(1)).select_from(guard)))


def add_spend_if(key_id: Any, periods: Sequence[Any], amount: Any, guard: CTE) -> Insert:
    """PostgreSQL, in one statement with ``guard``: :func:`add_spend`, only if ``guard`` returned
    a row."""
    columns = KeySpend.__table__.c
    selects = [select(bound(key_id, columns.api_key_id.type).label("api_key_id"),
                      bound(p, columns.period.type).label("period"),
                      bound(amount, columns.charged_micros.type).label("charged_micros"))
               .select_from(guard) for p in periods]
    statement = postgresql.insert(KeySpend).from_select(["api_key_id", "period", "charged_micros"],
                                                        selects[0] if len(selects) == 1 else union_all(*selects))
    return statement.on_conflict_do_update(
        index_elements=[KeySpend.api_key_id, KeySpend.period],
        set_={"charged_micros": KeySpend.charged_micros + statement.excluded.charged_micros})


def adjust_committed(key_id: Any, delta: Any, *, charged: Any = 0, month: Any = None) -> Update:
    """Move the key's committed spend by ``delta`` (a charge minus the hold it replaces) and its
    charges in all by ``charged`` (left alone when 0), counted in the UTC ``month`` of the charge
    (given with it): added to the month's charges, or starting them when ``month`` is a new one. A
    charge of a month already past (settled as the next began, committed after a charge of the new
    one) leaves the month's charges alone."""
    values: dict[str, Any] = {"committed_micros": ApiKey.committed_micros + delta}
    if isinstance(charged, BindParameter) or charged:
        if month is None:
            raise ValueError("a charge is counted in its month")
        newer = or_(ApiKey.charged_month.is_(None), ApiKey.charged_month < month)
        values["charged_micros"] = ApiKey.charged_micros + charged
        values["month_charged_micros"] = case((ApiKey.charged_month == month, ApiKey.month_charged_micros + charged),
                                              (newer, charged), else_=ApiKey.month_charged_micros)
        values["charged_month"] = case((newer, month), else_=ApiKey.charged_month)
    return update(ApiKey).where(ApiKey.id == key_id).values(values)


def add_spend(key_id: Any, periods: Sequence[Any], amount: Any, *, dialect: str) -> Insert:
    """Add a charge to the key's spend counters of ``periods`` (its UTC day and month), creating
    them as needed: one statement, whichever transaction gets there first."""
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = builder(KeySpend).values([{"api_key_id": key_id, "period": p, "charged_micros": amount}
                                          for p in periods])
    return statement.on_conflict_do_update(
        index_elements=[KeySpend.api_key_id, KeySpend.period],
        set_={"charged_micros": KeySpend.charged_micros + statement.excluded.charged_micros})


def spend_in(key_id: str, periods: Sequence[str]) -> Select[int]:
    """What the key was charged in ``periods`` (days or months), from its counters."""
    return select(func.coalesce(func.sum(KeySpend.charged_micros), 0)).where(
        KeySpend.api_key_id == key_id, KeySpend.period.in_(list(periods)))


def budget_counters(key_id: str) -> Select[int | None, int | None, int]:
    """The key's budgets and the counters :func:`reserve` checks them against."""
    return select(ApiKey.budget_micros, ApiKey.monthly_budget_micros, ApiKey.committed_micros).where(
        ApiKey.id == key_id)


# -- usage reports --------------------------------------------------------------------------------


def _day(dialect: str) -> Any:
    if dialect == "postgresql":
        return cast(func.timezone("UTC", LedgerEntry.created_at), Date)
    return func.date(LedgerEntry.created_at)


def usage_query(*, dialect: str, group_by: Sequence[Group], key_id: str | None = None,
                since: datetime | None = None, until: datetime | None = None) -> Select[Any]:
    """The images that ended delivered or failed in ``[since, until)``, grouped as asked, from the
    ledger alone (an image's charge or release row says what it was): the figures are the ledger's
    to the micro-dollar, and they stay so after retention deletes jobs."""
    columns = {"key": ApiKey.name, "model": LedgerEntry.model, "size": LedgerEntry.size,
               "quality": LedgerEntry.quality, "day": _day(dialect)}
    chosen = [columns[g].label(g) for g in group_by]
    charge = LedgerEntry.kind == LedgerKind.CHARGE
    query = (
        select(
            *chosen,
            func.sum(case((LedgerEntry.outcome == "succeeded", 1), else_=0)).label("images_succeeded"),
            func.sum(case((LedgerEntry.outcome == "failed", 1), else_=0)).label("images_failed"),
            func.coalesce(func.sum(LedgerEntry.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(LedgerEntry.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(case((charge, LedgerEntry.upstream_cost_micros), else_=0)), 0)
            .label("upstream_cost_micros"),
            func.coalesce(func.sum(case((charge, LedgerEntry.amount_micros), else_=0)), 0).label("billed_micros"),
        )
        .select_from(LedgerEntry)
        .join(ApiKey, ApiKey.id == LedgerEntry.api_key_id)
        .where(LedgerEntry.outcome.in_(["succeeded", "failed"]))
    )
    conditions = []
    if key_id is not None:
        conditions.append(LedgerEntry.api_key_id == key_id)
    if since is not None:
        conditions.append(LedgerEntry.created_at >= since)
    if until is not None:
        conditions.append(LedgerEntry.created_at < until)
    if conditions:
        query = query.where(and_(*conditions))
    if group_by:
        # by the expressions, not the labels: "model", "size" and "quality" are also column names,
        # which makes a label ambiguous in GROUP BY on SQLite and PostgreSQL alike
        query = query.group_by(*[columns[g] for g in group_by]).order_by(*[columns[g] for g in group_by])
    return query


def budget_use(
    *, month: str, key_id: str | None = None
) -> Select[str, str, datetime | None, int | None, int | None, int, int, int]:
    """Each key (or the one ``key_id``) with its limits and what counts against them: its committed
    spend (open holds plus charges, what the total budget caps), its charges in all, and its
    charges in ``month`` (``YYYY-MM``, its spend counter), by name."""
    query = (
        select(ApiKey.id, ApiKey.name, ApiKey.revoked_at, ApiKey.budget_micros, ApiKey.monthly_budget_micros,
               ApiKey.committed_micros, ApiKey.charged_micros,
               func.coalesce(KeySpend.charged_micros, 0).label("month_charged_micros"))
        .select_from(ApiKey)
        .outerjoin(KeySpend, and_(KeySpend.api_key_id == ApiKey.id, KeySpend.period == month))
        .order_by(ApiKey.name)
    )
    if key_id is not None:
        query = query.where(ApiKey.id == key_id)
    return query
