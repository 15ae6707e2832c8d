"""``GET /v1/usage``: the calling key's usage and what it was billed, grouped by day and model by
default (the upstream cost and the margin are in the operator's report only, ``/admin/usage``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from api.deps import ApiKeyDep, StateDep
from api.state import AppState
from core.billing.repo import usage_query
from core.billing.reports import CUSTOMER_METRICS, METRICS, Group, parse_groups, report, rows_from, to_csv
from core.errors import InvalidRequestError

router = APIRouter(tags=["Usage"])


def parse_when(value: str | None, *, param: str, end: bool) -> datetime | None:
    """``YYYY-MM-DD`` (a whole UTC day; an end date is inclusive) or an ISO 8601 instant, in UTC.
    A date or time outside what a UTC datetime holds (``9999-12-31`` as an end, whose next day is
    year 10000) is an error naming ``param``."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidRequestError(f"Invalid value for '{param}': use YYYY-MM-DD or an ISO 8601 time "
                                  "between the years 1 and 9999.", param=param) from None


async def run_report(state: AppState, *, key_id: str | None, since: str | None, until: str | None,
                     group_by: str | None, default: list[Group], fmt: str,
                     metrics: Sequence[str] = METRICS) -> Response:
    """The usage report as JSON or CSV, with ``metrics`` (the operator's by default)."""
    try:
        groups = parse_groups(group_by, default=default)
    except ValueError as exc:
        raise InvalidRequestError(f"Invalid value for 'group_by': {exc}.", param="group_by") from None
    if fmt not in ("json", "csv"):
        raise InvalidRequestError("Invalid value for 'format': use 'json' or 'csv'.", param="format")
    start, stop = parse_when(since, param="since", end=False), parse_when(until, param="until", end=True)
    query = usage_query(dialect=state.engine.dialect.name, group_by=groups, key_id=key_id, since=start, until=stop)
    async with state.sessions() as session:
        rows = rows_from((await session.execute(query)).all(), groups)
    if fmt == "csv":
        return Response(to_csv(rows, group_by=groups, metrics=metrics), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="imagegate-usage.csv"'})
    return JSONResponse(report(rows, group_by=groups, since=start, until=stop, metrics=metrics))


@router.get("/v1/usage")
async def my_usage(
    key: ApiKeyDep, state: StateDep,
    since: Annotated[str | None, Query(description="YYYY-MM-DD or ISO 8601")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD (inclusive) or ISO 8601")] = None,
    group_by: Annotated[str | None, Query(description="comma-separated: model, size, quality, day")] = None,
    format: Annotated[str, Query()] = "json",
) -> Response:
    return await run_report(state, key_id=key.id, since=since, until=until, group_by=group_by,
                            default=["day", "model"], fmt=format, metrics=CUSTOMER_METRICS)
