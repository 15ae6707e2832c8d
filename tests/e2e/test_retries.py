"""One logical call, one billed job, however the official SDKs retry it with their own defaults:

- the gateway's sync timeout answers 504 naming the job with ``x-should-retry: false``, so the
  SDK does not send the request again (it would have made a new job each time);
- the SDK's own client timeout expires first: it retries (``x-stainless-retry-count: 1``...), and
  each retry attaches to the job of the first attempt, whose answer it finally gets;
- an error about a job that ended (its images failed) is not retried either.

Counts are exact: jobs made, images made, micro-dollars charged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

PRICED_DEMO = """
[[models]]
id = "demo-image"
source = "an operator's price for the demo model"
effective = 2026-11-01
per_image = { "*" = { "*" = "0.02" } }
"""


@pytest.fixture(scope="module")
def slow(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A priced demo model that takes 3 s per image, and a sync timeout of 2 s."""
    prices = tmp_path_factory.mktemp("prices") / "prices.toml"
    prices.write_text(PRICED_DEMO)
    return make_stack("distributed", IMAGEGATE_DEMO_LATENCY_S="3", IMAGEGATE_SYNC_TIMEOUT_S="2",
                      IMAGEGATE_PRICES_FILE=str(prices))


def _rows(stack: Stack, sql: str, **params: object) -> list[dict[str, object]]:
    engine = stack.db()
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings().all()]
    finally:
        engine.dispose()


def _key_id(stack: Stack, name: str) -> str:
    return str(_rows(stack, "SELECT id FROM api_keys WHERE name = :n", n=name)[0]["id"])


def _jobs_of(stack: Stack, key_id: str) -> list[dict[str, object]]:
    return _rows(stack, "SELECT id, status, n, succeeded FROM jobs WHERE api_key_id = :k ORDER BY id", k=key_id)


def _wait_ended(stack: Stack, key_id: str, timeout: float = 30) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = _jobs_of(stack, key_id)
        if jobs and all(j["status"] in ("succeeded", "partial", "failed", "canceled") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"jobs did not end: {jobs}"
        time.sleep(0.2)


def _charged(stack: Stack, key_id: str) -> int:
    rows = _rows(stack, "SELECT COALESCE(SUM(amount_micros), 0) AS s FROM ledger_entries WHERE api_key_id = :k "
                        "AND kind = 'charge'", k=key_id)
    return int(rows[0]["s"])  # type: ignore[call-overload]


def test_the_sync_timeout_is_not_retried_by_the_openai_sdk(slow: Stack) -> None:
    name = "retry-504"
    client = openai.OpenAI(base_url=slow.base_url + "/v1", api_key=slow.create_key(name))  # SDK defaults
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.images.generate(model="demo", prompt="a slow lighthouse", n=2, size="64x64")
    assert info.value.status_code == 504
    assert info.value.response.headers["x-should-retry"] == "false"
    job_id = info.value.response.headers["x-imagegate-job-id"]
    assert time.monotonic() - started < 5  # one wait of 2 s, no retries with backoff after it

    key_id = _key_id(slow, name)
    jobs = _wait_ended(slow, key_id)
    assert [j["id"] for j in jobs] == [job_id]
    assert (jobs[0]["status"], jobs[0]["succeeded"]) == ("succeeded", 2)
    assert _charged(slow, key_id) == 2 * 20_000  # two images, billed once


def test_the_sdk_own_timeout_retries_attach_to_the_first_job(make_stack: Callable[..., Stack],
                                                             tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICED_DEMO)
    stack = make_stack("distributed", IMAGEGATE_DEMO_LATENCY_S="4", IMAGEGATE_SYNC_TIMEOUT_S="60",
                       IMAGEGATE_PRICES_FILE=str(prices))
    name = "retry-client-timeout"
    # the client gives up after 1.5 s and retries twice, as the SDK does by default (max_retries=2):
    # each retry attaches to the first attempt's job, and the last one gets its images
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.create_key(name), timeout=1.5)
    result = client.images.with_raw_response.generate(model="demo", prompt="a patient lighthouse", n=3,
                                                      size="64x64")
    assert len(result.parse().data) == 3

    key_id = _key_id(stack, name)
    jobs = _wait_ended(stack, key_id)
    assert len(jobs) == 1, jobs  # three attempts, one job
    assert result.headers["x-imagegate-job-id"] == jobs[0]["id"]
    assert result.http_request.headers["x-stainless-retry-count"] != "0"  # it was a retry that answered
    assert (jobs[0]["status"], jobs[0]["succeeded"]) == ("succeeded", 3)
    assert _charged(stack, key_id) == 3 * 20_000

    # a later retry of the same call (the job has ended) gets its images, still from that one job
    raw = httpx.post(f"{stack.base_url}/v1/images/generations", timeout=30,
                     headers={"Authorization": f"Bearer {client.api_key}", "x-stainless-retry-count": "1"},
                     json={"model": "demo", "prompt": "a patient lighthouse", "n": 3, "size": "64x64"})
    assert raw.status_code == 200 and raw.headers["x-imagegate-job-id"] == jobs[0]["id"]
    assert len(raw.json()["data"]) == 3
    assert len(_jobs_of(stack, key_id)) == 1 and _charged(stack, key_id) == 3 * 20_000

    # the same body sent again as a new call (not a retry) is a new job
    again = httpx.post(f"{stack.base_url}/v1/images/generations", timeout=30,
                       headers={"Authorization": f"Bearer {client.api_key}", "x-stainless-retry-count": "0"},
                       json={"model": "demo", "prompt": "a patient lighthouse", "n": 1, "size": "64x64"})
    assert again.status_code == 200 and again.headers["x-imagegate-job-id"] != jobs[0]["id"]


def test_the_anthropic_sdk_retries_attach_too(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("distributed", IMAGEGATE_DEMO_LATENCY_S="3", IMAGEGATE_SYNC_TIMEOUT_S="60")
    name = "retry-anthropic"
    client = anthropic.Anthropic(base_url=stack.base_url, api_key=stack.create_key(name), timeout=1.2)
    message = client.messages.with_raw_response.create(
        model="demo", max_tokens=1024, messages=[{"role": "user", "content": "a red kite over the dunes"}])
    assert "![Generated Image](data:image/png;base64," in message.parse().content[0].text  # type: ignore[union-attr]
    jobs = _wait_ended(stack, _key_id(stack, name))
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded"
    assert message.headers["x-imagegate-job-id"] == jobs[0]["id"]


def test_an_error_about_an_ended_job_is_not_retried(gw: Stack, upstream: FakeUpstream) -> None:
    """Every image of the job fails upstream with a 500 that outlasts the gateway's own retries:
    the SDK hears the job's error once, with its id, and sends nothing again."""
    name = "retry-failed"
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.create_key(name))  # SDK defaults
    upstream.add_fault("openai_generations", "status", status=400, times=1)
    with pytest.raises(openai.APIStatusError) as info:
        client.images.generate(model="gpt-image-2", prompt="a refused lighthouse", n=1)
    assert info.value.response.headers["x-should-retry"] == "false"
    job_id = info.value.response.headers["x-imagegate-job-id"]
    jobs = _jobs_of(gw, _key_id(gw, name))
    assert [(j["id"], j["status"]) for j in jobs] == [(job_id, "failed")]
    assert upstream.count("openai_generations") == 1
