"""Every image ends, in bounded time and money, on a real distributed stack (uvicorn, `imagegate
worker`, Redis, PostgreSQL) with leases shorter than an attempt: a hanging upstream fails each image
once its routes are spent, never retried past them; a worker that dies during every attempt leaves
the image failed with `attempts_exhausted` once its attempts are spent; an input image gone from
the store fails its image at once; a running image whose worker died can be canceled. Each time
the hold comes back to the last micro-dollar and the upstream calls are counted exactly."""

from __future__ import annotations

import base64
import io
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, env_names, priced_demo
from tests.outage import wait_until

pytestmark = pytest.mark.integration

LEASE_S = 2.0
MAX_ATTEMPTS = 2
UPSTREAM_ATTEMPTS = 2
ROUTES = ("gemini", "vertex_gemini", "chat")
"""gemini-3-pro-image's routes, by the fake upstream's endpoint: the model, then its fallbacks
vertex/gemini-3-pro-image and gateway/gemini-3-pro-image."""

BOUNDS = {
    "IMAGEGATE_UPSTREAM_TIMEOUT_S": "1",
    "IMAGEGATE_UPSTREAM_MAX_ATTEMPTS": str(UPSTREAM_ATTEMPTS),
    # one attempt (3 routes x 2 calls x 1 s) outlasts the lease: the heartbeat must keep it
    "IMAGEGATE_IMAGE_LEASE_S": str(LEASE_S),
    "IMAGEGATE_IMAGE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "IMAGEGATE_SWEEP_INTERVAL_S": "0.3",
    "IMAGEGATE_DEMO_LATENCY_S": "3",
    "IMAGEGATE_WORKER_CONCURRENCY": "4",
}


@pytest.fixture(scope="module")
def bounded(make_stack: Callable[..., Stack], fake: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("bounded")
    stack = make_stack("distributed", **{**env_names(fake.gateway_settings(tmp)), **priced_demo(tmp), **BOUNDS})
    yield stack
    stack.stop()


@pytest.fixture
def gateway(bounded: Stack, upstream: FakeUpstream) -> Stack:
    """The stack, with the fake upstream reset; its workers are as the last test left them."""
    return bounded


def with_a_worker(stack: Stack) -> Stack:
    if not stack.workers:
        stack.start_worker()
    return stack


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(stack: Stack, key: str, **body: Any) -> str:
    response = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key), json=body, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def hang_everywhere(fake: FakeUpstream) -> None:
    for endpoint in ROUTES:
        fake.add_fault(endpoint, "hang", delay_s=3, times=1000)


def kill_workers(stack: Stack) -> None:
    for worker in stack.workers:
        worker.stop(signal.SIGKILL)
    stack.workers.clear()


def test_a_hanging_upstream_fails_each_image_once_its_routes_are_spent(gateway: Stack, fake: FakeUpstream) -> None:
    stack = with_a_worker(gateway)
    key = stack.create_key("hang")
    hang_everywhere(fake)
    started = time.monotonic()

    job_id = submit(stack, key, model="gemini-3-pro-image", prompt="a lighthouse that never comes", n=2)
    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=40)

    assert job["status"] == "failed", job
    assert time.monotonic() - started < 30
    images = stack.images(job_id)
    for image in images.values():
        # one attempt: its lease was renewed all along, so nobody took the image over
        assert (image["status"], image["attempts"], image["error_code"]) == ("failed", 1, "upstream_timeout")
        assert "did not answer within 1 s" in image["error_message"]
        assert image["lease_until"] is None
    # attempts x route calls: 1 attempt x (3 routes x 2 calls) per image, 2 images
    assert {endpoint: fake.count(endpoint) for endpoint in ROUTES} == {e: 2 * UPSTREAM_ATTEMPTS for e in ROUTES}
    money = stack.money("hang")
    assert (money.committed, money.ledger, money.charges) == (0, 0, 0)


