"""run_image against a real (SQLite) database: claim, generate, store, record, count, publish;
safe to repeat, fenced by the attempt number; failures recorded without leaking internals.
Also the sweeper's requeue_orphans statement."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import update

from core.config import Settings
from core.errors import ContentPolicyError
from core.events import InProcessEventBus
from core.generation import AppliedParams, GenerationRequest, ProviderImage
from core.job_updates import finish_image, requeue_orphans
from core.jobs import ImageStatus, JobStatus
from core.migrate import upgrade_head
from core.models import Job, JobImage
from core.models.types import utcnow
from core.storage import image_object_key
from tests.worker.factories import make_api_key, make_image, make_job
from worker.providers.demo import DemoProvider
from worker.providers.registry import ProviderRegistry
from worker.run_job import run_image
from worker.runtime import WorkerRuntime

NEVER_SENT = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A migrated SQLite database in tmp_path; values that matter set explicitly, so that
    IMAGEGATE_* variables of the machine running the tests change nothing."""
    s = Settings(
        data_dir=tmp_path, database_url=None, redis_url=None, demo_latency_s=0.0,
        image_lease_s=900.0, _env_file=None,
    )
    upgrade_head(s)
    return s


@pytest.fixture
def runtime(settings: Settings) -> Iterator[WorkerRuntime]:
    rt = WorkerRuntime.build(settings, events=InProcessEventBus())
    yield rt
    rt.close()


@pytest.fixture
def published(runtime: WorkerRuntime) -> list[str]:
    """Job ids published on the runtime's event bus, in order."""
    events: list[str] = []
    assert isinstance(runtime.events, InProcessEventBus)
    runtime.events.subscribe(events.append)
    return events


def with_provider(runtime: WorkerRuntime, provider: object) -> WorkerRuntime:
    """The same runtime (database, store, bus) with one fake provider at the registry seam."""
    return replace(runtime, providers=ProviderRegistry({"demo": provider}))  # type: ignore[dict-item]


def new_job(runtime: WorkerRuntime, *, n: int = 1, **image_fields: object) -> tuple[str, list[str]]:
    """A job of ``n`` images; ``image_fields`` apply to every image. Returns (job id, image ids)."""
    with runtime.sessions.begin() as session:
        job = make_job(session, make_api_key(session), n=n)
        images = [make_image(session, job, index=i, **image_fields) for i in range(n)]  # type: ignore[arg-type]
        return job.id, [image.id for image in images]


def image_row(runtime: WorkerRuntime, image_id: str) -> JobImage:
    with runtime.sessions() as session:
        row = session.get(JobImage, image_id)
        assert row is not None
        return row


def job_row(runtime: WorkerRuntime, job_id: str) -> Job:
    with runtime.sessions() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row


# -- the path that succeeds ------------------------------------------------------------------


def test_run_image_generates_stores_records_and_publishes(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)

    assert run_image(runtime, image_id) == "succeeded"

    image = image_row(runtime, image_id)
    expected_key = image_object_key(job_id, 0, "png", attempt=1)
    assert image.status == ImageStatus.SUCCEEDED
    assert image.attempts == 1
    assert image.object_key == expected_key
    stored = runtime.store.get(expected_key)
    picture = Image.open(io.BytesIO(stored))
    assert (picture.format, picture.size) == ("PNG", (96, 64))
    assert (image.mime_type, image.width, image.height) == ("image/png", 96, 64)
    assert image.bytes == len(stored)
    assert (image.provider, image.upstream_model) == ("demo", "demo")
    assert image.text == "a lighthouse in the fog (demo image 1 of 1)"
    assert image.error_code is None and image.error_message is None
    assert image.lease_until is None
    assert image.started_at is not None and image.finished_at is not None
    assert image.latency_ms is not None and image.latency_ms >= 0

    job = job_row(runtime, job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded, job.failed, job.canceled) == (1, 0, 0)
    assert job.started_at is not None and job.finished_at is not None
    assert job.error_code is None
    assert published == [job_id]


