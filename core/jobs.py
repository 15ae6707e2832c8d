"""The job state machine, shared by the API (submit, cancel) and the worker (run, finish).

::

    job:    queued -> running -> succeeded | partial | failed | canceled
    image:  queued -> running -> succeeded | failed | canceled

A job is one request holding ``n`` images; each image is its own task and succeeds or fails
alone. The job's final status is derived from its images' by :func:`final_job_status`.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_JOB


class ImageStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_IMAGE


_TERMINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELED})
_TERMINAL_IMAGE = frozenset({ImageStatus.SUCCEEDED, ImageStatus.FAILED, ImageStatus.CANCELED})

IMAGE_TRANSITIONS: dict[ImageStatus, frozenset[ImageStatus]] = {
    ImageStatus.QUEUED: frozenset({ImageStatus.RUNNING, ImageStatus.CANCELED}),
    # running -> running: a lease that expired (its worker died) is claimed again
    ImageStatus.RUNNING: frozenset(
        {ImageStatus.RUNNING, ImageStatus.SUCCEEDED, ImageStatus.FAILED, ImageStatus.QUEUED}
    ),
    ImageStatus.SUCCEEDED: frozenset(),
    ImageStatus.FAILED: frozenset(),
    ImageStatus.CANCELED: frozenset(),
}

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, *_TERMINAL_JOB}),
    JobStatus.RUNNING: _TERMINAL_JOB,
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.PARTIAL: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def can_transition_image(current: ImageStatus, new: ImageStatus) -> bool:
    return new in IMAGE_TRANSITIONS[current]


def can_transition_job(current: JobStatus, new: JobStatus) -> bool:
    return new in JOB_TRANSITIONS[current]


def final_job_status(*, total: int, succeeded: int, failed: int, canceled: int) -> JobStatus | None:
    """The job's terminal status once every image is terminal; ``None`` while some still run."""
    if succeeded + failed + canceled < total:
        return None
    if succeeded == total:
        return JobStatus.SUCCEEDED
    if succeeded > 0:
        return JobStatus.PARTIAL
    if failed > 0:
        return JobStatus.FAILED
    return JobStatus.CANCELED
