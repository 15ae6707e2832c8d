"""What the dashboard shows, read for one viewer and one period of UTC days.

Every figure of money and images is the usage report's: the same statement
(:func:`core.billing.repo.usage_query`) that answers ``GET /v1/usage`` and ``GET /admin/usage``,
run once per grouping (day, model, size, quality, key), shaped by :mod:`core.billing.reports` and
written by :func:`core.billing.money.format_usd`. So the dashboard of a key and that key's
``/v1/usage`` for the same days agree to the micro-dollar, and a key's dashboard never shows the
upstream's cost or the margin (``CUSTOMER_METRICS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from api.dashboard.charts import Chart, share, stacked_bars
from api.dashboard.session import Viewer
from api.state import AppState
from core import signing
from core.billing import reports
from core.billing.ledger import month_of
from core.billing.money import format_usd, format_usd_brief
from core.billing.repo import budget_use, usage_query
from core.billing.reports import CUSTOMER_METRICS, METRICS, BudgetUse, Group, UsageRow
from core.errors import InvalidRequestError
from core.models import ApiKey
from core.models.types import utcnow
from core.repo import dashboard

DEFAULT_DAYS = 30
MAX_DAYS = 366
RECENT_JOBS = 12
THUMBNAILS_PER_JOB = 4
TOP_KEYS = 10
BUDGET_ROWS = 25


@dataclass(frozen=True)
class Period:
    """UTC days from ``first`` to ``last``, both included."""

    first: date
    last: date

    @property
    def since(self) -> datetime:
        return datetime(self.first.year, self.first.month, self.first.day, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return datetime(self.last.year, self.last.month, self.last.day, tzinfo=UTC) + timedelta(days=1)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def _day(value: str, *, param: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"Invalid value for '{param}': use a date, YYYY-MM-DD.", param=param) from None


def parse_period(since: str | None, until: str | None, *, today: date) -> Period:
    """The period asked for: ``since`` and ``until`` as UTC dates (until included), by default the
    :data:`DEFAULT_DAYS` days to today; at most :data:`MAX_DAYS` days, ending on or before 9999-12-30."""
    last = _day(until, param="until") if until else today
    first = _day(since, param="since") if since else last - timedelta(days=DEFAULT_DAYS - 1)
    if last >= date.max:
        raise InvalidRequestError("Invalid value for 'until': it must be before 9999-12-31.", param="until")
    if first > last:
        raise InvalidRequestError("Invalid value for 'since': it is after 'until'.", param="since")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRequestError(f"Invalid value for 'since': show at most {MAX_DAYS} days at a time.", param="since")
    return Period(first=first, last=last)


def presets(today: date) -> list[tuple[str, str, str]]:
    """(label, since, until) of the period links."""
    start_of_month = today.replace(day=1)
    return [
        (label, first.isoformat(), today.isoformat())
        for label, first in (
            ("7 days", today - timedelta(days=6)),
            ("30 days", today - timedelta(days=29)),
            ("This month", start_of_month),
            ("90 days", today - timedelta(days=89)),
        )
    ]


@dataclass
class DashboardView:
    """Everything the page template draws."""

    viewer: Viewer
    scope: ApiKey | None
    """The one key whose usage is shown (the viewer's own, or the one the admin chose); None: all."""
    period: Period
    metrics: Sequence[str]
    totals: dict[str, Any]
    failure_rate: str
    spend_chart: Chart
    images_chart: Chart
    tables: dict[str, list[dict[str, Any]]]
    top_keys: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    budgets_more: int
    failures: list[dict[str, Any]]
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def shows_margin(self) -> bool:
        return "margin_usd" in self.metrics


def _row_view(row: UsageRow, metrics: Sequence[str], *, whole_micros: int) -> dict[str, Any]:
    view = row.as_dict(metrics)
    view["share"] = share(row.billed_micros, whole_micros)
    return view


async def load(state: AppState, viewer: Viewer, period: Period, *, scope: ApiKey | None) -> DashboardView:
    """The dashboard of ``viewer`` over ``period``: the usage of ``scope`` (a key), or of every key
    for the admin."""
    metrics = METRICS if viewer.is_admin else CUSTOMER_METRICS
    key_id = scope.id if scope is not None else None
    dialect = state.engine.dialect.name
    grouped: dict[Group, list[UsageRow]] = {}
    async with state.sessions() as session:
        for group in ("day", "model", "size", "quality", "key"):
            query = usage_query(
                dialect=dialect, group_by=[group], key_id=key_id, since=period.since, until=period.until
            )
            grouped[group] = reports.rows_from((await session.execute(query)).all(), [group])
        budget_rows = [
            BudgetUse.of(r) for r in await session.execute(budget_use(month=month_of(utcnow()), key_id=key_id))
        ]
        reasons = (
            await session.execute(dashboard.failure_reasons(key_id=key_id, since=period.since, until=period.until))
        ).all()
        recent = (await session.execute(dashboard.recent_jobs(key_id=key_id, limit=RECENT_JOBS))).all()
        images = (await session.execute(dashboard.delivered_of([r.Job.id for r in recent]))).all() if recent else []
    total = reports.total(grouped["model"])
    days = reports.by_day(grouped["day"], first=period.first, last=period.last)
    labels = [r.groups["day"].isoformat() for r in days]
    spend_chart = stacked_bars(
        name="spend",
        title="Spend per day (USD)",
        labels=labels,
        series={"billed_usd": [r.billed_micros for r in days]},
        fmt=format_usd,
        tick_fmt=lambda m: "$" + format_usd_brief(m),
    )
    images_chart = stacked_bars(
        name="images",
        title="Images per day",
        labels=labels,
        series={
            "images_succeeded": [r.images_succeeded for r in days],
            "images_failed": [r.images_failed for r in days],
        },
        fmt=str,
        tick_fmt=str,
    )
    whole = total.billed_micros
    tables = {
        g: [_row_view(r, metrics, whole_micros=whole) for r in reports.top(grouped[g], limit=len(grouped[g]))]
        for g in ("model", "size", "quality")
    }
    top_keys = [_row_view(r, metrics, whole_micros=whole) for r in reports.top(grouped["key"], limit=TOP_KEYS)]
    limited = [b for b in budget_rows if b.budget_micros is not None or b.monthly_budget_micros is not None]
    if scope is not None:
        limited = budget_rows  # the key's own row, limits or none
    limited.sort(
        key=lambda b: -max(_used(b.committed_micros, b.budget_micros), _used(b.month_micros, b.monthly_budget_micros))
    )
    return DashboardView(
        viewer=viewer,
        scope=scope,
        period=period,
        metrics=metrics,
        totals=total.as_dict(metrics),
        failure_rate=reports.failure_rate(total),
        spend_chart=spend_chart,
        images_chart=images_chart,
        tables=tables,
        top_keys=top_keys,
        budgets=[b.as_dict() for b in limited[:BUDGET_ROWS]],
        budgets_more=max(0, len(limited) - BUDGET_ROWS),
        failures=_failures(grouped["model"], reasons),
        jobs=_jobs(state, recent, images, show_key=viewer.is_admin and scope is None),
    )


def _used(used: int, cap: int | None) -> float:
    return used / cap if cap else 0.0


def _failures(models: list[UsageRow], reasons: Sequence[Any]) -> list[dict[str, Any]]:
    """Per model: images delivered and failed (the ledger's), the failure rate, the commonest errors."""
    codes: dict[str, list[tuple[str, int]]] = {}
    for reason in reasons:
        codes.setdefault(reason.model, []).append((reason.error_code or "unknown", int(reason.images)))
    out = [
        {
            "model": r.groups["model"],
            "images_succeeded": r.images_succeeded,
            "images_failed": r.images_failed,
            "failure_rate": reports.failure_rate(r),
            "errors": codes.get(r.groups["model"], [])[:3],
        }
        for r in models
    ]
    return sorted(out, key=lambda f: (-f["images_failed"], str(f["model"])))


def _jobs(state: AppState, recent: Sequence[Any], images: Sequence[Any], *, show_key: bool) -> list[dict[str, Any]]:
    """The newest jobs, each with up to :data:`THUMBNAILS_PER_JOB` of its images, through the
    gateway's own signed file URLs (relative: they open on whatever host the page was opened on)."""
    thumbs: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        mine = thumbs.setdefault(image.job_id, [])
        if len(mine) < THUMBNAILS_PER_JOB:
            query = signing.signed_query(state.signing_key, image.id, ttl_s=state.settings.file_url_ttl_s)
            mine.append(
                {"id": image.id, "url": f"/v1/files/{image.id}?{query}", "width": image.width, "height": image.height}
            )
    out = []
    for record in recent:
        job = record.Job
        prompt = job.request.get("prompt") if isinstance(job.request, dict) else None
        out.append(
            {
                "id": job.id,
                "status": job.status,
                "model": job.model,
                "n": job.n,
                "succeeded": job.succeeded,
                "failed": job.failed,
                "cost_usd": format_usd(job.cost_micros),
                "created_at": job.created_at.astimezone(UTC).isoformat(timespec="seconds"),
                "key_name": record.key_name if show_key else None,
                "prompt": (prompt[:120] + "…") if isinstance(prompt, str) and len(prompt) > 120 else prompt,
                "thumbnails": thumbs.get(job.id, []),
            }
        )
    return out
