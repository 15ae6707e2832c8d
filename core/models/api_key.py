"""API keys: the caller's identity. Only a hash of the secret is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base
from core.models.types import UTCDateTime, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the secret, shown in listings so a key can be recognised."""
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the whole secret (hex); the secret itself is never stored."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    # -- limits set by the operator (None: unlimited)
    budget_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Hard cap on everything the key may spend, in micro-dollars."""
    monthly_budget_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Hard cap per calendar month (UTC)."""
    rpm: Mapped[int | None] = mapped_column(Integer, default=None)
    images_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    models_allowed: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """Public model ids this key may use (None: all offered models)."""
    markup: Mapped[str | None] = mapped_column(String(16), default=None)
    """The key's own markup (a decimal string, e.g. "1.25"); None: the price table's."""

    committed_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """The sum of the key's ledger amounts (open holds plus charges), kept in the same transactions
    as the ledger rows: the budget check is one conditional update of this column."""
    charged_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """Everything the key was ever charged (its charge rows' sum), kept with them: committed minus
    charged is what its open holds reserve."""
    charged_month: Mapped[str | None] = mapped_column(String(7), default=None)
    """The latest UTC month (``2026-12``) the key was charged in; None: never charged."""
    month_charged_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """What the key was charged in ``charged_month``, kept with each charge as its ``key_spend``
    counters are: the monthly budget is checked on this row, in the same conditional update as the
    total budget (a month that has begun since counts 0)."""

    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    """The webhook of the key's jobs that name none."""
    webhook_secret_salt: Mapped[str | None] = mapped_column(String(64), default=None)
    """Set: the key's jobs are signed with a secret of its own, derived from the server's webhook
    secret and this salt (:func:`core.webhooks.signing.key_secret`); the secret is never stored."""
