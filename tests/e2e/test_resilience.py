"""Nothing accepted is lost: a worker killed mid-job, a crashed embedded gateway, a broker that
is down at submit, and a synchronous caller that gives up before the job ends."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.test_job_events import Read, read_events
from tests.e2e.test_jobs import poll
from tests.harness import BIN, Stack, free_port, priced_demo, spawn, wait_http_ok
from tests.outage import RedisServer, wait_until

pytestmark = pytest.mark.integration

LEASE_S = 1.0
SWEEP_S = 0.5
SLOW = {
    "IMAGEGATE_DEMO_LATENCY_S": "1.5",  # longer than the lease: only the heartbeat keeps an image
    "IMAGEGATE_WORKER_CONCURRENCY": "3",
    "IMAGEGATE_IMAGE_LEASE_S": str(LEASE_S),
    "IMAGEGATE_SWEEP_INTERVAL_S": str(SWEEP_S),
    "IMAGEGATE_REQUEUE_AFTER_S": "30",
}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def slow_distributed(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack("distributed", **SLOW, **priced_demo(tmp_path_factory.mktemp("prices")),
                       IMAGEGATE_SYNC_TIMEOUT_S="1")
    yield stack
    stack.stop()


def test_worker_killed_mid_job_the_job_still_completes_each_image_once(slow_distributed: Stack) -> None:
    stack = slow_distributed
    key = stack.create_key("sigkill")
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                        json={"prompt": "survive a crash", "n": 10, "size": "128x128"}).json()["id"]

    def running_in_parallel() -> bool:
        return [i["status"] for i in stack.images(job_id).values()].count("running") >= 2

    def some_done_some_running() -> bool:
        statuses = [i["status"] for i in stack.images(job_id).values()]
        return statuses.count("succeeded") >= 3 and statuses.count("running") >= 1

    # one task per image: the worker runs several images of the job at once
    wait_until(running_in_parallel, 30, "two images of the job running at once")
    wait_until(some_done_some_running, 30, "3 images done and more running")
    worker = stack.workers[0]
    worker.stop(signal.SIGKILL)
    killed = datetime.now(UTC)
    stack.workers.remove(worker)
    before = stack.images(job_id)
    done_before = {i: row for i, row in before.items() if row["status"] == "succeeded"}
    interrupted = {i for i, row in before.items() if row["status"] == "running"}
    assert interrupted

    stack.start_worker()
    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=90)
    assert job["status"] == "succeeded", job
    after = stack.images(job_id)
    assert all(row["status"] == "succeeded" for row in after.values())
    # images delivered before the crash were not made again, and none was taken from a living
    # worker although each takes longer than the lease: the heartbeat kept them
    for index, row in done_before.items():
        assert after[index] == row
    assert {row["attempts"] for i, row in after.items() if i not in interrupted} == {1}
    # the interrupted ones were sent again as soon as their lease expired, and taken over once
    assert {after[i]["attempts"] for i in interrupted} == {2}
    for i in interrupted:
        assert killed < after[i]["enqueued_at"] <= killed + timedelta(seconds=LEASE_S + SWEEP_S + 1)
    # exactly one stored image per index, and one charge: no image was generated or billed twice
    files = stack.stored_files(job_id)
    assert len(files) == 10
    assert sorted(f.name.split("-")[0] for f in files) == sorted(str(i) for i in range(10))
    money = stack.money("sigkill")
    per_image = 40_000  # $0.04, markup 1.0
    assert (money.charges, money.charged) == (10, 10 * per_image)
    assert money.committed == money.ledger == 10 * per_image
    assert sum(row["cost_micros"] for row in after.values()) == 10 * per_image


def test_sync_caller_gets_504_naming_the_job_and_the_job_goes_on(slow_distributed: Stack) -> None:
    stack = slow_distributed
    key = stack.create_key("sync-timeout")
    started = time.monotonic()
    response = httpx.post(f"{stack.base_url}/v1/images/generations", headers=_auth(key),
                          json={"prompt": "slow", "size": "64x64"}, timeout=30)
    assert response.status_code == 504
    assert time.monotonic() - started < 10
    error = response.json()["error"]
    job_id = error["job_id"]
    assert job_id in error["message"] and response.headers["x-imagegate-job-id"] == job_id
    assert error["type"] == "server_error"
    assert poll(stack, key, job_id, until={"succeeded", "failed"}, timeout=60)["status"] == "succeeded"


def test_cancel_stops_the_images_not_yet_started(slow_distributed: Stack) -> None:
    stack = slow_distributed
    key = stack.create_key("cancel")
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                        json={"prompt": "cancel most of me", "n": 10, "size": "64x64"}).json()["id"]
    wait_until(lambda: "running" in [i["status"] for i in stack.images(job_id).values()], 30,
              "an image running")
    response = httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key))
    assert response.status_code == 200
    canceled_now = response.json()["progress"]["canceled"]
    assert canceled_now >= 1

    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed", "canceled"}, timeout=60)
    rows = stack.images(job_id)
    canceled = [i for i, row in rows.items() if row["status"] == "canceled"]
    succeeded = [i for i, row in rows.items() if row["status"] == "succeeded"]
    assert len(canceled) == canceled_now and len(canceled) + len(succeeded) == 10
    # the images that were running when the cancel came finished and are delivered
    assert job["status"] == "partial" and job["progress"]["succeeded"] == len(succeeded) >= 1
    assert all(rows[i]["attempts"] == 0 for i in canceled)
    assert len(stack.stored_files(job_id)) == len(succeeded)
    # cancelling a finished job changes nothing
    again = httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key)).json()
    assert again["status"] == "partial" and again["progress"] == job["progress"]


def test_a_cancel_on_one_api_process_ends_the_event_stream_read_from_another_at_once(
        make_stack: Callable[..., Stack]) -> None:
    """Two API servers of one deployment (behind a load balancer): a job canceled through one ends
    the event stream a client reads from the other at once, through the job's event on Redis,
    not at that server's next re-read of the job (IMAGEGATE_EVENTS_KEEPALIVE_S, 30 s here)."""
    # no worker: the job's images stay queued until the cancel
    stack = make_stack("distributed", workers=0, IMAGEGATE_EVENTS_KEEPALIVE_S="30")
    key = stack.create_key("cancel-elsewhere")
    other_port = free_port()
    other = spawn("api-other", [str(BIN / "imagegate"), "serve"], env={**stack.env, "IMAGEGATE_PORT": str(other_port)},
                  cwd=stack.tmp, log=stack.tmp / "api-other.log")
    try:
        other_url = f"http://127.0.0.1:{other_port}"
        wait_http_ok(other, other_url + "/health")
        job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                            json={"prompt": "cancel me", "n": 4, "size": "64x64"}).json()["id"]
        read: list[Read] = []
        ended_at: list[float] = []
        opened = threading.Event()

        def follow() -> None:
            read.append(read_events(other_url, key, job_id, timeout=60, opened=opened))
            ended_at.append(time.monotonic())

        reader = threading.Thread(target=follow)
        reader.start()
        assert opened.wait(10), "the stream did not open"
        time.sleep(0.2)  # the stream has sent its snapshot and waits on the job
        canceled_at = time.monotonic()
        response = httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key))
        assert response.status_code == 200 and response.json()["status"] == "canceled", response.text
        reader.join(60)
        assert read and read[0].names()[-1] == "job.ended", read
        assert read[0].events[-1][1]["status"] == "canceled"
        assert ended_at[0] - canceled_at < 5.0, f"the stream ended {ended_at[0] - canceled_at:.2f} s after the cancel"
    finally:
        other.stop()
        stack.stop()


