"""The worker's event-loop pool end to end (``imagegate worker``, Redis, PostgreSQL, the fake
upstream as a real HTTP server): with ``IMAGEGATE_WORKER_CONCURRENCY=200``, 200 images waiting on
a slow upstream are 200 upstream calls in flight at once, in one worker process that holds a few
threads for them all (the thread pool would hold 200), and every image then succeeds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, env_names

pytestmark = pytest.mark.integration

IN_FLIGHT = 200
DELAY_S = 8.0
"""Each answer waits this long: the 200 calls must all be sent within it to be in flight at once."""
THREADS_AT_MOST = 40


@pytest.fixture(scope="module")
def slow() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count in /proc")


def test_200_upstream_calls_in_flight_at_once_in_one_worker_with_few_threads(
    make_stack: Callable[..., Stack], slow: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = {**slow.gateway_settings(tmp_path_factory.mktemp("pool")), "upstream_timeout_s": "60"}
    stack = make_stack("distributed", **env_names(settings), IMAGEGATE_WORKER_CONCURRENCY=str(IN_FLIGHT))
    key = stack.create_key("in-flight")
    slow.add_fault("gemini", "hang", delay_s=DELAY_S, times=IN_FLIGHT)
    worker_pid = stack.workers[0].pid
    idle_threads = threads_of(worker_pid)

    job_ids = [httpx.post(f"{stack.base_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                          json={"model": "gemini-3.1-flash-image", "prompt": f"wait {j}", "n": 10}).json()["id"]
               for j in range(IN_FLIGHT // 10)]
    peak_threads = idle_threads
    deadline = time.monotonic() + 90
    while slow.count("gemini") < IN_FLIGHT:
        peak_threads = max(peak_threads, threads_of(worker_pid))
        assert time.monotonic() < deadline, f"only {slow.count('gemini')} calls reached the upstream"
        time.sleep(0.05)
    peak_threads = max(peak_threads, threads_of(worker_pid))
    # each answer leaves the upstream DELAY_S after its call arrived: if the last call arrived less
    # than DELAY_S after the first, no answer had left before it, and all 200 were in flight at once
    arrivals = [c.time for c in slow.calls if c.endpoint == "gemini"]
    assert max(arrivals) - min(arrivals) < DELAY_S, f"the calls took {max(arrivals) - min(arrivals):.1f} s to arrive"
    assert peak_threads <= THREADS_AT_MOST, f"{peak_threads} threads (idle: {idle_threads})"
    print(f"200 calls arrived within {max(arrivals) - min(arrivals):.1f} s; worker threads: {peak_threads} at most")

    for job_id in job_ids:
        job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=120)
        assert job["status"] == "succeeded", job
    assert slow.count("gemini") == IN_FLIGHT  # one call per image, none retried
    assert slow.violations == []
