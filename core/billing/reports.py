"""Usage and cost reports, grouped by key, model, size, quality and day.

One query (:func:`core.billing.repo.usage_query`, from the ledger alone) serves ``GET /v1/usage``, ``GET /admin/usage``
and ``imagegate usage``; this module shapes its rows. Images, tokens and money all come from the
ledger (each finished image's charge or release row says what the image was), so a report's
totals equal the ledger's sums to the micro-dollar, and stay so after jobs are deleted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
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
