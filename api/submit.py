"""Use case: turn a canonical request into a committed job, then enqueue its images.

Route and plan first (so a bad request is refused before anything is written), then insert the
job and its ``n`` images and COMMIT, and only then send one task per image. If the broker is
down the job is still accepted: its images are marked for the sweeper, which sends them as soon
as the broker answers again. Nothing accepted is lost.
"""

from __future__ import annotations

import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from api.enqueue import Enqueuer
from api.inputs import PendingImage, store_pending
from core.generation import Dialect, GenerationRequest
from core.ids import new_id
from core.job_updates import mark_unsent
from core.jobs import ImageStatus, JobStatus
from core.models import ApiKey, Job, JobImage
from core.models.types import utcnow
from core.planning import plan
from core.routing import Catalogue, Resolved
from core.storage import ImageStore


async def submit(
    session: AsyncSession,
    *,
    key: ApiKey,
    request: GenerationRequest,
    dialect: Dialect,
    catalogue: Catalogue,
    enqueuer: Enqueuer,
    store: ImageStore | None = None,
    inputs: list[PendingImage] | None = None,
) -> Job:
    resolved = catalogue.resolve(request.model)
    spec = resolved.spec
    # plan for the first configured route (the model itself, or its first configured fallback)
    primary = catalogue.routes(spec)[0]
    if primary is not spec:
        resolved = Resolved(spec=primary, requested=request.model)
    applied = plan(request, resolved, grids=catalogue.grids)
    if inputs:
        if store is None:
            raise ValueError("input images need the image store")
        # accepted: the input images are written now (never for a refused request)
        await anyio.to_thread.run_sync(store_pending, store, inputs)

    now = utcnow()
    job = Job(
        id=new_id("job"),
        api_key_id=key.id,
        dialect=dialect,
        request=request.model_dump(mode="json", exclude_none=True),
        applied=applied.model_dump(mode="json"),
        model=spec.id,
        status=JobStatus.QUEUED,
        n=request.n,
        succeeded=0,
        failed=0,
        canceled=0,
        created_at=now,
    )
    images = [
        JobImage(id=new_id("img"), job_id=job.id, index=i, status=ImageStatus.QUEUED, enqueued_at=now)
        for i in range(request.n)
    ]
    session.add(job)
    session.add_all(images)
    await session.commit()

    image_ids = [image.id for image in images]
    if not await enqueuer.send(image_ids):
        await session.execute(mark_unsent(image_ids))
        await session.commit()
    return job
