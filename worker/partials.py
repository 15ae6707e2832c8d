"""Streamed partial images, worker side: each draft a provider hands on is stored beside the
job's images and appended to the job's partial-image log (:mod:`core.events`), where the
caller's streaming request reads it. A draft is a preview: it is never billed, and failing to
pass one on (a store or Redis error) costs the caller that preview, never the image."""

from __future__ import annotations

import logging
import time

from core.events import PartialImage
from core.storage import partial_object_key
from worker.providers.base import PartialFrame
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class PartialImages:
    """The :data:`~worker.providers.base.PartialSink` of one attempt of a job's images."""

    def __init__(self, runtime: WorkerRuntime, job_id: str, *, attempts: dict[int, int]) -> None:
        self.runtime = runtime
        self.job_id = job_id
        self.attempts = attempts
        """The attempt number of each image index this attempt runs (part of the draft's key)."""

    def __call__(self, frame: PartialFrame) -> None:
        runtime, job_id = self.runtime, self.job_id
        try:
            key = partial_object_key(
                job_id,
                frame.index,
                frame.output_format,
                attempt=self.attempts.get(frame.index, 0),
                partial_index=frame.partial_index,
            )
            runtime.store.put(key, frame.data)
            runtime.events.publish_partial(
                PartialImage(
                    job_id=job_id,
                    index=frame.index,
                    partial_index=frame.partial_index,
                    object_key=key,
                    output_format=frame.output_format,
                    size=frame.size,
                    quality=frame.quality,
                    background=frame.background,
                    created_at=int(time.time()),
                )
            )
        except Exception:
            log.warning(
                "job %s: partial image %d of image %d could not be passed on",
                job_id,
                frame.partial_index,
                frame.index,
                exc_info=True,
            )
