"""The usage report's query (shaped by :mod:`core.billing.reports`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Date, Select, and_, case, cast, func, select

from core.billing.reports import Group
from core.jobs import ImageStatus
from core.models import ApiKey, Job, JobImage


def _day(dialect: str) -> Any:
    if dialect == "postgresql":
        return cast(func.timezone("UTC", JobImage.finished_at), Date)
    return func.date(JobImage.finished_at)


def usage_query(*, dialect: str, group_by: Sequence[Group], key_id: str | None = None,
                since: datetime | None = None, until: datetime | None = None) -> Select[Any]:
    """Finished (succeeded or failed) images in ``[since, until)``, grouped as asked."""
    columns = {"key": ApiKey.name, "model": func.coalesce(JobImage.model, Job.model), "size": JobImage.size,
               "quality": JobImage.quality, "day": _day(dialect)}
    chosen = [columns[g].label(g) for g in group_by]
    succeeded = JobImage.status == ImageStatus.SUCCEEDED
    query = (
        select(
            *chosen,
            func.sum(case((succeeded, 1), else_=0)).label("images_succeeded"),
            func.sum(case((JobImage.status == ImageStatus.FAILED, 1), else_=0)).label("images_failed"),
            func.coalesce(func.sum(JobImage.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(JobImage.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(case((succeeded, JobImage.upstream_cost_micros), else_=0)), 0)
            .label("upstream_cost_micros"),
            func.coalesce(func.sum(case((succeeded, JobImage.cost_micros), else_=0)), 0).label("billed_micros"),
        )
        .select_from(JobImage)
        .join(Job, Job.id == JobImage.job_id)
        .join(ApiKey, ApiKey.id == Job.api_key_id)
        .where(JobImage.status.in_([ImageStatus.SUCCEEDED, ImageStatus.FAILED]))
    )
    conditions = []
    if key_id is not None:
        conditions.append(Job.api_key_id == key_id)
    if since is not None:
        conditions.append(JobImage.finished_at >= since)
    if until is not None:
        conditions.append(JobImage.finished_at < until)
    if conditions:
        query = query.where(and_(*conditions))
    if group_by:
        # by the expressions, not the labels: "model", "size" and "quality" are also column names,
        # which makes a label ambiguous in GROUP BY on SQLite and PostgreSQL alike
        query = query.group_by(*[columns[g] for g in group_by]).order_by(*[columns[g] for g in group_by])
    return query
