"""The job and image state machines, and how a job's final status follows from its images."""

from __future__ import annotations

import pytest

from core.jobs import (
    ImageStatus,
    JobStatus,
    can_transition_image,
    can_transition_job,
    final_job_status,
)


@pytest.mark.parametrize(
    ("total", "succeeded", "failed", "canceled", "expected"),
    [
        # still running: some images are not terminal yet
        (3, 0, 0, 0, None),
        (3, 2, 0, 0, None),
        (3, 1, 1, 0, None),
        (3, 0, 1, 1, None),
        # every image terminal
        (1, 1, 0, 0, JobStatus.SUCCEEDED),
        (3, 3, 0, 0, JobStatus.SUCCEEDED),
        (3, 2, 1, 0, JobStatus.PARTIAL),
        (3, 1, 0, 2, JobStatus.PARTIAL),
        (3, 1, 1, 1, JobStatus.PARTIAL),
        (1, 0, 1, 0, JobStatus.FAILED),
        (3, 0, 3, 0, JobStatus.FAILED),
        (3, 0, 1, 2, JobStatus.FAILED),
        (1, 0, 0, 1, JobStatus.CANCELED),
        (3, 0, 0, 3, JobStatus.CANCELED),
    ],
)
def test_final_job_status(
    total: int, succeeded: int, failed: int, canceled: int, expected: JobStatus | None
) -> None:
    status = final_job_status(total=total, succeeded=succeeded, failed=failed, canceled=canceled)
    assert status is expected


ALLOWED_IMAGE = {
    (ImageStatus.QUEUED, ImageStatus.RUNNING),
    (ImageStatus.QUEUED, ImageStatus.CANCELED),
    (ImageStatus.RUNNING, ImageStatus.RUNNING),  # an expired lease is taken over
    (ImageStatus.RUNNING, ImageStatus.SUCCEEDED),
    (ImageStatus.RUNNING, ImageStatus.FAILED),
    (ImageStatus.RUNNING, ImageStatus.QUEUED),
}


@pytest.mark.parametrize("current", list(ImageStatus))
@pytest.mark.parametrize("new", list(ImageStatus))
def test_image_transitions(current: ImageStatus, new: ImageStatus) -> None:
    """Exactly the listed image transitions are allowed; nothing leaves a terminal state."""
    assert can_transition_image(current, new) is ((current, new) in ALLOWED_IMAGE)


TERMINAL_JOB = {JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELED}
ALLOWED_JOB = (
    {(JobStatus.QUEUED, JobStatus.RUNNING)}
    | {(JobStatus.QUEUED, t) for t in TERMINAL_JOB}
    | {(JobStatus.RUNNING, t) for t in TERMINAL_JOB}
)


@pytest.mark.parametrize("current", list(JobStatus))
@pytest.mark.parametrize("new", list(JobStatus))
def test_job_transitions(current: JobStatus, new: JobStatus) -> None:
    """A job goes queued -> running -> terminal (or straight to terminal); never back."""
    assert can_transition_job(current, new) is ((current, new) in ALLOWED_JOB)


def test_named_transitions() -> None:
    assert can_transition_image(ImageStatus.QUEUED, ImageStatus.RUNNING)
    assert can_transition_image(ImageStatus.RUNNING, ImageStatus.RUNNING)
    assert not can_transition_image(ImageStatus.SUCCEEDED, ImageStatus.RUNNING)
    assert not can_transition_image(ImageStatus.CANCELED, ImageStatus.QUEUED)
    assert can_transition_job(JobStatus.QUEUED, JobStatus.RUNNING)
    assert not can_transition_job(JobStatus.RUNNING, JobStatus.RUNNING)
    assert not can_transition_job(JobStatus.SUCCEEDED, JobStatus.FAILED)
    assert not can_transition_job(JobStatus.RUNNING, JobStatus.QUEUED)


def test_is_terminal() -> None:
    assert {s for s in JobStatus if s.is_terminal} == TERMINAL_JOB
    assert {s for s in ImageStatus if s.is_terminal} == {
        ImageStatus.SUCCEEDED, ImageStatus.FAILED, ImageStatus.CANCELED
    }
    assert not JobStatus.QUEUED.is_terminal
    assert not ImageStatus.RUNNING.is_terminal


def test_statuses_are_their_stored_strings() -> None:
    """The database stores the plain strings; the enums compare equal to them."""
    assert JobStatus("partial") is JobStatus.PARTIAL
    assert ImageStatus.RUNNING == "running"
