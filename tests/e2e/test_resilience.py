"""Nothing accepted is lost: a worker killed mid-job, a crashed embedded gateway, a broker that
is down at submit, and a synchronous caller that gives up before the job ends."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.test_jobs import poll
from tests.harness import Stack, free_port

pytestmark = pytest.mark.integration

SLOW = {
    "IMAGEGATE_DEMO_LATENCY_S": "1.5",
    "IMAGEGATE_WORKER_CONCURRENCY": "3",
    "IMAGEGATE_IMAGE_LEASE_S": "4",
    "IMAGEGATE_SWEEP_INTERVAL_S": "0.5",
    "IMAGEGATE_REQUEUE_AFTER_S": "30",
}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _images(stack: Stack, job_id: str) -> dict[int, dict[str, Any]]:
    engine = stack.db()
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                'SELECT "index", status, attempts, object_key, finished_at FROM job_images '
                'WHERE job_id = :job ORDER BY "index"'), {"job": job_id}).mappings().all()
    finally:
        engine.dispose()
    return {row["index"]: dict(row) for row in rows}


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stored_files(stack: Stack, job_id: str) -> list[Path]:
    return sorted((stack.tmp / "data" / "images").glob(f"*/{job_id}/*"))


@pytest.fixture(scope="module")
def slow_distributed(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack("distributed", **SLOW, IMAGEGATE_SYNC_TIMEOUT_S="1")
    yield stack
    stack.stop()


def test_worker_killed_mid_job_the_job_still_completes_each_image_once(slow_distributed: Stack) -> None:
    stack = slow_distributed
    key = stack.create_key("sigkill")
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                        json={"prompt": "survive a crash", "n": 10, "size": "128x128"}).json()["id"]

    def running_in_parallel() -> bool:
        return [i["status"] for i in _images(stack, job_id).values()].count("running") >= 2

    def some_done_some_running() -> bool:
        statuses = [i["status"] for i in _images(stack, job_id).values()]
        return statuses.count("succeeded") >= 3 and statuses.count("running") >= 1

    # one task per image: the worker runs several images of the job at once
    _wait_for(running_in_parallel, 30, "two images of the job running at once")
    _wait_for(some_done_some_running, 30, "3 images done and more running")
    worker = stack.workers[0]
    worker.stop(signal.SIGKILL)
    stack.workers.remove(worker)
    before = _images(stack, job_id)
    done_before = {i: row for i, row in before.items() if row["status"] == "succeeded"}
    interrupted = {i for i, row in before.items() if row["status"] == "running"}
    assert interrupted

    stack.start_worker()
    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=90)
    assert job["status"] == "succeeded", job
    after = _images(stack, job_id)
    assert all(row["status"] == "succeeded" for row in after.values())
    # images delivered before the crash were not made again
    for index, row in done_before.items():
        assert after[index] == row
    # the interrupted ones were taken over once, after their lease expired
    assert {after[i]["attempts"] for i in interrupted} == {2}
    # exactly one stored image per index: no image was generated twice
    files = _stored_files(stack, job_id)
    assert len(files) == 10
    assert sorted(f.name.split("-")[0] for f in files) == sorted(str(i) for i in range(10))


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
    _wait_for(lambda: "running" in [i["status"] for i in _images(stack, job_id).values()], 30,
              "an image running")
    response = httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key))
    assert response.status_code == 200
    canceled_now = response.json()["progress"]["canceled"]
    assert canceled_now >= 1

    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed", "canceled"}, timeout=60)
    rows = _images(stack, job_id)
    canceled = [i for i, row in rows.items() if row["status"] == "canceled"]
    succeeded = [i for i, row in rows.items() if row["status"] == "succeeded"]
    assert len(canceled) == canceled_now and len(canceled) + len(succeeded) == 10
    # the images that were running when the cancel came finished and are delivered
    assert job["status"] == "partial" and job["progress"]["succeeded"] == len(succeeded) >= 1
    assert all(rows[i]["attempts"] == 0 for i in canceled)
    assert len(_stored_files(stack, job_id)) == len(succeeded)
    # cancelling a finished job changes nothing
    again = httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key)).json()
    assert again["status"] == "partial" and again["progress"] == job["progress"]


def test_embedded_gateway_killed_mid_job_resumes_on_restart(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("embedded", **SLOW)
    key = stack.create_key("embedded-crash")
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                        json={"prompt": "crash me", "n": 6, "size": "96x96"}).json()["id"]
    _wait_for(lambda: "running" in [i["status"] for i in _images(stack, job_id).values()], 30,
              "an image running")
    assert stack.api is not None
    stack.api.stop(signal.SIGKILL)
    assert any(i["status"] != "succeeded" for i in _images(stack, job_id).values())

    stack.start_api()
    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=90)
    stack.stop()
    assert job["status"] == "succeeded", job
    assert len(_stored_files(stack, job_id)) == 6


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_broker_down_at_submit_the_job_is_accepted_and_runs_when_it_is_back(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    port = free_port()

    def start_redis() -> None:
        subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(tmp_path),
                        "--logfile", str(tmp_path / "redis.log")], check=True)
        _wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                         capture_output=True).returncode == 0, 10, "redis up")

    def stop_redis() -> None:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)

    start_redis()
    try:
        stack = make_stack("distributed", IMAGEGATE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                           IMAGEGATE_SWEEP_INTERVAL_S="0.5")
        key = stack.create_key("broker-down")
        stop_redis()

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

        start_redis()
        job = poll(stack, key, job_id, until={"succeeded", "failed"}, timeout=90)
        assert job["status"] == "succeeded", job
        assert httpx.get(f"{stack.base_url}/health").status_code == 200
        stack.stop()
    finally:
        stop_redis()
