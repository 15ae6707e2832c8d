"""The statements of the readiness probe and of the metrics read at scrape time."""

from __future__ import annotations

from sqlalchemy import Select, func, literal, select

from core.jobs import ImageStatus
from core.models import JobImage


def ping() -> Select[int]:
    return select(literal(1))


def queue_depth() -> Select[str, int]:
    """Images waiting for an attempt or running, by status (served by the status index)."""
    return (select(JobImage.status, func.count()).where(JobImage.status.in_([ImageStatus.QUEUED, ImageStatus.RUNNING]))
            .group_by(JobImage.status))
