"""Scenario g's history key (bench/history.py): one real job of a key, copied by the database
itself into many jobs, images and ledger rows that the gateway's own models read back as valid
rows of that key, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench import history
from core.db import Base, sync_url
from core.models.api_key import ApiKey
from core.models.job import Job, JobImage
from core.models.ledger import LedgerEntry


def _one_real_job(url: str) -> tuple[str, datetime]:
    engine = sa.create_engine(sync_url(url))
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(ApiKey(id="key_hist", name="history", prefix="ig_hist", secret_hash="0" * 64))
        session.add(Job(id="job_seed", api_key_id="key_hist", dialect="openai", request={"prompt": "a fox"},
                        routes=[{}], model="gpt-image-2", status="succeeded", n=1, succeeded=1,
                        created_at=now, finished_at=now, request_hash="same"))
        session.flush()
        session.add(JobImage(id="img_seed", job_id="job_seed", index=0, status="succeeded", enqueued_at=now,
                             finished_at=now))
        session.flush()
        for kind, amount in (("hold", 40_000), ("charge", 39_000), ("release", -40_000)):
            session.add(LedgerEntry(api_key_id="key_hist", job_id="job_seed",
                                    job_image_id=None if kind == "hold" else "img_seed", kind=kind,
                                    amount_micros=amount, model="gpt-image-2", pricing={"markup": "1.2"},
                                    created_at=now))
        session.commit()
    engine.dispose()
    return "job_seed", now


def _check(url: str) -> None:
    job_id, now = _one_real_job(url)
    seeded = history.seed(url, job_id, jobs=40, ledger_rows=100)
    # 100 rows of 3 seed rows: 34 copies of each, with the seed's own 3
    assert seeded["inserted"] == {"jobs": 41, "job_images": 41, "ledger_entries": 3 + 34 * 3}

    engine = sa.create_engine(sync_url(url))
    with Session(engine) as session:
        jobs = session.scalars(sa.select(Job).where(Job.api_key_id == "key_hist")).all()
        entries = session.scalars(sa.select(LedgerEntry).where(LedgerEntry.api_key_id == "key_hist")).all()
        images = session.scalars(sa.select(JobImage)).all()
    engine.dispose()
    job_ids = {job.id for job in jobs}
    assert len({job.request_hash for job in jobs}) == 41  # distinct: no lookup by hash finds them all
    for job in jobs:
        if job.id != job_id:  # spread over the 60 days before, read back as aware datetimes
            assert now - timedelta(days=61) < job.created_at <= now - timedelta(days=1)
            assert job.finished_at is not None and job.finished_at == job.created_at
    assert {image.job_id for image in images} == job_ids
    assert all(entry.job_id in job_ids for entry in entries)
    assert {entry.job_image_id for entry in entries} - {image.id for image in images} == {None}
    assert sorted({entry.kind for entry in entries}) == ["charge", "hold", "release"]
    assert all(entry.pricing == {"markup": "1.2"} for entry in entries)


def test_seed_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'history.db'}")


@pytest.mark.integration
def test_seed_on_postgres(make_pg_database: Callable[[], str]) -> None:
    _check(make_pg_database())
