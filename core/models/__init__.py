"""Every table, re-exported so that Alembic sees the whole schema."""

from core.models.api_key import ApiKey
from core.models.job import Job, JobImage
from core.models.ledger import LedgerEntry, LedgerKind

__all__ = ["ApiKey", "Job", "JobImage", "LedgerEntry", "LedgerKind"]