def test_an_image_whose_worker_dies_at_every_attempt_fails_when_its_attempts_are_spent(
    gateway: Stack, fake: FakeUpstream
) -> None:
    stack = with_a_worker(gateway)
    key = stack.create_key("dying")
    hang_everywhere(fake)

    job_id = submit(stack, key, model="gemini-3-pro-image", prompt="a worker that keeps dying")
    [held] = [row["amount_micros"] for row in stack.rows(
        "SELECT amount_micros FROM ledger_entries WHERE job_id = :job AND kind = 'hold'", job=job_id)]
    assert held > 0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with_a_worker(stack)
        # the attempt is in its first upstream call: the worker dies there
        wait_until(lambda n=attempt: fake.count("gemini") == n, 30, f"attempt {attempt}'s upstream call")
        kill_workers(stack)

    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=10 + 2 * LEASE_S)

    assert job["status"] == "failed", job
    [image] = stack.images(job_id).values()
    assert (image["status"], image["attempts"], image["error_code"]) == ("failed", 2, "attempts_exhausted")
    assert image["error_message"] == (
        "The image could not be made in 2 attempts: none ended with an outcome, and during the last one its "
        "worker stopped renewing its lease (the worker died or lost its database).")
    assert job["images"][0]["error"]["code"] == "attempts_exhausted"
    # attempts x route calls: each attempt got as far as its first call
    assert {endpoint: fake.count(endpoint) for endpoint in ROUTES} == {"gemini": 2, "vertex_gemini": 0, "chat": 0}
    money = stack.money("dying")
    assert (money.committed, money.ledger, money.charges) == (0, 0, 0)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_input_image_gone_from_the_store_fails_its_image_and_is_not_sent_again(gateway: Stack) -> None:
    stack = gateway
    key = stack.create_key("input-gone")
    kill_workers(stack)  # the task waits in the queue while the input disappears
    response = httpx.post(f"{stack.base_url}/v1/images/edits", headers={**_auth(key), "Prefer": "respond-async"},
                          json={"model": "demo", "prompt": "edit a lost image", "size": "64x64",
                                "images": [{"image_url": "data:image/png;base64,"
                                                         + base64.b64encode(_png()).decode()}]}, timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    [stored] = list((stack.tmp / "data" / "images" / "inputs").rglob("*.png"))
    stored.unlink()

    stack.start_worker()
    job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=30)

    assert job["status"] == "failed", job
    assert job["images"][0]["error"]["code"] == "input_image_missing"
    [image] = stack.images(job_id).values()
    assert (image["status"], image["attempts"], image["lease_until"]) == ("failed", 1, None)
    money = stack.money("input-gone")
    assert (money.committed, money.ledger, money.charges) == (0, 0, 0)
    # the image has ended: several sweeps later, nobody has tried it again
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert stack.images(job_id)[0]["attempts"] == 1
        time.sleep(0.1)


def test_a_running_image_whose_worker_died_can_be_canceled(gateway: Stack) -> None:
    stack = with_a_worker(gateway)
    key = stack.create_key("cancel-expired")
    job_id = submit(stack, key, prompt="cancel me after my worker died", n=2, size="64x64")

    def started_none_done() -> bool:
        statuses = [row["status"] for row in stack.images(job_id).values()]
        return "running" in statuses and set(statuses) <= {"running", "queued"}

    wait_until(started_none_done, 30, "an image running, none done")
    kill_workers(stack)
    assert "running" in {row["status"] for row in stack.images(job_id).values()}

    def leases_expired() -> bool:
        return all(row["expired"] for row in stack.rows(
            "SELECT lease_until < now() AS expired FROM job_images WHERE job_id = :job AND status = 'running'",
            job=job_id))

    wait_until(leases_expired, 10 + LEASE_S, "the dead worker's leases to expire")

    response = httpx.delete(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key))

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "canceled"
    assert job["progress"] == {"total": 2, "done": 2, "succeeded": 0, "failed": 0, "canceled": 2}
    money = stack.money("cancel-expired")
    assert (money.committed, money.ledger, money.charges) == (0, 0, 0)
    # a worker coming back finds nothing to do: no image is made, nothing is billed
    stack.start_worker()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert {row["status"] for row in stack.images(job_id).values()} == {"canceled"}
        time.sleep(0.2)
    assert stack.stored_files(job_id) == []
    assert stack.money("cancel-expired").charges == 0
