"""The job and image state machines, and how a job's final status follows from its images."""

from __future__ import annotations

import pytest

from core.jobs import ImageStatus, JobStatus, final_job_status


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


def test_terminal_statuses() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED,
                                                      JobStatus.CANCELED}
    assert {s for s in ImageStatus if s.is_terminal} == {ImageStatus.SUCCEEDED, ImageStatus.FAILED,
                                                        ImageStatus.CANCELED}
