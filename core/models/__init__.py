"""The tables of jobs and keys. The ledger's table (:mod:`core.models.ledger`) is imported by the
billing module alone (``core/billing``) and by the migrations, which see every table."""

from core.models.api_key import ApiKey
from core.models.job import InputObject, Job, JobImage
from core.models.webhook import DeliveryStatus, WebhookAttempt, WebhookDelivery

__all__ = ["ApiKey", "DeliveryStatus", "InputObject", "Job", "JobImage", "WebhookAttempt", "WebhookDelivery"]