def test_embedded_gateway_killed_mid_job_resumes_on_restart(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("embedded", **SLOW)
    key = stack.create_key("embedded-crash")
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                        json={"prompt": "crash me", "n": 6, "size": "96x96"}).json()["id"]
    wait_until(lambda: "running" in [i["status"] for i in stack.images(job_id).values()], 30,
              "an image running")
    assert stack.api is not None
    stack.api.stop(signal.SIGKILL)
    assert any(i["status"] != "succeeded" for i in stack.images(job_id).values())

    stack.start_api()
    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=90)
    stack.stop()
    assert job["status"] == "succeeded", job
    assert len(stack.stored_files(job_id)) == 6


def test_broker_down_at_submit_the_job_is_accepted_and_runs_when_it_is_back(
    make_stack: Callable[..., Stack], own_redis: RedisServer
) -> None:
    stack = make_stack("distributed", IMAGEGATE_REDIS_URL=own_redis.url(0), IMAGEGATE_SWEEP_INTERVAL_S="0.5")
    try:
        key = stack.create_key("broker-down")
        own_redis.stop()

        health = httpx.get(f"{stack.base_url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["checks"]["database"] == "ok"
        assert health.json()["checks"]["broker"].startswith("unreachable")

        response = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key), timeout=30,
                              json={"prompt": "while the broker is down", "n": 2, "size": "64x64"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        time.sleep(1)
        waiting = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key)).json()
        assert waiting["status"] == "queued"

        own_redis.start()
        job = poll(stack, key, job_id, until={"succeeded", "failed"}, timeout=90)
        assert job["status"] == "succeeded", job
        assert httpx.get(f"{stack.base_url}/health").status_code == 200
    finally:
        stack.stop()
