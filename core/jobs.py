"""The job state machine, shared by the API (submit, cancel) and the worker (run, finish).

::

    job:    queued -> running -> succeeded | partial | failed | canceled
    image:  queued -> running -> succeeded | failed | canceled

A job is one request holding ``n`` images; each image is its own task and succeeds or fails
alone. The job's final status is derived from its images' by :func:`final_job_status`. The
transitions themselves are the conditional updates of :mod:`core.repo.jobs` (a running image may be
claimed again once its lease has expired, while it has attempts left, and go back to queued when an
embedded gateway restarts); :mod:`core.settlement` counts and settles the images that end.
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
