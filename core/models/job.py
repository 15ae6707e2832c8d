"""Jobs (one client request) and their images (one task each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base
from core.jobs import ImageStatus, JobStatus
from core.models.types import UTCDateTime, utcnow


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # one job per (key, Idempotency-Key): a replay finds the original
        UniqueConstraint("api_key_id", "idempotency_key", name="uq_jobs_api_key_id_idempotency_key"),
        # GET /v1/jobs lists a key's jobs newest first (ids are time-ordered)
        Index("ix_jobs_api_key_id_id", "api_key_id", "id"),
        # an SDK's retry of a request finds the job the first attempt made
        Index("ix_jobs_api_key_id_request_hash", "api_key_id", "request_hash"),
        # retention: jobs finished before the cut-off, those past their own expiry, expired ones
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_expires_at", "expires_at"),
        Index("ix_jobs_expired_at", "expired_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    dialect: Mapped[str] = mapped_column(String(32))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The canonical GenerationRequest as submitted (no secrets, no image bytes)."""
    routes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """Every route this job may take, planned at submit (core.planning.plan_routes), in the order
    the worker tries them: the model's first configured route, then its fallbacks. Each is an
    AppliedParams: what that route will actually generate."""
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    n: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    canceled: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    pricing: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The prices in force at submit, a core.billing.ledger.PricingSnapshot: the markup and the
    price of every route."""
    hold_per_image_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """Each image's share of the job's hold."""
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """What the delivered images were billed, in micro-dollars."""
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    """Where the job view is POSTed when the job ends (the request's, else its key's default)."""
    result_ttl_s: Mapped[int | None] = mapped_column(Integer, default=None)
    """The job's own retention, shorter than ``IMAGEGATE_RESULT_TTL_S``, if it asked for one."""
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """When the job's own retention ends (set as it ends, from ``result_ttl_s``)."""
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """When retention deleted its images and request: the row stays a while, so that the job
    answers 410 Gone rather than 404."""

    images: Mapped[list[JobImage]] = relationship(
        back_populates="job", order_by="JobImage.index", lazy="raise"
    )

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.canceled

    @property
    def applied(self) -> dict[str, Any]:
        """The first planned route: what the job generates unless it has to fall back."""
        return self.routes[0]


class JobImage(Base):
    __tablename__ = "job_images"
    __table_args__ = (
        UniqueConstraint("job_id", "index", name="uq_job_images_job_id_index"),
        # the sweeper's scan: unfinished images by status and age
        Index("ix_job_images_status_enqueued_at", "status", "enqueued_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    """The catalogue model that finally served the image (a fallback's, when one was used)."""
    provider: Mapped[str | None] = mapped_column(String(64), default=None)
    upstream_model: Mapped[str | None] = mapped_column(String(200), default=None)
    object_key: Mapped[str | None] = mapped_column(String(255), default=None)
    mime_type: Mapped[str | None] = mapped_column(String(64), default=None)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    input_image_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_image_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """Billed cost in micro-dollars (integer), settled when the image is delivered."""
    upstream_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """What the upstream charges for it, at list price, in micro-dollars."""
    size: Mapped[str | None] = mapped_column(String(32), default=None)
    """The size class billed: WxH, or Google's tier (1K, 2K...)."""
    quality: Mapped[str | None] = mapped_column(String(16), default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """While running: after this instant the worker is presumed dead and the image is retaken."""
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    job: Mapped[Job] = relationship(back_populates="images", lazy="raise")


class InputObject(Base):
    """An input image in the store (content-addressed: one object for every request that sent
    the same bytes) and when a request last sent it, for ``IMAGEGATE_INPUT_TTL_S``."""

    __tablename__ = "input_objects"

    object_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
