"""The tables of jobs and keys. The ledger's table (:mod:`core.models.ledger`) is imported by the
billing module alone (``core/billing``) and by the migrations, which see every table."""

from core.models.api_key import ApiKey
from core.models.job import Job, JobImage

__all__ = ["ApiKey", "Job", "JobImage"]
