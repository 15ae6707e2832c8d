"""imagegate's own JSON view of a job: ``GET /v1/jobs/{id}``, the ``202`` of an async request, and
the body of the job's webhook. Pure: the caller says where each image is fetched from and, if it
read them, passes the images' bytes as base64."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from core.billing.money import format_usd
from core.generation import Usage
from core.jobs import ImageStatus
from core.models import Job, JobImage, WebhookAttempt, WebhookDelivery


def image_usage(image: JobImage) -> Usage:
    return Usage(
        input_tokens=image.input_tokens,
        input_image_tokens=image.input_image_tokens,
        input_text_tokens=max(0, image.input_tokens - image.input_image_tokens),
        output_tokens=image.output_tokens,
        output_image_tokens=image.output_image_tokens,
        output_text_tokens=max(0, image.output_tokens - image.output_image_tokens),
    )


def timestamp(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def delivered(image: JobImage) -> bool:
    return image.status == ImageStatus.SUCCEEDED and bool(image.object_key)


def _image(image: JobImage, *, url_for: Callable[[JobImage], str], b64: Mapping[str, str] | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": image.id,
        "index": image.index,
        "status": image.status,
        "attempts": image.attempts,
        "error": ({"code": image.error_code, "message": image.error_message}
                  if image.status == ImageStatus.FAILED else None),
    }
    if delivered(image):
        usage = image_usage(image)
        view.update(
            url=url_for(image),
            mime_type=image.mime_type or "application/octet-stream",
            width=image.width or 0,
            height=image.height or 0,
            bytes=image.bytes,
            revised_prompt=image.text,
            model=image.model,
            provider=image.provider,
            upstream_model=image.upstream_model,
            latency_ms=image.latency_ms,
            usage=usage.model_dump() | {"total_tokens": usage.total_tokens},
            cost_usd=format_usd(image.cost_micros),
        )
        if b64 is not None:
            view["b64_json"] = b64.get(image.id)
    return view


def webhook_view(deliveries: Sequence[WebhookDelivery], attempts: Sequence[WebhookAttempt]) -> list[dict[str, Any]]:
    """The job's webhook deliveries and every attempt at them."""
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(
            {"attempt": a.attempt, "at": timestamp(a.at), "status_code": a.status_code, "error": a.error,
             "duration_ms": a.duration_ms})
    return [{"id": d.id, "url": d.url, "status": d.status, "delivered_at": timestamp(d.delivered_at),
             "next_attempt_at": timestamp(d.next_attempt_at) if d.status == "pending" else None,
             "attempts": by_delivery.get(d.id, [])} for d in deliveries]


def render_job(job: Job, images: Sequence[JobImage], *, url_for: Callable[[JobImage], str],
               b64: Mapping[str, str] | None = None,
               webhooks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The job view; ``webhooks`` (from :func:`webhook_view`) when the caller read them."""
    view: dict[str, Any] = {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "model": job.model,
        "dialect": job.dialect,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        "expires_at": timestamp(job.expires_at),
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
        "images": [_image(image, url_for=url_for, b64=b64) for image in images],
    }
    if job.webhook_url is not None:
        view["webhook_url"] = job.webhook_url
    if webhooks is not None:
        view["webhooks"] = webhooks
    return view
