"""Outages of the gateway's own servers mid-job, on a distributed stack whose PostgreSQL or Redis
is the test's own (tests/outage.py), never the shared ones: an outcome made while the database is
down is recorded and billed once when it is back; tasks a restarted Redis lost are sent again at
once, not IMAGEGATE_REQUEUE_AFTER_S later."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import redis

from tests.e2e.test_jobs import poll
from tests.harness import Stack, priced_demo
from tests.outage import PostgresServer, RedisServer, wait_until

pytestmark = pytest.mark.integration

PER_IMAGE = 40_000  # the priced demo's $0.04, at the default markup of 1.0


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(stack: Stack, key: str, n: int) -> str:
    response = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key), timeout=30,
                          json={"prompt": "through an outage", "n": n, "size": "64x64"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def assert_made_and_billed_once(stack: Stack, key_name: str, job_id: str, n: int) -> None:
    images = stack.images(job_id)
    assert [(row["status"], row["attempts"]) for row in images.values()] == [("succeeded", 1)] * n
    files = stack.stored_files(job_id)
    assert sorted(f.name for f in files) == sorted(f"{i}-1.png" for i in range(n))
    money = stack.money(key_name)
    assert (money.charges, money.charged) == (n, n * PER_IMAGE)
    assert money.committed == money.ledger == n * PER_IMAGE


def test_images_finishing_while_the_database_is_down_are_recorded_and_billed_once(
    make_stack: Callable[..., Stack], own_postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    n = 10
    stack = make_stack("distributed", IMAGEGATE_DATABASE_URL=own_postgres.create_database(),
                       **priced_demo(tmp_path_factory.mktemp("prices")),
                       IMAGEGATE_DEMO_LATENCY_S="3", IMAGEGATE_WORKER_CONCURRENCY=str(n),
                       # longer than the outage: the attempts keep their images throughout
                       IMAGEGATE_IMAGE_LEASE_S="30", IMAGEGATE_SWEEP_INTERVAL_S="0.5")
    try:
        key = stack.create_key("pg-outage")
        job_id = submit(stack, key, n)
        wait_until(lambda: [r["status"] for r in stack.images(job_id).values()] == ["running"] * n, 30,
                   "every image running")

        with own_postgres.down():
            stopped = time.monotonic()
            # every image is made and stored (the store is no database): only recording it is left
            wait_until(lambda: len(stack.stored_files(job_id)) == n, 20, "every image made and stored")
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))  # a 10 s outage

        job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=60)
        assert job["status"] == "succeeded", job
        assert_made_and_billed_once(stack, "pg-outage", job_id, n)
    finally:
        stack.stop()


def test_tasks_lost_with_a_redis_restart_are_sent_again_at_once(
    make_stack: Callable[..., Stack], own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    n = 8
    stack = make_stack("distributed", IMAGEGATE_REDIS_URL=own_redis.url(0),
                       **priced_demo(tmp_path_factory.mktemp("prices")),
                       IMAGEGATE_DEMO_LATENCY_S="1", IMAGEGATE_WORKER_CONCURRENCY="2",
                       IMAGEGATE_SWEEP_INTERVAL_S="0.5", IMAGEGATE_REQUEUE_AFTER_S="300")
    try:
        key = stack.create_key("redis-restart")
        job_id = submit(stack, key, n)
        queue = redis.Redis.from_url(own_redis.url(0))
        wait_until(lambda: "running" in {r["status"] for r in stack.images(job_id).values()}, 30, "an image running")
        assert queue.llen(stack.env["IMAGEGATE_QUEUE"]) >= n - 4  # waiting in the broker, not yet taken

        own_redis.restart()
        restarted = time.monotonic()
        assert queue.llen(stack.env["IMAGEGATE_QUEUE"]) == 0  # no persistence: the queue is gone

        job = poll(stack, key, job_id, until={"succeeded", "partial", "failed"}, timeout=60)
        assert job["status"] == "succeeded", job
        assert time.monotonic() - restarted < 20  # not IMAGEGATE_REQUEUE_AFTER_S (300 s)
        assert_made_and_billed_once(stack, "redis-restart", job_id, n)
    finally:
        stack.stop()
