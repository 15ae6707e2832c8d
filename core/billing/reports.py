"""Usage and cost reports, grouped by key, model, size, quality and day.

One query (:func:`core.billing.repo.usage_query`, from the ledger alone) serves ``GET /v1/usage``, ``GET /admin/usage``,
``imagegate usage`` and the dashboard (``/dashboard``); this module shapes its rows. Images, tokens and money
all come from the ledger (each finished image's charge or release row says what the image was), so
a report's totals equal the ledger's sums to the micro-dollar, and stay so after jobs are deleted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from core.billing.money import format_usd

Group = Literal["key", "model", "size", "quality", "day"]
GROUPS: tuple[Group, ...] = ("key", "model", "size", "quality", "day")
METRICS = ("images_succeeded", "images_failed", "input_tokens", "output_tokens", "upstream_cost_usd",
           "billed_usd", "margin_usd")
"""The operator's report (``/admin/usage``, ``imagegate usage``): what upstreams cost, what keys
were billed, and the margin between them."""
CUSTOMER_METRICS = ("images_succeeded", "images_failed", "input_tokens", "output_tokens", "billed_usd")
"""A key's own report (``/v1/usage``): what it pays; never the upstream's cost or the margin."""


@dataclass
class UsageRow:
    groups: dict[str, Any]
    images_succeeded: int
    images_failed: int
    input_tokens: int
    output_tokens: int
    upstream_cost_micros: int
    billed_micros: int

    @property
    def margin_micros(self) -> int:
        return self.billed_micros - self.upstream_cost_micros

    def as_dict(self, metrics: Sequence[str] = METRICS) -> dict[str, Any]:
        """The groups, then the ``metrics`` asked for."""
        out: dict[str, Any] = {}
        for name, value in self.groups.items():
            out[name] = value.isoformat() if isinstance(value, date) else value
        every = dict(images_succeeded=self.images_succeeded, images_failed=self.images_failed,
                     input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                     upstream_cost_usd=format_usd(self.upstream_cost_micros),
                     billed_usd=format_usd(self.billed_micros), margin_usd=format_usd(self.margin_micros))
        out.update((m, every[m]) for m in metrics)
        return out


def rows_from(result: Sequence[Any], group_by: Sequence[Group]) -> list[UsageRow]:
    rows = []
    for record in result:
        mapping = record._mapping
        rows.append(UsageRow(
            groups={g: mapping[g] for g in group_by},
            images_succeeded=int(mapping["images_succeeded"] or 0),
            images_failed=int(mapping["images_failed"] or 0),
            input_tokens=int(mapping["input_tokens"] or 0),
            output_tokens=int(mapping["output_tokens"] or 0),
            upstream_cost_micros=int(mapping["upstream_cost_micros"] or 0),
            billed_micros=int(mapping["billed_micros"] or 0),
        ))
    return rows


def total(rows: Sequence[UsageRow]) -> UsageRow:
    return UsageRow(groups={}, images_succeeded=sum(r.images_succeeded for r in rows),
                    images_failed=sum(r.images_failed for r in rows), input_tokens=sum(r.input_tokens for r in rows),
                    output_tokens=sum(r.output_tokens for r in rows),
                    upstream_cost_micros=sum(r.upstream_cost_micros for r in rows),
                    billed_micros=sum(r.billed_micros for r in rows))


def report(rows: Sequence[UsageRow], *, group_by: Sequence[Group], since: datetime | None,
           until: datetime | None, metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    return {"object": "usage", "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None, "group_by": list(group_by),
            "totals": total(rows).as_dict(metrics), "data": [r.as_dict(metrics) for r in rows]}


def to_csv(rows: Sequence[UsageRow], *, group_by: Sequence[Group], metrics: Sequence[str] = METRICS) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*group_by, *metrics])
    for row in rows:
        data = row.as_dict(metrics)
        writer.writerow([data[g] if data[g] is not None else "" for g in group_by] + [data[m] for m in metrics])
    return buffer.getvalue()


def parse_groups(value: str | None, *, default: Sequence[Group]) -> list[Group]:
    if not value:
        return list(default)
    groups = [g.strip() for g in value.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return groups  # type: ignore[return-value]


# -- the dashboard's views of the same rows -------------------------------------------------------


def by_day(rows: Sequence[UsageRow], *, first: date, last: date) -> list[UsageRow]:
    """The rows of a report grouped by ``day`` alone, one for each day from ``first`` to ``last``
    (inclusive), a day without usage as a row of zeros: what a chart of days draws."""
    found = {_as_date(r.groups["day"]): r for r in rows}
    days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
    empty = UsageRow(groups={}, images_succeeded=0, images_failed=0, input_tokens=0, output_tokens=0,
                     upstream_cost_micros=0, billed_micros=0)
    return [replace(found.get(day) or empty, groups={"day": day}) for day in days]


def _as_date(value: Any) -> date:
    # SQLite's date() answers a string, PostgreSQL's cast a date
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage with one decimal, rounded half up ("12.5"); "0.0" of nothing."""
    if whole <= 0:
        return "0.0"
    return str((Decimal(100 * part) / Decimal(whole)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def failure_rate(row: UsageRow) -> str:
    """The share of the row's finished images that failed, in percent (canceled images do not count)."""
    return percent(row.images_failed, row.images_succeeded + row.images_failed)


def top(rows: Sequence[UsageRow], *, limit: int) -> list[UsageRow]:
    """The ``limit`` rows billed most (then with the most images), highest first."""
    return sorted(rows, key=lambda r: (-r.billed_micros, -r.images_succeeded))[:limit]


@dataclass(frozen=True)
class BudgetUse:
    """A key's budgets and what counts against each, in micro-dollars. The total budget caps the
    key's committed spend (charges plus open holds); the monthly one this month's charges plus the
    open holds (:func:`core.billing.ledger.take_hold`)."""

    key_id: str
    name: str
    revoked: bool
    budget_micros: int | None
    committed_micros: int
    monthly_budget_micros: int | None
    month_micros: int
    """This month's charges plus the open holds."""

    @classmethod
    def of(cls, record: Any) -> BudgetUse:
        mapping = record._mapping
        holds = int(mapping["committed_micros"]) - int(mapping["charged_micros"])
        return cls(key_id=mapping["id"], name=mapping["name"], revoked=mapping["revoked_at"] is not None,
                   budget_micros=mapping["budget_micros"], committed_micros=int(mapping["committed_micros"]),
                   monthly_budget_micros=mapping["monthly_budget_micros"],
                   month_micros=int(mapping["month_charged_micros"] or 0) + holds)

    def as_dict(self) -> dict[str, Any]:
        def limit(used: int, cap: int | None) -> dict[str, Any] | None:
            if cap is None:
                return None
            return {"used_usd": format_usd(used), "limit_usd": format_usd(cap), "percent": percent(used, cap),
                    "left_usd": format_usd(max(0, cap - used))}

        return {"key_id": self.key_id, "name": self.name, "revoked": self.revoked,
                "committed_usd": format_usd(self.committed_micros), "month_usd": format_usd(self.month_micros),
                "budget": limit(self.committed_micros, self.budget_micros),
                "monthly_budget": limit(self.month_micros, self.monthly_budget_micros)}
