"""Use case: cancel what is left of a job.

The images nothing is making are canceled: those still queued, and those running on a worker
whose lease has expired (it died, or lost its database: should it come back, the attempt fence
refuses its outcome). They are counted on the job, which closes if they were its last images, and
their holds are released (:func:`core.settlement.cancel_images`). Images running under a live
lease go on and are delivered.

``DELETE /v1/jobs/{id}`` calls it once it has checked that the key owns the job.
"""

from __future__ import annotations

from api.state import AppState
from core import metrics, settlement
from core.db import transaction
from core.events import RedisEventPublisher
from core.models.types import utcnow


async def cancel_job(state: AppState, job_id: str) -> list[str]:
    """Cancel the job's images that nothing is making; returns their ids. The requests waiting on
    the job wake at once: this process's directly, every API process's (distributed mode) through
    the job's event on Redis, as when a worker ends an image."""
    now = utcnow()
    async with transaction(state.sessions) as session:
        canceled = await settlement.cancel_images(session, job_id, now=now)
    if canceled.image_ids:
        metrics.count_settled("canceled", canceled.model, len(canceled.image_ids),
                              job_ended=canceled.ended.value if canceled.ended else None)
        state.waiter.notify(job_id)
        if state.redis is not None:
            await RedisEventPublisher(state.redis).publish(job_id, canceled.ended.value if canceled.ended else None)
    return canceled.image_ids
