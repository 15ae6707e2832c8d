"""The usage report's shapes the dashboard draws (core/billing/reports.py), its chart geometry
(api/dashboard/charts.py) and the brief money format of chart axes (core/billing/money.py)."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest

from api.dashboard.charts import nice_step, share, stacked_bars
from core.billing.money import format_usd, format_usd_brief
from core.billing.reports import BudgetUse, UsageRow, by_day, failure_rate, percent, top


def usage(day: str | date, billed: int, ok: int = 1, failed: int = 0) -> UsageRow:
    return UsageRow(
        groups={"day": day},
        images_succeeded=ok,
        images_failed=failed,
        input_tokens=0,
        output_tokens=0,
        upstream_cost_micros=0,
        billed_micros=billed,
    )


def test_by_day_has_one_row_per_day_and_zeros_where_nothing_was_billed() -> None:
    # SQLite's date() answers strings, PostgreSQL's cast dates: both are read
    rows = [usage("2026-11-29", 150_000), usage(date(2026, 12, 1), 38_700, ok=2, failed=1)]
    days = by_day(rows, first=date(2026, 11, 28), last=date(2026, 12, 2))
    assert [r.groups["day"] for r in days] == [
        date(2026, 11, 28),
        date(2026, 11, 29),
        date(2026, 11, 30),
        date(2026, 12, 1),
        date(2026, 12, 2),
    ]
    assert [r.billed_micros for r in days] == [0, 150_000, 0, 38_700, 0]
    assert [(r.images_succeeded, r.images_failed) for r in days][3] == (2, 1)


def test_percentages_round_half_up_to_one_decimal() -> None:
    assert percent(1, 6) == "16.7" and percent(1, 8) == "12.5" and percent(1, 16) == "6.3"
    assert percent(0, 0) == "0.0" and percent(3, 3) == "100.0"
    assert failure_rate(usage("2026-12-01", 0, ok=3, failed=1)) == "25.0"


def test_top_rows_are_those_billed_most() -> None:
    rows = [usage("a", 10), usage("b", 30), usage("c", 20), usage("d", 30, ok=5)]
    assert [r.billed_micros for r in top(rows, limit=3)] == [30, 30, 20]
    assert top(rows, limit=1)[0].images_succeeded == 5


def test_budget_use_counts_open_holds_against_both_budgets() -> None:
    record = SimpleNamespace(
        _mapping={
            "id": "key_1",
            "name": "alpha",
            "revoked_at": None,
            "budget_micros": 2_000_000,
            "monthly_budget_micros": 1_000_000,
            "committed_micros": 700_000,
            "charged_micros": 600_000,
            "month_charged_micros": 250_000,
        }
    )
    use = BudgetUse.of(record).as_dict()
    assert use["budget"] == {"used_usd": "0.700000", "limit_usd": "2.000000", "percent": "35.0", "left_usd": "1.300000"}
    # this month's charges and the 0.10 still held
    assert use["monthly_budget"] == {
        "used_usd": "0.350000",
        "limit_usd": "1.000000",
        "percent": "35.0",
        "left_usd": "0.650000",
    }
    unlimited = BudgetUse.of(
        SimpleNamespace(_mapping={**record._mapping, "budget_micros": None, "monthly_budget_micros": None})
    ).as_dict()
    assert unlimited["budget"] is None and unlimited["monthly_budget"] is None


@pytest.mark.parametrize(
    ("micros", "text"),
    [(150_000, "0.15"), (38_700, "0.0387"), (12_000_000, "12.00"), (0, "0.00"), (1, "0.000001"), (-2_500_000, "-2.50")],
)
def test_the_brief_format_drops_only_zeros(micros: int, text: str) -> None:
    assert format_usd_brief(micros) == text
    assert format_usd(micros).startswith(text)


@pytest.mark.parametrize(
    ("largest", "step"),
    [(0, 1), (3, 1), (7, 2), (10, 5), (41, 20), (150_000, 50_000), (999_999, 500_000), (1_000_001, 500_000)],
)
def test_axis_steps_are_one_two_or_five_times_a_power_of_ten(largest: int, step: int) -> None:
    assert nice_step(largest) == step and 4 * step >= largest


def test_a_chart_draws_every_value_exactly_and_to_scale() -> None:
    chart = stacked_bars(
        name="images",
        title="t",
        labels=["2026-12-01", "2026-12-02"],
        series={"ok": [6, 2], "failed": [2, 0]},
        fmt=str,
        tick_fmt=str,
    )
    first, second = chart.bars
    assert [s.text for s in first.segments] == ["6", "2"] and first.total_text == "8"
    assert [t.text for t in chart.ticks] == ["0", "2", "4", "6", "8"]
    # the full bar reaches the top tick; the second is a quarter of it
    assert first.segments[-1].y == chart.top and sum(s.height for s in first.segments) == chart.plot_height
    assert sum(s.height for s in second.segments) == chart.plot_height / 4
    assert share(1, 4) == 0.25 and share(5, 0) == 0.0 and share(9, 4) == 1.0
