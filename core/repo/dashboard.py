"""The usage dashboard's statements over jobs: the newest jobs, their delivered images (the
thumbnails), and why images failed. The money and image counts come from the ledger
(:func:`core.billing.repo.usage_query`); these only say which jobs and which errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select

from core.jobs import ImageStatus
from core.models import ApiKey, Job, JobImage


def recent_jobs(*, key_id: str | None, limit: int) -> Select[Job, str]:
    """The newest ``limit`` jobs (of one key, or of all) that have not expired, each with its key's
    name. Job ids are time-ordered, so the newest come first by id, through the primary key or the
    key's index."""
    query = (
        select(Job, ApiKey.name.label("key_name"))
        .join(ApiKey, ApiKey.id == Job.api_key_id)
        .where(Job.expired_at.is_(None))
        .order_by(Job.id.desc())
        .limit(limit)
    )
    if key_id is not None:
        query = query.where(Job.api_key_id == key_id)
    return query


def delivered_of(job_ids: Sequence[str]) -> Select[str, str, int, int | None, int | None]:
    """The delivered images of the jobs, in each job's order."""
    query = (
        select(JobImage.id, JobImage.job_id, JobImage.index, JobImage.width, JobImage.height)
        .where(
            JobImage.job_id.in_(list(job_ids)),
            JobImage.status == ImageStatus.SUCCEEDED,
            JobImage.object_key.is_not(None),
        )
        .order_by(JobImage.job_id, JobImage.index)
    )
    return query


def failure_reasons(
    *, key_id: str | None, since: datetime | None, until: datetime | None
) -> Select[str, str | None, int]:
    """How many images failed with each error code, per model, among those that ended in
    ``[since, until)``. An image that failed before any route served it counts under its job's model."""
    model = func.coalesce(JobImage.model, Job.model)
    query = (
        select(model.label("model"), JobImage.error_code.label("error_code"), func.count().label("images"))
        .join(Job, Job.id == JobImage.job_id)
        .where(JobImage.status == ImageStatus.FAILED)
    )
    if key_id is not None:
        query = query.where(Job.api_key_id == key_id)
    if since is not None:
        query = query.where(JobImage.finished_at >= since)
    if until is not None:
        query = query.where(JobImage.finished_at < until)
    return query.group_by(model, JobImage.error_code).order_by(model, func.count().desc())
