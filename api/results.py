"""Reading jobs back: ownership checks, delivered images (base64 or signed URL), the job view."""

from __future__ import annotations

import logging
from typing import Any

import pybase64
from sqlalchemy.ext.asyncio import AsyncSession

from api.splice import Splice
from api.state import AppState
from core import signing
from core.db import DATABASE_UNAVAILABLE, retry_dropped
from core.errors import GatewayError, GoneError, JobWaitTimeoutError, NotFoundError, ServiceUnavailableError
from core.generation import DeliveredImage
from core.job_view import delivered, image_usage, render_job, webhook_view
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job, JobImage
from core.repo import jobs, webhooks

log = logging.getLogger(__name__)


async def get_owned_job(session: AsyncSession, job_id: str, key: ApiKey) -> Job:
    """The job, if this key made it; anyone else's is indistinguishable from a missing one."""
    job = await session.scalar(jobs.owned(job_id, key.id))
    if job is None:
        raise _no_such_job(job_id)
    _refuse_expired(job)
    return job


def _no_such_job(job_id: str) -> NotFoundError:
    return NotFoundError(f"No job found with id '{job_id}'.", param="job_id", code="job_not_found")


def _refuse_expired(job: Job) -> None:
    if job.expired_at is not None:
        raise GoneError(f"The job '{job.id}' expired on {job.expired_at:%Y-%m-%d %H:%M:%S} UTC: its images and "
                        "request were deleted (retention).", param="job_id", code="job_expired")


async def get_images(session: AsyncSession, job_id: str) -> list[JobImage]:
    return list(await session.scalars(jobs.images_of(job_id)))


async def read_job(state: AppState, job_id: str, *, key: ApiKey | None = None) -> tuple[Job, list[JobImage]] | None:
    """The job and its images in one read without a transaction, if it exists (and ``key``, when
    given, made it)."""
    read = jobs.job_read(state.engine.dialect, keyed=key is not None)
    return await retry_dropped(lambda: read.run(state.engine, state.reads, job_id, key.id if key else None))


async def read_owned_job(state: AppState, job_id: str, key: ApiKey) -> tuple[Job, list[JobImage]]:
    """As :func:`get_owned_job`, with the images, in one read."""
    found = await read_job(state, job_id, key=key)
    if found is None:
        raise _no_such_job(job_id)
    _refuse_expired(found[0])
    return found


async def job_is_terminal(state: AppState, job_id: str) -> bool:
    async def read() -> str | None:
        async with state.reads() as session:
            return await session.scalar(jobs.status_of(job_id))

    status = await retry_dropped(read)
    return status is not None and JobStatus(status).is_terminal


def file_url(state: AppState, image_id: str, object_key: str | None = None) -> str:
    """Where a stored image can be fetched (:func:`core.signing.file_url`)."""
    return signing.file_url(state.settings, state.signing_key, state.store, image_id, object_key)


async def _read_b64(state: AppState, keys: list[str]) -> list[str]:
    return [pybase64.b64encode(await state.store.aget(key)).decode("ascii") for key in keys]


async def delivered_images(
    state: AppState, images: list[JobImage], *, as_b64: bool, splice: Splice | None = None
) -> list[DeliveredImage]:
    """The succeeded images of a job, with their bytes as base64 (read off the event loop) or a
    signed URL. With ``splice``, the base64 is a placeholder the answer replaces as it is sent
    (api/splice.py)."""
    done = [i for i in images if i.status == ImageStatus.SUCCEEDED and i.object_key]
    keys = [i.object_key for i in done if i.object_key]
    encoded: list[str | None]
    if as_b64 and splice is not None:
        encoded = [splice.placeholder(key, image.bytes) for key, image in zip(keys, done, strict=True)]
    elif as_b64:
        encoded = list(await _read_b64(state, keys))
    else:
        encoded = [None] * len(done)
    return [
        DeliveredImage(
            id=image.id,
            index=image.index,
            mime_type=image.mime_type or "application/octet-stream",
            width=image.width or 0,
            height=image.height or 0,
            text=image.text,
            usage=image_usage(image),
            b64_json=b64,
            url=None if as_b64 else file_url(state, image.id, image.object_key),
        )
        for image, b64 in zip(done, encoded, strict=True)
    ]


async def job_view(state: AppState, job: Job, images: list[JobImage], *, include_b64: bool,
                   webhooks: list[dict[str, Any]] | None = None, splice: Splice | None = None) -> dict[str, Any]:
    """imagegate's own JSON view of a job (``GET /v1/jobs/{id}``; :func:`core.job_view.render_job`);
    ``splice`` as for :func:`delivered_images`."""
    b64: dict[str, str] | None = None
    if include_b64:
        done = [i for i in images if delivered(i) and i.object_key]
        if splice is not None:
            b64 = {i.id: splice.placeholder(i.object_key, i.bytes) for i in done if i.object_key}
        else:
            b64 = dict(zip([i.id for i in done],
                           await _read_b64(state, [i.object_key for i in done if i.object_key]), strict=True))
    return render_job(job, images, url_for=lambda image: file_url(state, image.id, image.object_key), b64=b64,
                      webhooks=webhooks)


async def job_webhooks(session: AsyncSession, job_id: str) -> list[dict[str, Any]]:
    """The job's webhook deliveries and their attempts, for its view."""
    deliveries = list(await session.scalars(webhooks.of_job(job_id)))
    if not deliveries:
        return []
    attempts = list(await session.scalars(webhooks.attempts_of([d.id for d in deliveries])))
    return webhook_view(deliveries, attempts)


class JobCheck:
    """Whether a job has ended, as a waiting request asks it again and again: a database that
    cannot be reached for a while answers "not yet" (the job goes on in the workers) and is
    remembered, so that the wait ends in a 503 naming the job rather than a 500."""

    def __init__(self, state: AppState, job_id: str) -> None:
        self.state = state
        self.job_id = job_id
        self.unreachable = False

    async def __call__(self) -> bool:
        try:
            done = await job_is_terminal(self.state, self.job_id)
        except DATABASE_UNAVAILABLE as exc:
            if not self.unreachable:
                log.warning("job %s: the database cannot be reached while waiting (%s)", self.job_id,
                            type(exc).__name__)
            self.unreachable = True
            return False
        self.unreachable = False
        return done

    def timed_out(self, timeout: float) -> GatewayError:
        """The error a caller who waited ``timeout`` seconds gets."""
        if self.unreachable:
            return database_unavailable(self.job_id)
        return JobWaitTimeoutError(f"The job '{self.job_id}' did not finish within {timeout:g} s. It goes on.",
                                   job_id=self.job_id)


def database_unavailable(job_id: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"The gateway's database cannot be reached; the job '{job_id}' was accepted and goes on. "
        f"Poll GET /v1/jobs/{job_id} for its result.", job_id=job_id, code="database_unavailable", retry_after=5)


async def wait_for_job(state: AppState, job_id: str) -> None:
    """Block this request (not a thread) until the job ends, or raise 504 naming the job (503
    when the database could not be read)."""
    timeout = state.settings.sync_timeout_s
    check = JobCheck(state, job_id)
    if not await state.waiter.wait(job_id, is_done=check, timeout=timeout):
        raise check.timed_out(timeout)


def prefers_async(prefer_header: str | None) -> bool:
    """``Prefer: respond-async`` (RFC 7240), possibly among other preferences."""
    if not prefer_header:
        return False
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer_header.split(","))
