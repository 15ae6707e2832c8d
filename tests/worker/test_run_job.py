"""run_image against a real (SQLite) database: claim, generate, store, record, count, publish;
safe to repeat, fenced by the attempt number; failures recorded without leaking internals.
Also the sweeper's requeue_orphans statement."""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from sqlalchemy import update

from core.errors import (
    ContentPolicyError,
    GatewayError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamOverloadedError,
    UpstreamTimeoutError,
)
from core.events import InProcessEventBus
from core.generation import InputImage, ProviderImage
from core.jobs import ImageStatus, JobStatus
from core.models import Job, JobImage
from core.models.types import utcnow
from core.repo.jobs import finish_image, requeue_orphans
from core.routing import Catalogue
from core.storage import image_object_key
from tests.orm_writes import orm_writes
from tests.worker.factories import db, make_api_key, make_image, make_job
from worker.providers.base import ProviderCall
from worker.providers.demo import DemoProvider
from worker.providers.registry import ProviderRegistry
from worker.run_job import run_image
from worker.runtime import WorkerRuntime

NEVER_SENT = datetime(1970, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.anyio


def with_provider(runtime: WorkerRuntime, provider: object) -> WorkerRuntime:
    """The same runtime (database, store, bus) with one fake provider at the registry seam."""
    return replace(runtime, providers=ProviderRegistry({"demo": provider}))  # type: ignore[dict-item]


def new_job(runtime: WorkerRuntime, *, n: int = 1, **image_fields: object) -> tuple[str, list[str]]:
    """A job of ``n`` images; ``image_fields`` apply to every image. Returns (job id, image ids)."""
    with db(runtime).begin() as session:
        job = make_job(session, make_api_key(session), n=n)
        images = [make_image(session, job, index=i, **image_fields) for i in range(n)]  # type: ignore[arg-type]
        return job.id, [image.id for image in images]


def image_row(runtime: WorkerRuntime, image_id: str) -> JobImage:
    with db(runtime)() as session:
        row = session.get(JobImage, image_id)
        assert row is not None
        return row


def job_row(runtime: WorkerRuntime, job_id: str) -> Job:
    with db(runtime)() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row


# -- the path that succeeds ------------------------------------------------------------------


async def test_run_image_generates_stores_records_and_publishes(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)

    assert await run_image(runtime, image_id) == "succeeded"

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
    assert published == [job_id, job_id]  # its start, then its end


async def test_the_claim_and_the_record_build_no_statement_per_image(runtime: WorkerRuntime) -> None:
    """On SQLite the claim and the record of an image are several statements; the updates and
    inserts among them are compiled once per shape (core/repo/binds.py) and run as SQL text, not
    built and run through the ORM for every image (which costs ~0.5 ms of CPU each)."""
    job_id, [image_id] = new_job(runtime)
    with orm_writes() as built:
        assert await run_image(runtime, image_id) == "succeeded"
    assert job_row(runtime, job_id).status == JobStatus.SUCCEEDED
    assert built == []


async def test_job_closes_only_when_its_last_image_is_done(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [first, second] = new_job(runtime, n=2)

    assert await run_image(runtime, first) == "succeeded"
    job = job_row(runtime, job_id)
    assert (job.status, job.succeeded, job.finished_at) == (JobStatus.RUNNING, 1, None)

    assert await run_image(runtime, second) == "succeeded"
    job = job_row(runtime, job_id)
    assert (job.status, job.succeeded) == (JobStatus.SUCCEEDED, 2)
    assert image_row(runtime, second).object_key == image_object_key(job_id, 1, "png", attempt=1)
    assert runtime.store.get(image_row(runtime, first).object_key or "") != runtime.store.get(
        image_row(runtime, second).object_key or ""
    )
    assert published == [job_id] * 4  # each image's start and end


# -- safe to repeat --------------------------------------------------------------------------


async def test_running_a_finished_image_again_is_skipped(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)
    assert await run_image(runtime, image_id) == "succeeded"
    before = image_row(runtime, image_id)

    assert await run_image(runtime, image_id) == "skipped"

    after = image_row(runtime, image_id)
    assert after.attempts == 1
    assert (after.status, after.object_key, after.finished_at) == (
        before.status, before.object_key, before.finished_at
    )
    assert job_row(runtime, job_id).succeeded == 1
    assert published == [job_id, job_id]  # the first run's start and end; the second run none


async def test_canceled_image_is_skipped(runtime: WorkerRuntime, published: list[str]) -> None:
    job_id, [image_id] = new_job(runtime, status=ImageStatus.CANCELED)

    assert await run_image(runtime, image_id) == "skipped"

    image = image_row(runtime, image_id)
    assert (image.status, image.attempts, image.object_key) == (ImageStatus.CANCELED, 0, None)
    assert job_row(runtime, job_id).status == JobStatus.QUEUED
    assert published == []


async def test_image_running_under_a_live_lease_is_skipped(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    _, [image_id] = new_job(
        runtime, status=ImageStatus.RUNNING, attempts=1, lease_until=utcnow() + timedelta(minutes=5)
    )

    assert await run_image(runtime, image_id) == "skipped"

    image = image_row(runtime, image_id)
    assert (image.status, image.attempts) == (ImageStatus.RUNNING, 1)
    assert published == []


async def test_image_with_an_expired_lease_is_retaken(runtime: WorkerRuntime) -> None:
    job_id, [image_id] = new_job(
        runtime, status=ImageStatus.RUNNING, attempts=1, lease_until=utcnow() - timedelta(seconds=1)
    )

    assert await run_image(runtime, image_id) == "succeeded"

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

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        with db(self.other).begin() as session:
            session.execute(
                update(JobImage)
                .where(JobImage.id == self.image_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        self.other_outcome = await run_image(self.other, self.image_id)
        return await DemoProvider().generate(call)


async def test_attempt_that_lost_its_lease_is_superseded(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)
    slow = LeaseLostProvider(runtime, image_id)

    assert await run_image(with_provider(runtime, slow), image_id) == "superseded"

    assert slow.other_outcome == "succeeded"
    image = image_row(runtime, image_id)
    assert (image.status, image.attempts) == (ImageStatus.SUCCEEDED, 2)
    assert image.object_key == image_object_key(job_id, 0, "png", attempt=2)
    job = job_row(runtime, job_id)
    assert (job.status, job.succeeded, job.failed) == (JobStatus.SUCCEEDED, 1, 0)  # counted once
    assert published[0] == job_id  # the attempt that owns the image published


async def test_attempt_that_lost_its_lease_does_not_publish(runtime: WorkerRuntime, published: list[str]) -> None:
    job_id, [image_id] = new_job(runtime)
    slow = LeaseLostProvider(runtime, image_id)

    assert await run_image(with_provider(runtime, slow), image_id) == "superseded"

    assert published == [job_id] * 3  # both attempts' starts; only the owner's end


async def test_finish_image_with_an_old_attempt_changes_nothing(runtime: WorkerRuntime) -> None:
    _, [image_id] = new_job(
        runtime, status=ImageStatus.RUNNING, attempts=2, lease_until=utcnow() + timedelta(minutes=5)
    )
    with db(runtime).begin() as session:
        stale = session.execute(
            finish_image(image_id, attempt=1, values={"status": ImageStatus.FAILED})
        ).scalar_one_or_none()
        assert stale is None
    assert image_row(runtime, image_id).status == ImageStatus.RUNNING

    with db(runtime).begin() as session:
        current = session.execute(
            finish_image(image_id, attempt=2, values={"status": ImageStatus.FAILED})
        ).scalar_one_or_none()
        assert current == image_id
    assert image_row(runtime, image_id).status == ImageStatus.FAILED


# -- failures --------------------------------------------------------------------------------


class BlockingProvider:
    name = "demo"

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        raise ContentPolicyError("Your prompt was rejected by the safety system.")


class CrashingProvider:
    name = "demo"

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        raise RuntimeError("connection reset; upstream key sk-live-SECRET-123 at /srv/app.py:42")


class SecondImageBlockedProvider:
    """Draws image 0 and refuses image 1."""

    name = "demo"

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        if 1 in call.indices:
            raise ContentPolicyError("Blocked.")
        return await DemoProvider().generate(call)


async def test_content_policy_error_fails_the_image_and_the_job(
    runtime: WorkerRuntime, published: list[str]
) -> None:
    job_id, [image_id] = new_job(runtime)

    assert await run_image(with_provider(runtime, BlockingProvider()), image_id) == "failed"

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
    assert published == [job_id, job_id]  # its start, then its end


async def test_unexpected_exception_is_an_internal_error_without_its_text(
    runtime: WorkerRuntime,
) -> None:
    job_id, [image_id] = new_job(runtime)

    assert await run_image(with_provider(runtime, CrashingProvider()), image_id) == "failed"

    image = image_row(runtime, image_id)
    assert image.status == ImageStatus.FAILED
    assert image.error_code == "internal_error"
    assert image.error_message is not None
    for leaked in ("sk-live-SECRET-123", "connection reset", "app.py", "RuntimeError"):
        assert leaked not in image.error_message
    assert job_row(runtime, job_id).status == JobStatus.FAILED


async def test_one_image_failed_one_delivered_is_partial(runtime: WorkerRuntime) -> None:
    job_id, [first, second] = new_job(runtime, n=2)
    mixed = with_provider(runtime, SecondImageBlockedProvider())

    assert await run_image(mixed, first) == "succeeded"
    assert await run_image(mixed, second) == "failed"

    job = job_row(runtime, job_id)
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed) == (1, 1)
    assert job.error_code is None


async def test_provider_missing_from_the_registry_fails_the_image(runtime: WorkerRuntime) -> None:
    _, [image_id] = new_job(runtime)
    empty = replace(runtime, providers=ProviderRegistry({}))

    assert await run_image(empty, image_id) == "failed"

    image = image_row(runtime, image_id)
    assert image.error_code == "service_unavailable"
    assert image.error_message == "The provider 'demo' is not configured on this worker."


# -- requeue_orphans -------------------------------------------------------------------------


async def test_requeue_orphans_returns_each_lost_image_once(runtime: WorkerRuntime) -> None:
    now = utcnow()

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    with db(runtime).begin() as session:
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

    with db(runtime).begin() as session:
        first = set(session.execute(requeue_orphans(now=now, requeue_after_s=300, max_attempts=3)).scalars())
    assert first == {ids["queued_long_ago"], ids["never_sent"], ids["lease_expired"]}
    for name in ("queued_long_ago", "never_sent", "lease_expired"):
        assert image_row(runtime, ids[name]).enqueued_at == now
    assert image_row(runtime, ids["queued_recently"]).enqueued_at == ago(10)

    with db(runtime).begin() as session:
        second = list(
            session.execute(
                requeue_orphans(now=now + timedelta(seconds=1), requeue_after_s=300, max_attempts=3)
            ).scalars()
        )
    assert second == []


async def test_requeue_orphans_sends_again_after_another_window(runtime: WorkerRuntime) -> None:
    now = utcnow()
    with db(runtime).begin() as session:
        job = make_job(session, make_api_key(session))
        image_id = make_image(session, job, enqueued_at=now - timedelta(seconds=600)).id

    with db(runtime).begin() as session:
        assert list(session.execute(requeue_orphans(now=now, requeue_after_s=300, max_attempts=3)).scalars()) == [
            image_id
        ]
    later = now + timedelta(seconds=301)
    with db(runtime).begin() as session:
        assert list(session.execute(requeue_orphans(now=later, requeue_after_s=300, max_attempts=3)).scalars()) == [
            image_id
        ]


# -- upstreams that make several images per call: one call per group ------------------------


def png(width: int = 16, height: int = 12, color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(fmt: str, color: tuple[int, int, int] = (10, 120, 240)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), color).save(buffer, format=fmt.upper())
    return buffer.getvalue()


class ScriptedProvider:
    """An upstream at the registry seam: records every call and answers with ``answer(call)`` (images
    or an exception); by default one distinct 16x12 PNG per index of the call."""

    def __init__(self, name: str, answer: object = None) -> None:
        self.name = name
        self.calls: list[ProviderCall] = []
        self.answer = answer

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        self.calls.append(call)
        result = self.answer(call) if callable(self.answer) else None
        if isinstance(result, BaseException):
            raise result
        if result is not None:
            return result  # type: ignore[no-any-return]
        return [ProviderImage(data=png(color=(i * 40 % 256, 90, 30)), mime_type="image/png", width=16, height=12)
                for i in call.indices]


@dataclass
class PlanningRuntime(WorkerRuntime):
    """A worker runtime, and the catalogue that the API plans this test's jobs with."""

    catalogue: Catalogue = field(default_factory=lambda: Catalogue.load(configured={"demo"}))


def with_upstreams(runtime: WorkerRuntime, configured: set[str], *providers: ScriptedProvider) -> PlanningRuntime:
    """The same runtime with these providers registered; jobs planned by a catalogue offering
    ``configured``."""
    shared = {f.name: getattr(runtime, f.name) for f in fields(WorkerRuntime)}
    shared["providers"] = ProviderRegistry({p.name: p for p in providers})  # type: ignore[misc]
    return PlanningRuntime(**shared, catalogue=Catalogue.load(configured=configured | {"demo"}))


def new_model_job(rt: PlanningRuntime, model: str, *, n: int = 1, size: str | None = None,
                  statuses: dict[int, dict[str, object]] | None = None, **request_fields: object
                  ) -> tuple[str, list[str]]:
    with db(rt).begin() as session:
        job = make_job(session, make_api_key(session), n=n, size=size, model=model, catalogue=rt.catalogue,
                       **request_fields)
        ids = [make_image(session, job, index=i, **(statuses or {}).get(i, {})).id  # type: ignore[arg-type]
               for i in range(n)]
        return job.id, ids


async def test_a_group_is_made_by_one_call_and_recorded_per_image(runtime: WorkerRuntime, published: list[str]) -> None:
    upstream = ScriptedProvider("openai_images")
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    job_id, ids = new_model_job(rt, "gpt-image-2", n=3, size="1024x1024")

    assert await run_image(rt, ids[0]) == "succeeded"

    assert [c.indices for c in upstream.calls] == [[0, 1, 2]]
    assert upstream.calls[0].applied.model == "gpt-image-2"
    stored = set()
    for index, image_id in enumerate(ids):
        image = image_row(rt, image_id)
        assert (image.status, image.attempts) == (ImageStatus.SUCCEEDED, 1)
        assert image.object_key == image_object_key(job_id, index, "png", attempt=1)
        assert (image.model, image.provider, image.upstream_model) == ("gpt-image-2", "openai_images", "gpt-image-2")
        assert (image.width, image.height) == (16, 12)
        stored.add(rt.store.get(image.object_key or ""))
    assert len(stored) == 3  # each image its own bytes
    job = job_row(rt, job_id)
    assert (job.status, job.succeeded, job.failed) == (JobStatus.SUCCEEDED, 3, 0)
    assert published == [job_id, job_id]  # the group's start, then its end

    # the siblings' own tasks find nothing left to do
    assert await run_image(rt, ids[1]) == "skipped"
    assert await run_image(rt, ids[2]) == "skipped"
    assert len(upstream.calls) == 1


async def test_any_image_of_a_group_claims_the_whole_group(runtime: WorkerRuntime) -> None:
    upstream = ScriptedProvider("openai_images")
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    _, ids = new_model_job(rt, "gpt-image-1.5", n=3)

    assert await run_image(rt, ids[2]) == "succeeded"

    assert [c.indices for c in upstream.calls] == [[0, 1, 2]]
    assert [image_row(rt, i).status for i in ids] == [ImageStatus.SUCCEEDED] * 3


async def test_siblings_done_or_running_elsewhere_are_not_claimed(runtime: WorkerRuntime) -> None:
    upstream = ScriptedProvider("openai_images")
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    live = {"status": ImageStatus.RUNNING, "attempts": 1, "lease_until": utcnow() + timedelta(minutes=5)}
    done = {"status": ImageStatus.SUCCEEDED, "attempts": 1}
    expired = {"status": ImageStatus.RUNNING, "attempts": 1, "lease_until": utcnow() - timedelta(seconds=1)}
    _, ids = new_model_job(rt, "gpt-image-2", n=4, statuses={1: live, 2: done, 3: expired})

    assert await run_image(rt, ids[0]) == "succeeded"

    assert [c.indices for c in upstream.calls] == [[0, 3]]
    assert image_row(rt, ids[1]).status == ImageStatus.RUNNING
    assert image_row(rt, ids[3]).attempts == 2


async def test_one_image_per_call_upstream_is_never_grouped(runtime: WorkerRuntime) -> None:
    upstream = ScriptedProvider("gemini")
    rt = with_upstreams(runtime, {"gemini"}, upstream)
    _, ids = new_model_job(rt, "gemini-3-pro-image", n=2, aspect_ratio="16:9")

    assert await run_image(rt, ids[0]) == "succeeded"
    assert image_row(rt, ids[1]).status == ImageStatus.QUEUED
    assert await run_image(rt, ids[1]) == "succeeded"

    assert [c.indices for c in upstream.calls] == [[0], [1]]
    assert upstream.calls[0].applied.size == "1376x768"


def first_image_only(call: ProviderCall) -> list[ProviderImage]:
    return [ProviderImage(data=png(), mime_type="image/png", width=16, height=12)]


async def test_fewer_images_than_asked_fails_the_missing_ones(runtime: WorkerRuntime) -> None:
    upstream = ScriptedProvider("openai_images", first_image_only)
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    job_id, ids = new_model_job(rt, "gpt-image-2", n=2)

    await run_image(rt, ids[0])

    assert image_row(rt, ids[0]).status == ImageStatus.SUCCEEDED
    missing = image_row(rt, ids[1])
    assert (missing.status, missing.error_code) == (ImageStatus.FAILED, "no_images_generated")
    assert job_row(rt, job_id).status == JobStatus.PARTIAL


async def test_run_image_returns_the_outcome_of_the_image_it_was_called_for(runtime: WorkerRuntime) -> None:
    rt = with_upstreams(runtime, {"openai_images"}, ScriptedProvider("openai_images", first_image_only))
    _, ids = new_model_job(rt, "gpt-image-2", n=2)

    outcome = await run_image(rt, ids[1])

    assert image_row(rt, ids[1]).status == ImageStatus.FAILED
    assert outcome == "failed"


# -- inputs and transcoding ------------------------------------------------------------------


async def test_input_images_and_mask_reach_the_provider_as_bytes(runtime: WorkerRuntime) -> None:
    upstream = ScriptedProvider("openai_images")
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    first, second, mask = png(color=(1, 2, 3)), encoded("jpeg"), png(mode="RGBA", color=(0, 0, 0, 0))
    rt.store.put("inputs/a.png", first)
    rt.store.put("inputs/b.jpg", second)
    rt.store.put("inputs/mask.png", mask)
    _, [image_id] = new_model_job(
        rt, "gpt-image-1.5", prompt="add a hat",
        input_images=[InputImage(object_key="inputs/a.png", mime_type="image/png"),
                      InputImage(object_key="inputs/b.jpg", mime_type="image/jpeg")],
        mask=InputImage(object_key="inputs/mask.png", mime_type="image/png"), input_fidelity="high")

    assert await run_image(rt, image_id) == "succeeded"

    [call] = upstream.calls
    assert [(i.data, i.mime_type) for i in call.inputs] == [(first, "image/png"), (second, "image/jpeg")]
    assert call.mask is not None and (call.mask.data, call.mask.mime_type) == (mask, "image/png")
    assert call.request.prompt == "add a hat"
    assert call.applied.input_fidelity == "high"


@pytest.mark.parametrize(("fmt", "pil"), [("webp", "WEBP"), ("jpeg", "JPEG")])
async def test_a_format_the_upstream_cannot_make_is_transcoded(runtime: WorkerRuntime, fmt: str, pil: str) -> None:
    transparent_png = png(mode="RGBA", color=(255, 0, 0, 0))
    upstream = ScriptedProvider("gemini", lambda call: [
        ProviderImage(data=transparent_png, mime_type="image/png", width=16, height=12)])
    rt = with_upstreams(runtime, {"gemini"}, upstream)
    job_id, [image_id] = new_model_job(rt, "gemini-3-pro-image", output_format=fmt, output_compression=40)

    assert await run_image(rt, image_id) == "succeeded"

    assert upstream.calls[0].applied.upstream_format == "png"
    image = image_row(rt, image_id)
    assert image.object_key == image_object_key(job_id, 0, fmt, attempt=1)
    stored = rt.store.get(image.object_key or "")
    picture = Image.open(io.BytesIO(stored))
    assert (picture.format, picture.size) == (pil, (16, 12))
    assert (image.mime_type, image.bytes) == (f"image/{fmt}", len(stored))


async def test_a_format_the_upstream_makes_is_stored_as_delivered(runtime: WorkerRuntime) -> None:
    webp = encoded("webp")
    upstream = ScriptedProvider("openai_images", lambda call: [
        ProviderImage(data=webp, mime_type="image/webp", width=20, height=10)])
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    _, [image_id] = new_model_job(rt, "gpt-image-2", output_format="webp", output_compression=40)

    assert await run_image(rt, image_id) == "succeeded"

    assert upstream.calls[0].applied.upstream_format == "webp"
    image = image_row(rt, image_id)
    assert rt.store.get(image.object_key or "") == webp
    assert image.mime_type == "image/webp"


# -- the fallback chain ----------------------------------------------------------------------


def failing_for(model: str, error: GatewayError) -> object:
    def answer(call: ProviderCall) -> object:
        return error if call.applied.model == model else None
    return answer


ROUTE_FAILURES = [
    pytest.param(UpstreamError("gone", code="upstream_model_not_found", upstream_status=404), id="404"),
    pytest.param(UpstreamError("no", code="upstream_auth_failed", upstream_status=401), id="401"),
    pytest.param(UpstreamError("no", code="upstream_auth_failed", upstream_status=403), id="403"),
    pytest.param(UpstreamOverloadedError("busy", upstream_status=503, retryable=True), id="overloaded"),
    pytest.param(UpstreamTimeoutError("slow", retryable=True), id="timeout"),
    pytest.param(UpstreamError("bad body", code="upstream_bad_response", retryable=True), id="retries-spent"),
]


@pytest.mark.parametrize("error", ROUTE_FAILURES)
async def test_a_failed_route_falls_back_to_the_next_model(runtime: WorkerRuntime, error: GatewayError) -> None:
    upstream = ScriptedProvider("gemini", failing_for("gemini-2.5-flash-image", error))
    rt = with_upstreams(runtime, {"gemini"}, upstream)
    job_id, [image_id] = new_model_job(rt, "gemini-2.5-flash-image", aspect_ratio="21:9")

    assert await run_image(rt, image_id) == "succeeded"

    assert [c.applied.model for c in upstream.calls] == ["gemini-2.5-flash-image", "gemini-3.1-flash-image"]
    # the fallback is planned for its own model: its own grid and tier
    assert upstream.calls[0].applied.size == "1536x672"
    assert (upstream.calls[1].applied.size, upstream.calls[1].applied.image_size) == ("1584x672", "1K")
    image = image_row(rt, image_id)
    assert (image.model, image.provider, image.upstream_model) == (
        "gemini-3.1-flash-image", "gemini", "gemini-3.1-flash-image")
    assert job_row(rt, job_id).model == "gemini-2.5-flash-image"  # what was asked for stays on the job


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ContentPolicyError("Blocked by the upstream."), id="content-policy"),
        pytest.param(UpstreamError("bad field", code="upstream_invalid_request", upstream_status=400), id="400"),
        pytest.param(UpstreamOverloadedError("busy", upstream_status=503), id="not-retryable"),
    ],
)
async def test_an_error_that_is_not_the_route_failing_does_not_fall_back(
    runtime: WorkerRuntime, error: GatewayError
) -> None:
    upstream = ScriptedProvider("gemini", failing_for("gemini-2.5-flash-image", error))
    rt = with_upstreams(runtime, {"gemini"}, upstream)
    job_id, [image_id] = new_model_job(rt, "gemini-2.5-flash-image")

    assert await run_image(rt, image_id) == "failed"

    assert len(upstream.calls) == 1
    image = image_row(rt, image_id)
    assert (image.error_code, image.error_message) == (error.code, error.message)
    assert job_row(rt, job_id).status == JobStatus.FAILED


async def test_every_route_failing_records_the_last_error(runtime: WorkerRuntime) -> None:
    def answer(call: ProviderCall) -> GatewayError:
        if call.applied.model == "gemini-2.5-flash-image":
            return UpstreamError("gone", code="upstream_model_not_found", upstream_status=404)
        return UpstreamOverloadedError("The Gemini API is overloaded.", upstream_status=503, retryable=True)

    upstream = ScriptedProvider("gemini", answer)
    rt = with_upstreams(runtime, {"gemini"}, upstream)
    _, [image_id] = new_model_job(rt, "gemini-2.5-flash-image")

    assert await run_image(rt, image_id) == "failed"

    assert len(upstream.calls) == 2
    image = image_row(rt, image_id)
    assert (image.error_code, image.error_message) == ("upstream_overloaded", "The Gemini API is overloaded.")


async def test_a_provider_missing_on_the_worker_falls_back(runtime: WorkerRuntime) -> None:
    # the catalogue offers vertex (configured on the API), but this worker has no vertex provider
    gemini = ScriptedProvider("gemini")
    rt = with_upstreams(runtime, {"gemini", "vertex_gemini"}, gemini)
    _, [image_id] = new_model_job(rt, "vertex/gemini-2.5-flash-image")

    assert await run_image(rt, image_id) == "failed"  # its only fallback is vertex too
    assert image_row(rt, image_id).error_code == ServiceUnavailableError.default_code

    _, [image_id] = new_model_job(rt, "gemini-2.5-flash-image")
    assert await run_image(rt, image_id) == "succeeded"


async def test_a_group_falls_back_as_a_group(runtime: WorkerRuntime) -> None:
    gone = UpstreamError("gone", code="upstream_model_not_found", upstream_status=404)
    upstream = ScriptedProvider("openai_images", failing_for("gpt-image-1.5", gone))
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    _, ids = new_model_job(rt, "gpt-image-1.5", n=3, size="1792x1024")

    assert await run_image(rt, ids[0]) == "succeeded"

    assert [(c.applied.model, c.indices) for c in upstream.calls] == [
        ("gpt-image-1.5", [0, 1, 2]), ("gpt-image-2", [0, 1, 2])]
    assert upstream.calls[0].applied.upstream_size == "1536x1024"
    assert upstream.calls[1].applied.upstream_size == "1792x1024"  # gpt-image-2 takes the size asked
    assert {image_row(rt, i).model for i in ids} == {"gpt-image-2"}


async def test_a_fallback_that_cannot_take_the_request_is_skipped(runtime: WorkerRuntime) -> None:
    gone = UpstreamError("gone", code="upstream_model_not_found", upstream_status=404)
    upstream = ScriptedProvider("openai_images", failing_for("gpt-image-1.5", gone))
    rt = with_upstreams(runtime, {"openai_images"}, upstream)
    # 4000x1000 maps to 1536x1024 on gpt-image-1.5 but is beyond gpt-image-2's 3840 px
    _, [image_id] = new_model_job(rt, "gpt-image-1.5", size="4000x1000")

    assert await run_image(rt, image_id) == "failed"

    assert [c.applied.model for c in upstream.calls] == ["gpt-image-1.5"]
    assert image_row(rt, image_id).error_code == "upstream_model_not_found"


async def test_the_whole_chain_is_walked_when_the_model_itself_is_not_configured(runtime: WorkerRuntime) -> None:
    vertex = ScriptedProvider("vertex_gemini", lambda call: UpstreamOverloadedError(
        "busy", upstream_status=503, retryable=True))
    gateway = ScriptedProvider("openai_chat")
    rt = with_upstreams(runtime, {"vertex_gemini", "openai_chat"}, vertex, gateway)
    _, [image_id] = new_model_job(rt, "gemini-3-pro-image", aspect_ratio="1:1")
    assert len(vertex.calls) == 0

    outcome = await run_image(rt, image_id)

    assert [c.applied.model for c in vertex.calls] == ["vertex/gemini-3-pro-image"]
    assert [c.applied.model for c in gateway.calls] == ["gateway/gemini-3-pro-image"]
    assert outcome == "succeeded"
    assert image_row(rt, image_id).model == "gateway/gemini-3-pro-image"


# -- events ------------------------------------------------------------------------------------


class SlowToAnnounce:
    """An event bus whose first event (an image's start) is heard only once the image's upstream
    call has gone out: a worker that waited for that event before calling upstream would wait
    until ``patience`` runs out."""

    def __init__(self, bus: InProcessEventBus, called: asyncio.Event, *, patience: float = 10.0) -> None:
        self.bus, self.called, self.patience = bus, called, patience
        self.heard: list[tuple[str, str | None, bool]] = []  # job, ended, whether the call had gone out

    async def publish(self, job_id: str, ended: str | None = None) -> None:
        if not self.heard:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.called.wait(), self.patience)
        self.heard.append((job_id, ended, self.called.is_set()))
        self.bus.notify(job_id, ended)

    async def publish_partial(self, partial: object) -> None:
        raise AssertionError("no partial images here")


async def test_the_upstream_call_does_not_wait_for_the_start_event_and_the_end_comes_after_it(
    runtime: WorkerRuntime,
) -> None:
    called = asyncio.Event()
    demo = runtime.providers.get("demo")

    class Announcing:
        name = demo.name

        async def generate(self, call: ProviderCall) -> list[ProviderImage]:
            called.set()
            return await demo.generate(call)

    assert isinstance(runtime.events, InProcessEventBus)
    events = SlowToAnnounce(runtime.events, called)
    rt = replace(runtime, events=events, providers=ProviderRegistry({"demo": Announcing()}))  # type: ignore[dict-item]
    job_id, [image_id] = new_job(rt)

    assert await asyncio.wait_for(run_image(rt, image_id), 30) == "succeeded"

    assert events.heard == [(job_id, None, True), (job_id, JobStatus.SUCCEEDED.value, True)]