def test_job_closes_only_when_its_last_image_is_done(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [first, second] = new_job(runtime, n=2)

    assert run_image(runtime, first) == "succeeded"
    job = job_row(runtime, job_id)
    assert (job.status, job.succeeded, job.finished_at) == (JobStatus.RUNNING, 1, None)

    assert run_image(runtime, second) == "succeeded"
    job = job_row(runtime, job_id)
    assert (job.status, job.succeeded) == (JobStatus.SUCCEEDED, 2)
    assert image_row(runtime, second).object_key == image_object_key(job_id, 1, "png", attempt=1)
    assert runtime.store.get(image_row(runtime, first).object_key or "") != runtime.store.get(
        image_row(runtime, second).object_key or ""
    )
    assert published == [job_id, job_id]


# -- safe to repeat --------------------------------------------------------------------------


def test_running_a_finished_image_again_is_skipped(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)
    assert run_image(runtime, image_id) == "succeeded"
    before = image_row(runtime, image_id)

    assert run_image(runtime, image_id) == "skipped"

    after = image_row(runtime, image_id)
    assert after.attempts == 1
    assert (after.status, after.object_key, after.finished_at) == (
        before.status, before.object_key, before.finished_at
    )
    assert job_row(runtime, job_id).succeeded == 1
    assert published == [job_id]


def test_canceled_image_is_skipped(runtime: WorkerRuntime, published: list[str]) -> None:
    job_id, [image_id] = new_job(runtime, status=ImageStatus.CANCELED)

    assert run_image(runtime, image_id) == "skipped"

    image = image_row(runtime, image_id)
    assert (image.status, image.attempts, image.object_key) == (ImageStatus.CANCELED, 0, None)
    assert job_row(runtime, job_id).status == JobStatus.QUEUED
    assert published == []


def test_image_running_under_a_live_lease_is_skipped(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    _, [image_id] = new_job(
        runtime, status=ImageStatus.RUNNING, attempts=1, lease_until=utcnow() + timedelta(minutes=5)
    )

    assert run_image(runtime, image_id) == "skipped"

    image = image_row(runtime, image_id)
    assert (image.status, image.attempts) == (ImageStatus.RUNNING, 1)
    assert published == []


def test_image_with_an_expired_lease_is_retaken(runtime: WorkerRuntime) -> None:
    job_id, [image_id] = new_job(
        runtime, status=ImageStatus.RUNNING, attempts=1, lease_until=utcnow() - timedelta(seconds=1)
    )

    assert run_image(runtime, image_id) == "succeeded"

    image = image_row(runtime, image_id)
    assert (image.status, image.attempts) == (ImageStatus.SUCCEEDED, 2)
    assert image.object_key == image_object_key(job_id, 0, "png", attempt=2)
    assert job_row(runtime, job_id).status == JobStatus.SUCCEEDED


# -- fenced by the attempt number ------------------------------------------------------------


class LeaseLostProvider:
    """A worker too slow for its lease: while it generates, its lease expires and another worker
    (``other``, the real demo provider) retakes the image and delivers it."""

    name = "demo"

    def __init__(self, other: WorkerRuntime, image_id: str) -> None:
        self.other = other
        self.image_id = image_id
        self.other_outcome: str | None = None

    def generate(
        self, request: GenerationRequest, applied: AppliedParams, *, index: int
    ) -> ProviderImage:
        with self.other.sessions.begin() as session:
            session.execute(
                update(JobImage)
                .where(JobImage.id == self.image_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        self.other_outcome = run_image(self.other, self.image_id)
        return DemoProvider().generate(request, applied, index=index)


def test_attempt_that_lost_its_lease_is_superseded(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)
    slow = LeaseLostProvider(runtime, image_id)

    assert run_image(with_provider(runtime, slow), image_id) == "superseded"

    assert slow.other_outcome == "succeeded"
    image = image_row(runtime, image_id)
    assert (image.status, image.attempts) == (ImageStatus.SUCCEEDED, 2)
    assert image.object_key == image_object_key(job_id, 0, "png", attempt=2)
    job = job_row(runtime, job_id)
    assert (job.status, job.succeeded, job.failed) == (JobStatus.SUCCEEDED, 1, 0)  # counted once
    assert published == [job_id]  # only the attempt that owns the image published


def test_finish_image_with_an_old_attempt_changes_nothing(runtime: WorkerRuntime) -> None:
    _, [image_id] = new_job(
        runtime, status=ImageStatus.RUNNING, attempts=2, lease_until=utcnow() + timedelta(minutes=5)
    )
    with runtime.sessions.begin() as session:
        stale = session.execute(
            finish_image(image_id, attempt=1, values={"status": ImageStatus.FAILED})
        )
        assert stale.rowcount == 0
    assert image_row(runtime, image_id).status == ImageStatus.RUNNING

    with runtime.sessions.begin() as session:
        current = session.execute(
            finish_image(image_id, attempt=2, values={"status": ImageStatus.FAILED})
        )
        assert current.rowcount == 1
    assert image_row(runtime, image_id).status == ImageStatus.FAILED


# -- failures --------------------------------------------------------------------------------


class BlockingProvider:
    name = "demo"

    def generate(
        self, request: GenerationRequest, applied: AppliedParams, *, index: int
    ) -> ProviderImage:
        raise ContentPolicyError("Your prompt was rejected by the safety system.")


class CrashingProvider:
    name = "demo"

    def generate(
        self, request: GenerationRequest, applied: AppliedParams, *, index: int
    ) -> ProviderImage:
        raise RuntimeError("connection reset; upstream key sk-live-SECRET-123 at /srv/app.py:42")


class SecondImageBlockedProvider:
    """Draws image 0 and refuses image 1."""

    name = "demo"

    def generate(
        self, request: GenerationRequest, applied: AppliedParams, *, index: int
    ) -> ProviderImage:
        if index == 1:
            raise ContentPolicyError("Blocked.")
        return DemoProvider().generate(request, applied, index=index)


def test_content_policy_error_fails_the_image_and_the_job(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)

    assert run_image(with_provider(runtime, BlockingProvider()), image_id) == "failed"

    image = image_row(runtime, image_id)
    assert image.status == ImageStatus.FAILED
    assert image.error_code == "moderation_blocked"
    assert image.error_message == "Your prompt was rejected by the safety system."
    assert image.object_key is None and image.bytes is None
    assert image.lease_until is None and image.finished_at is not None
    job = job_row(runtime, job_id)
    assert job.status == JobStatus.FAILED
    assert (job.succeeded, job.failed) == (0, 1)
    assert job.error_code == "all_images_failed"
    assert published == [job_id]


def test_unexpected_exception_is_an_internal_error_without_its_text(
    runtime: WorkerRuntime,
) -> None:
    job_id, [image_id] = new_job(runtime)

    assert run_image(with_provider(runtime, CrashingProvider()), image_id) == "failed"

    image = image_row(runtime, image_id)
    assert image.status == ImageStatus.FAILED
    assert image.error_code == "internal_error"
    assert image.error_message is not None
    for leaked in ("sk-live-SECRET-123", "connection reset", "app.py", "RuntimeError"):
        assert leaked not in image.error_message
    assert job_row(runtime, job_id).status == JobStatus.FAILED


def test_one_image_failed_one_delivered_is_partial(runtime: WorkerRuntime) -> None:
    job_id, [first, second] = new_job(runtime, n=2)
    mixed = with_provider(runtime, SecondImageBlockedProvider())

    assert run_image(mixed, first) == "succeeded"
    assert run_image(mixed, second) == "failed"

    job = job_row(runtime, job_id)
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed) == (1, 1)
    assert job.error_code is None


def test_provider_missing_from_the_registry_fails_the_image(runtime: WorkerRuntime) -> None:
    _, [image_id] = new_job(runtime)
    empty = replace(runtime, providers=ProviderRegistry({}))

    assert run_image(empty, image_id) == "failed"

    image = image_row(runtime, image_id)
    assert image.error_code == "service_unavailable"
    assert image.error_message == "The provider 'demo' is not configured on this worker."


# -- requeue_orphans -------------------------------------------------------------------------


def test_requeue_orphans_returns_each_lost_image_once(runtime: WorkerRuntime) -> None:
    now = utcnow()

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    with runtime.sessions.begin() as session:
        job = make_job(session, make_api_key(session), n=7)
        rows = {
            "queued_long_ago": make_image(session, job, index=0, enqueued_at=ago(600)),
            # submit marks images whose task could not be sent as enqueued in 1970
            "never_sent": make_image(session, job, index=1, enqueued_at=NEVER_SENT),
            "lease_expired": make_image(
                session, job, index=2, status=ImageStatus.RUNNING, attempts=1,
                enqueued_at=ago(1000), lease_until=ago(5),
            ),
            "queued_recently": make_image(session, job, index=3, enqueued_at=ago(10)),
            "live_lease": make_image(
                session, job, index=4, status=ImageStatus.RUNNING, attempts=1,
                enqueued_at=ago(1000), lease_until=now + timedelta(seconds=100),
            ),
            "resent_after_expiry": make_image(
                session, job, index=5, status=ImageStatus.RUNNING, attempts=1,
                enqueued_at=ago(50), lease_until=ago(100),
            ),
            "succeeded_long_ago": make_image(
                session, job, index=6, status=ImageStatus.SUCCEEDED, attempts=1,
                enqueued_at=ago(600),
            ),
        }
        ids = {name: row.id for name, row in rows.items()}

    with runtime.sessions.begin() as session:
        first = set(session.execute(requeue_orphans(now=now, requeue_after_s=300)).scalars())
    assert first == {ids["queued_long_ago"], ids["never_sent"], ids["lease_expired"]}
    for name in ("queued_long_ago", "never_sent", "lease_expired"):
        assert image_row(runtime, ids[name]).enqueued_at == now
    assert image_row(runtime, ids["queued_recently"]).enqueued_at == ago(10)

    with runtime.sessions.begin() as session:
        second = list(
            session.execute(
                requeue_orphans(now=now + timedelta(seconds=1), requeue_after_s=300)
            ).scalars()
        )
    assert second == []


def test_requeue_orphans_sends_again_after_another_window(runtime: WorkerRuntime) -> None:
    now = utcnow()
    with runtime.sessions.begin() as session:
        job = make_job(session, make_api_key(session))
        image_id = make_image(session, job, enqueued_at=now - timedelta(seconds=600)).id

    with runtime.sessions.begin() as session:
        assert list(session.execute(requeue_orphans(now=now, requeue_after_s=300)).scalars()) == [
            image_id
        ]
    later = now + timedelta(seconds=301)
    with runtime.sessions.begin() as session:
        assert list(session.execute(requeue_orphans(now=later, requeue_after_s=300)).scalars()) == [
            image_id
        ]
