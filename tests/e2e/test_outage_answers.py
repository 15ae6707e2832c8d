"""What callers hear during outages, and what a caller who leaves costs:

- the database down: submits and polls answer 503 in the caller's dialect, never 500; a caller
  waiting on a synchronous call gets 503 naming its job (which goes on and is billed once);
- Redis down: a key with rate limits is still accepted (limited in the API process), not refused;
- a synchronous caller who disconnects before its images start cancels them: nothing is made or
  billed for nobody.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_jobs import poll
from tests.harness import Stack, priced_demo
from tests.outage import PostgresServer, RedisServer, wait_until

pytestmark = pytest.mark.integration

PER_IMAGE = 40_000


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_database_outage_answers_503_naming_the_job(make_stack: Callable[..., Stack], own_postgres: PostgresServer,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = make_stack("distributed", IMAGEGATE_DATABASE_URL=own_postgres.create_database(),
                       **priced_demo(tmp_path_factory.mktemp("prices")), IMAGEGATE_DEMO_LATENCY_S="2",
                       IMAGEGATE_SYNC_TIMEOUT_S="5", IMAGEGATE_IMAGE_LEASE_S="30", IMAGEGATE_AUTH_CACHE_S="60")
    try:
        key = stack.create_key("db-down")
        client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key)  # the SDK's defaults
        outcome: dict[str, object] = {}

        def call() -> None:
            try:
                client.images.generate(model="demo", prompt="waiting through an outage", n=2, size="64x64")
            except openai.APIStatusError as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        wait_until(lambda: any(r["status"] == "running" for r in stack.rows("SELECT status FROM job_images")), 20,
                   "the caller's images running")
        with own_postgres.down():
            caller.join(timeout=30)
            # while it is down: a poll and a submit are 503 in their dialects, never 500
            job_id = httpx.get(f"{stack.base_url}/v1/jobs", headers=_auth(key), timeout=15)
            assert job_id.status_code == 503, job_id.text
            assert job_id.json()["error"]["code"] == "database_unavailable"
            message = anthropic.Anthropic(base_url=stack.base_url, api_key=key, max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as refused:
                message.messages.create(model="demo", max_tokens=16, messages=[{"role": "user", "content": "x"}])
            assert refused.value.status_code == 529  # the Anthropic dialect's "unavailable"
            gemini = httpx.post(f"{stack.base_url}/v1beta/models/demo:generateContent", headers=_auth(key),
                                json={"contents": [{"parts": [{"text": "x"}]}]}, timeout=15)
            assert gemini.status_code == 503 and gemini.json()["error"]["status"] == "UNAVAILABLE"

        error = outcome.get("error")
        assert isinstance(error, openai.APIStatusError), outcome
        assert error.status_code == 503
        assert error.response.headers["x-should-retry"] == "false"
        waited_job = error.response.headers["x-imagegate-job-id"]
        assert waited_job in error.message

        job = poll(stack, key, waited_job, until={"succeeded", "partial", "failed"}, timeout=60)
        assert job["status"] == "succeeded"
        money = stack.money("db-down")
        assert (money.charges, money.charged, money.committed) == (2, 2 * PER_IMAGE, 2 * PER_IMAGE)
        assert len(stack.rows("SELECT id FROM jobs")) == 1  # the refused requests made no job
    finally:
        stack.stop()


def test_a_rate_limited_key_is_accepted_while_redis_is_down(make_stack: Callable[..., Stack],
                                                            own_redis: RedisServer) -> None:
    stack = make_stack("distributed", IMAGEGATE_REDIS_URL=own_redis.url(0), IMAGEGATE_SWEEP_INTERVAL_S="0.5")
    try:
        key = stack.create_key("limited", rpm=5)
        with own_redis.down():
            accepted = [httpx.post(f"{stack.base_url}/v1/images/generations", timeout=15,
                                   headers={**_auth(key), "Prefer": "respond-async"},
                                   json={"model": "demo", "prompt": f"no broker {i}", "size": "64x64"})
                        for i in range(6)]
            # limited in the API process instead of refused: 5 accepted, the 6th over the limit
            assert [r.status_code for r in accepted] == [202] * 5 + [429], [r.text for r in accepted]
        jobs = [r.json()["id"] for r in accepted[:5]]
        for job_id in jobs:  # sent as soon as the broker answers again
            assert poll(stack, key, job_id, until={"succeeded", "failed"}, timeout=60)["status"] == "succeeded"
    finally:
        stack.stop()


def _send_and_leave(stack: Stack, key: str, body: dict[str, object], *, stay_s: float) -> None:
    """A synchronous call whose caller closes the connection after ``stay_s`` seconds."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        time.sleep(stay_s)


def test_a_caller_who_leaves_cancels_what_has_not_started(make_stack: Callable[..., Stack],
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = make_stack("distributed", **priced_demo(tmp_path_factory.mktemp("prices")),
                       IMAGEGATE_DEMO_LATENCY_S="2", IMAGEGATE_WORKER_CONCURRENCY="1")
    try:
        key = stack.create_key("leaver")
        _send_and_leave(stack, key, {"model": "demo", "prompt": "nobody will see", "n": 3, "size": "64x64"},
                        stay_s=1.0)
        [job] = stack.rows("SELECT id FROM jobs")
        final = poll(stack, key, str(job["id"]), until={"succeeded", "partial", "failed", "canceled"}, timeout=30)
        statuses = sorted(i["status"] for i in final["images"])
        # the image the one worker thread had started is delivered (and stays in /v1/jobs); the
        # two that had not started are canceled, their holds released
        assert statuses == ["canceled", "canceled", "succeeded"], statuses
        money = stack.money("leaver")
        assert (money.charges, money.charged, money.committed) == (1, PER_IMAGE, PER_IMAGE)
    finally:
        stack.stop()
