"""The read of a finished job for its answer (core/repo/jobs.py ``JobRead``, compiled once, its
rows made into entities without the ORM's query machinery) gives exactly what the ORM loads,
column by column, on SQLite and on PostgreSQL, migrated as in production."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command

from core.db import async_session_factory, create_async_db_engine, create_sync_engine, sync_sessionmaker
from core.migrate import alembic_config
from core.models import Job, JobImage
from core.repo import jobs
from tests.worker.factories import make_api_key, make_job


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'read.db'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("make_pg_database")
        url = make()
    command.upgrade(alembic_config(url), "head")
    return url


def _every_column_set(job: Job, index: int) -> JobImage:
    """An image whose every column holds a value (none left to its default or NULL)."""
    at = datetime(2026, 12, 4, 3, 0, index, 123456, tzinfo=UTC)
    return JobImage(
        id=f"img_read{index}", job_id=job.id, index=index, status="succeeded", attempts=2, model="demo",
        provider="fake", upstream_model="fake-image-1", object_key=f"jobs/{job.id}/{index}.png",
        mime_type="image/png", width=64 + index, height=48, bytes=1_234_567 + index, text=f"caption \u00e9 {index}",
        input_tokens=11, input_image_tokens=3, output_tokens=1290, output_image_tokens=1280, cost_micros=39_000,
        upstream_cost_micros=30_000, size="64x48", quality="high", error_code="none", error_message="none",
        latency_ms=812, enqueued_at=at, started_at=at + timedelta(seconds=1),
        lease_until=at + timedelta(seconds=2), finished_at=at + timedelta(seconds=3))


def _columns(entity: Job | JobImage) -> dict[str, object]:
    return {attribute.key: getattr(entity, attribute.key) for attribute in type(entity).__mapper__.column_attrs}


def test_the_job_and_its_images_are_what_the_orm_loads(database: str) -> None:
    engine = create_sync_engine(database, pool_size=1, max_overflow=0)
    with sync_sessionmaker(engine).begin() as session:
        key = make_api_key(session, name="reads")
        job = make_job(session, key, n=2)
        job.started_at = job.finished_at = job.expires_at = datetime(2026, 12, 4, 3, 1, tzinfo=UTC)
        job.pricing, job.webhook_url, job.result_ttl_s = {"markup": "1.5", "routes": {}}, "https://hooks/x", 60
        job.idempotency_key, job.request_hash, job.error_code, job.error_message = "idem", "h" * 64, "e", "m"
        job.expired_at = datetime(2026, 12, 4, 3, 2, tzinfo=UTC)
        session.add_all([_every_column_set(job, 1), _every_column_set(job, 0)])
        alone = make_job(session, key)
        job_id, alone_id, key_id = job.id, alone.id, key.id
    with sync_sessionmaker(engine)() as session:
        loaded = session.get(Job, job_id)
        assert loaded is not None
        expected = _columns(loaded), [_columns(i) for i in sorted(session.query(JobImage).filter_by(job_id=job_id),
                                                                  key=lambda i: i.index)]
        expected_alone = session.get(Job, alone_id)
        assert expected_alone is not None
        expected_alone_columns = _columns(expected_alone)
    engine.dispose()

    async def read() -> tuple[object, ...]:
        engine = create_async_db_engine(database, pool_size=2, max_overflow=0)
        reads = async_session_factory(engine)
        try:
            plain = jobs.job_read(engine.dialect, keyed=False)
            keyed = jobs.job_read(engine.dialect, keyed=True)
            return (await plain.run(engine, reads, job_id), await plain.run(engine, reads, alone_id),
                    await keyed.run(engine, reads, job_id, key_id), await keyed.run(engine, reads, job_id, "key_other"),
                    await plain.run(engine, reads, "job_missing"))
        finally:
            await engine.dispose()

    found, found_alone, owned, not_owned, missing = asyncio.run(read())
    assert isinstance(found, tuple) and isinstance(found_alone, tuple) and isinstance(owned, tuple)
    job_read, images_read = found
    assert (_columns(job_read), [_columns(i) for i in images_read]) == expected
    assert [i.index for i in images_read] == [0, 1]
    assert isinstance(job_read.created_at, datetime) and job_read.created_at.tzinfo == UTC
    assert isinstance(job_read.request, dict) and job_read.applied == expected[0]["routes"][0]  # type: ignore[index]
    assert (_columns(found_alone[0]), found_alone[1]) == (expected_alone_columns, [])
    assert [i.id for i in owned[1]] == [i.id for i in images_read]
    assert not_owned is None and missing is None
