"""The cost ledger: append-only rows of money per API key, in integer micro-dollars.

Only the billing module (``core/billing``) reads or writes it (an import-linter contract).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base
from core.models.types import BigIntPK, UTCDateTime, utcnow


class LedgerKind(enum.StrEnum):
    HOLD = "hold"
    CHARGE = "charge"
    RELEASE = "release"


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        # per-key balance and usage reports scan a key's rows by time
        Index("ix_ledger_entries_api_key_id_created_at", "api_key_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    # the ledger outlives the jobs it bills: retention may delete a job and its images
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None, index=True)
    job_image_id: Mapped[str | None] = mapped_column(ForeignKey("job_images.id", ondelete="SET NULL"),
                                                     default=None)
    kind: Mapped[str] = mapped_column(String(16))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    """Billed amount in micro-dollars: positive for hold and charge, negative for release."""
    upstream_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    pricing: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The unit prices and markup this row was computed with (a PricingSnapshot)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # -- what an image's rows record of it, so that usage reports need nothing but the ledger
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    """On an image's charge or release: ``succeeded``, ``failed`` or ``canceled``."""
    size: Mapped[str | None] = mapped_column(String(32), default=None)
    quality: Mapped[str | None] = mapped_column(String(16), default=None)
    input_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    output_tokens: Mapped[int | None] = mapped_column(Integer, default=None)


class KeySpend(Base):
    """What a key was charged per UTC day and per month (``2026-12-01``, ``2026-12``), kept in the
    transaction of each charge: budget and markup-tier checks read a few rows, never a key's
    whole history."""

    __tablename__ = "key_spend"

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    charged_micros: Mapped[int] = mapped_column(BigInteger, default=0)
