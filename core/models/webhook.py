"""The webhook outbox: one delivery per ended job that has a webhook, and each attempt at it."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base
from core.models.types import BigIntPK, UTCDateTime, utcnow


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up: no attempt succeeded within ``IMAGEGATE_WEBHOOK_GIVE_UP_S``."""


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # the dispatcher's scan: pending deliveries that are due
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """The ``webhook-id`` of every attempt (receivers drop duplicates by it)."""
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    """When the job ended; the delivery is given up ``IMAGEGATE_WEBHOOK_GIVE_UP_S`` after it."""
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    """When the next attempt is due; moved forward when a task is sent for it, so that a task
    lost on the way is sent again once this passes."""
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    payload: Mapped[str | None] = mapped_column(Text, default=None)
    """The body, fixed at the first attempt: every attempt sends the same bytes."""


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    """The receiver's HTTP status; None when none came (refused, unreachable, timed out)."""
    error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
