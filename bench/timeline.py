"""Where one request's time goes, from the clock times the client saw and the ones the gateway
wrote on the job (``jobs.created_at``, ``job_images.started_at`` / ``finished_at``).

For each request the client notes its wall-clock start and end and the ``x-imagegate-job-id`` of
the answer; the job's row then splits the request into four consecutive segments:

1. ``request -> job created``: HTTP in, body parsing, authentication, rate limit, planning
   (``created_at`` is taken in ``api/submit.py`` before the hold, the insert and the commit);
2. ``job created -> worker claimed``: hold, insert, commit, enqueue, broker, worker pick-up and
   the claim's start (``started_at`` is the claim's own clock);
3. ``worker claimed -> image recorded``: claim, upstream call, parsing, decoding, storing
   (``finished_at`` is taken before the final transaction);
4. ``image recorded -> answer received``: the final transaction, the job event, the API waking,
   re-reading the job, reading and encoding the image, rendering and sending the answer.

Every process runs on this machine's clock, so the segments are comparable to a millisecond.
"""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

SEGMENTS = ("request -> job created", "job created -> worker claimed", "worker claimed -> image recorded",
            "image recorded -> answer received")


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def breakdown(database_url: str, marks: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Median milliseconds per segment over ``marks`` (job id, client start, client end), for
    single-image jobs."""
    from core.db import sync_url

    if not marks:
        return {}
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT j.id, j.created_at, i.started_at, i.finished_at FROM jobs j "
                "JOIN job_images i ON i.job_id = j.id WHERE j.n = 1 AND j.id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)), {"ids": [m[0] for m in marks]}).all()
    finally:
        engine.dispose()
    by_id = {row[0]: tuple(_epoch(v) for v in row[1:]) for row in rows}
    segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for job_id, start, end in marks:
        created, claimed, recorded = by_id.get(job_id, (None, None, None))
        if created is None or claimed is None or recorded is None:
            continue
        points = (start, created, claimed, recorded, end)
        for name, (a, b) in zip(SEGMENTS, itertools.pairwise(points), strict=True):
            segments[name].append((b - a) * 1000)
    return {name: round(statistics.median(values), 1) for name, values in segments.items() if values} | {
        "requests": len(segments[SEGMENTS[0]])}
