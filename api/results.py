"""Reading jobs back: ownership checks, delivered images (base64 or signed URL), the job view."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pybase64
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from api.splice import Splice
from api.state import AppState
from core import signing
from core.billing.money import format_usd
from core.db import DATABASE_UNAVAILABLE, retry_dropped
from core.errors import GatewayError, JobWaitTimeoutError, NotFoundError, ServiceUnavailableError
from core.generation import DeliveredImage, Usage
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job, JobImage
from core.repo import jobs

log = logging.getLogger(__name__)


async def get_owned_job(session: AsyncSession, job_id: str, key: ApiKey) -> Job:
    """The job, if this key made it; anyone else's is indistinguishable from a missing one."""
    job = await session.scalar(jobs.owned(job_id, key.id))
    if job is None:
        raise _no_such_job(job_id)
    return job


def _no_such_job(job_id: str) -> NotFoundError:
    return NotFoundError(f"No job found with id '{job_id}'.", param="job_id", code="job_not_found")


async def get_images(session: AsyncSession, job_id: str) -> list[JobImage]:
    return list(await session.scalars(jobs.images_of(job_id)))


async def read_job(state: AppState, job_id: str, *, key: ApiKey | None = None) -> tuple[Job, list[JobImage]] | None:
    """The job and its images in one read without a transaction, if it exists (and ``key``, when
    given, made it)."""
    async def read() -> Sequence[Row[Job, JobImage]]:
        async with state.reads() as session:
            return (await session.execute(jobs.with_images(job_id, key_id=key.id if key else None))).all()

    rows = await retry_dropped(read)
    if not rows:
        return None
    return rows[0][0], [image for _, image in rows if image is not None]


async def read_owned_job(state: AppState, job_id: str, key: ApiKey) -> tuple[Job, list[JobImage]]:
    """As :func:`get_owned_job`, with the images, in one read."""
    found = await read_job(state, job_id, key=key)
    if found is None:
        raise _no_such_job(job_id)
    return found


async def job_is_terminal(state: AppState, job_id: str) -> bool:
    async def read() -> str | None:
        async with state.reads() as session:
            return await session.scalar(jobs.status_of(job_id))

    status = await retry_dropped(read)
    return status is not None and JobStatus(status).is_terminal


def file_url(state: AppState, image_id: str, object_key: str | None = None) -> str:
    """Where a stored image can be fetched: the gateway's signed ``/v1/files`` URL, or a presigned
    object-store URL when the operator enables them (``IMAGEGATE_S3_PRESIGNED_URLS``)."""
    if object_key is not None and state.settings.s3_presigned_urls:
        presigned = state.store.presign(object_key, ttl_s=state.settings.file_url_ttl_s)
        if presigned is not None:
            return presigned
    query = signing.signed_query(state.signing_key, image_id, ttl_s=state.settings.file_url_ttl_s)
    return f"{state.settings.resolved_public_url}/v1/files/{image_id}?{query}"


def _usage(image: JobImage) -> Usage:
    return Usage(
        input_tokens=image.input_tokens,
        input_image_tokens=image.input_image_tokens,
        input_text_tokens=max(0, image.input_tokens - image.input_image_tokens),
        output_tokens=image.output_tokens,
        output_image_tokens=image.output_image_tokens,
        output_text_tokens=max(0, image.output_tokens - image.output_image_tokens),
    )


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
            usage=_usage(image),
            b64_json=b64,
            url=None if as_b64 else file_url(state, image.id, image.object_key),
        )
        for image, b64 in zip(done, encoded, strict=True)
    ]


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


async def job_view(state: AppState, job: Job, images: list[JobImage], *, include_b64: bool,
                   splice: Splice | None = None) -> dict[str, Any]:
    """imagegate's own JSON view of a job (``GET /v1/jobs/{id}``); ``splice`` as for
    :func:`delivered_images`."""
    delivered = {d.id: d for d in await delivered_images(state, images, as_b64=include_b64, splice=splice)}
    image_views = []
    for image in images:
        view: dict[str, Any] = {
            "id": image.id,
            "index": image.index,
            "status": image.status,
            "attempts": image.attempts,
            "error": (
                {"code": image.error_code, "message": image.error_message}
                if image.status == ImageStatus.FAILED else None
            ),
        }
        if image.id in delivered:
            d = delivered[image.id]
            view.update(
                url=file_url(state, image.id, image.object_key),
                mime_type=d.mime_type,
                width=d.width,
                height=d.height,
                bytes=image.bytes,
                revised_prompt=d.text,
                model=image.model,
                provider=image.provider,
                upstream_model=image.upstream_model,
                latency_ms=image.latency_ms,
                usage=d.usage.model_dump() | {"total_tokens": d.usage.total_tokens},
                cost_usd=format_usd(image.cost_micros),
            )
            if include_b64:
                view["b64_json"] = d.b64_json
        image_views.append(view)
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "model": job.model,
        "dialect": job.dialect,
        "created_at": _ts(job.created_at),
        "started_at": _ts(job.started_at),
        "finished_at": _ts(job.finished_at),
        "progress": {
            "total": job.n,
            "done": job.done,
            "succeeded": job.succeeded,
            "failed": job.failed,
            "canceled": job.canceled,
        },
        "request": job.request,
        "applied": job.applied,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "cost_usd": format_usd(sum(i.cost_micros for i in images)),
        "images": image_views,
    }


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
