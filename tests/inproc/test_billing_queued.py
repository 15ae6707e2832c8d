"""Billing of jobs whose images wait in the queue, on the embedded app in this process with one
worker thread and slow demo images: the hold is taken at submit, and a job canceled while queued
gives its hold back. Amounts are read to the micro-dollar in the SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from tests.inproc.gateway import DEMO_HOLD, DEMO_PRICES, Gateway, running_gateway, write_toml

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def slow(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """One image at a time, each taking 0.5 s: a job's later images wait in the queue."""
    tmp = tmp_path_factory.mktemp("billing-queued")
    async with running_gateway(tmp, prices_file=write_toml(tmp / "prices.toml", DEMO_PRICES),
                               demo_latency_s=0.5, worker_concurrency=1) as gateway:
        yield gateway


async def test_the_hold_is_taken_at_submit_before_any_image_is_made(slow: Gateway) -> None:
    key = await slow.create_key()
    response = await slow.http.post("/v1/jobs", headers=key.auth, json={"prompt": "held", "n": 2, "size": "64x64"})
    assert response.status_code == 202
    assert slow.amounts(key) == {"hold": [2 * DEMO_HOLD]}  # nothing delivered yet
    assert slow.committed(key) == 2 * DEMO_HOLD
    job = await slow.poll(key, response.json()["id"])
    assert job["status"] == "succeeded"
    assert slow.amounts(key) == {"hold": [2 * DEMO_HOLD], "charge": [DEMO_HOLD] * 2, "release": [-DEMO_HOLD] * 2}
    assert slow.committed(key) == 2 * DEMO_HOLD


async def test_cancelling_a_job_gives_back_the_hold_of_its_queued_images(slow: Gateway) -> None:
    key = await slow.create_key()
    response = await slow.http.post("/v1/jobs", headers=key.auth, json={"prompt": "cancel me", "n": 4,
                                                                        "size": "64x64"})
    job_id = response.json()["id"]
    model = response.json()["model"]
    before = _canceled_images(model)
    # one worker thread, 0.5 s an image: once the first image runs, the other three wait in the queue
    await slow.poll(key, job_id, until=frozenset({"running"}))
    canceled = await slow.http.delete(f"/v1/jobs/{job_id}", headers=key.auth)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["progress"]["canceled"] == 3
    assert _canceled_images(model) - before == 3  # the metrics count images no attempt ended too
    job = await slow.poll(key, job_id)
    assert job["status"] == "partial"
    assert job["progress"] == {"total": 4, "done": 4, "succeeded": 1, "failed": 0, "canceled": 3}
    assert job["cost_usd"] == "0.050000"

    assert slow.amounts(key) == {"hold": [4 * DEMO_HOLD], "charge": [DEMO_HOLD],
                                 "release": [-DEMO_HOLD] * 4}  # the canceled images' shares and the delivered one's
    assert sum(r["amount_micros"] for r in slow.ledger(key)) == DEMO_HOLD == slow.committed(key)
    images = slow.rows("SELECT status, cost_micros, attempts FROM job_images WHERE job_id = :j", j=job_id)
    assert sorted((i["status"], i["cost_micros"], i["attempts"]) for i in images) == [
        ("canceled", 0, 0), ("canceled", 0, 0), ("canceled", 0, 0), ("succeeded", DEMO_HOLD, 1)]


def _canceled_images(model: str) -> float:
    """imagegate_images_total{status="canceled"} of ``model`` in this process's registry."""
    return REGISTRY.get_sample_value("imagegate_images_total", {"status": "canceled", "model": model}) or 0.0
