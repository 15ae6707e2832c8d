"""Use case: run one image of a job, from claim to stored image, counters and event.

Safe to run twice for the same image (a redelivered task, a sweeper's re-send): the claim is a
conditional update, so an image that already succeeded, is running under a live lease, or was
canceled is left alone; and the outcome is fenced by the attempt number.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select

from core.errors import GatewayError
from core.generation import AppliedParams, GenerationRequest
from core.job_updates import claim_image, count_outcome, finalize_job, finish_image, mark_job_running
from core.jobs import ImageStatus
from core.models import Job
from core.models.types import utcnow
from core.storage import image_object_key
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def run_image(runtime: WorkerRuntime, image_id: str) -> str:
    """Generate, store and record one image. Returns what happened, for logs and tests."""
    now = utcnow()
    with runtime.sessions.begin() as session:
        claimed = session.execute(
            claim_image(image_id, now=now, lease_s=runtime.settings.image_lease_s)
        ).one_or_none()
        if claimed is None:
            log.info("image %s: not claimable (done, canceled, or running elsewhere)", image_id)
            return "skipped"
        job_id, index, attempt = claimed
        session.execute(mark_job_running(job_id, now=now))
        request_json, applied_json = session.execute(
            select(Job.request, Job.applied).where(Job.id == job_id)
        ).one()

    request = GenerationRequest.model_validate(request_json)
    applied = AppliedParams.model_validate(applied_json)
    started = time.monotonic()
    values: dict[str, Any]
    outcome: str
    try:
        provider = runtime.providers.get(applied.provider)
        result = provider.generate(request, applied, index=index)
        key = image_object_key(job_id, index, applied.output_format, attempt=attempt)
        runtime.store.put(key, result.data)
        values = {
            "status": ImageStatus.SUCCEEDED,
            "provider": applied.provider,
            "upstream_model": applied.upstream_model,
            "object_key": key,
            "mime_type": result.mime_type,
            "width": result.width,
            "height": result.height,
            "bytes": len(result.data),
            "text": result.text,
            "input_tokens": result.usage.input_tokens,
            "input_image_tokens": result.usage.input_image_tokens,
            "output_tokens": result.usage.output_tokens,
            "output_image_tokens": result.usage.output_image_tokens,
            "cost_micros": 0,
        }
        outcome = "succeeded"
    except GatewayError as exc:
        log.info("image %s failed: %s", image_id, exc.code)
        values = {"status": ImageStatus.FAILED, "error_code": exc.code, "error_message": exc.message,
                  "provider": applied.provider, "upstream_model": applied.upstream_model}
        outcome = "failed"
    except Exception:
        log.exception("image %s: unexpected error in provider %s", image_id, applied.provider)
        values = {"status": ImageStatus.FAILED, "error_code": "internal_error",
                  "error_message": "The image could not be generated because of an internal error.",
                  "provider": applied.provider, "upstream_model": applied.upstream_model}
        outcome = "failed"

    finished = utcnow()
    values.update(finished_at=finished, lease_until=None,
                  latency_ms=int((time.monotonic() - started) * 1000))
    with runtime.sessions.begin() as session:
        updated = session.execute(finish_image(image_id, attempt=attempt, values=values)).rowcount
        if updated != 1:
            # our lease expired and another attempt took the image over: it owns the outcome
            log.warning("image %s attempt %s lost its lease; outcome discarded", image_id, attempt)
            return "superseded"
        counts = session.execute(
            count_outcome(job_id, succeeded=int(outcome == "succeeded"), failed=int(outcome == "failed"))
        ).one()
        close = finalize_job(job_id, counts, now=finished)
        if close is not None:
            session.execute(close)
    runtime.events.publish(job_id)
    return outcome
