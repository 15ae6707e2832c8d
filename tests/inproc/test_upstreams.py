"""Routes and upstream billing through HTTP, on the embedded app in this process with every provider
family pointed at the fake upstream (``tests/fakes/upstream.py``, a real HTTP server in this
process): which route served a request, the model list and health, and a charge capped at its
hold when the upstream reports more usage than the estimate allowed for."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.inproc.gateway import Gateway, running_gateway

pytestmark = pytest.mark.anyio

# gpt-image-1.5 in core/billing/prices.toml, micro-dollars per token
TEXT_IN, IMAGE_IN, TEXT_OUT, IMAGE_OUT = 5, 8, 10, 32
LOW_1024_TOKENS = 272  # output tokens of a low-quality 1024x1024 image
TEXT_IN_OVERHEAD = 100


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> AsyncIterator[Gateway]:
    tmp = tmp_path_factory.mktemp("upstreams")
    async with running_gateway(tmp, **fake.gateway_settings(tmp)) as gateway:
        yield gateway


def upstream_micros(image: dict[str, Any]) -> int:
    """An image's upstream cost at gpt-image-1.5's list prices, from the usage stored for it."""
    text_in = image["input_tokens"] - image["input_image_tokens"]
    text_out = image["output_tokens"] - image["output_image_tokens"]
    return (text_in * TEXT_IN + image["input_image_tokens"] * IMAGE_IN + text_out * TEXT_OUT
            + image["output_image_tokens"] * IMAGE_OUT)


# -- routes -------------------------------------------------------------------------------------


async def test_the_model_itself_serves_when_its_upstream_answers(gw: Gateway, upstream: FakeUpstream) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "gemini-3-pro-image", "prompt": "a lighthouse"})
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-served-by"] == "gemini-3-pro-image"
    assert upstream.count("gemini", "gemini-3-pro-image") == 1 and upstream.count("vertex_gemini") == 0
    [job] = gw.rows("SELECT routes FROM jobs WHERE id = :j", j=response.headers["x-imagegate-job-id"])
    assert [route["model"] for route in json.loads(job["routes"])] == [
        "gemini-3-pro-image", "vertex/gemini-3-pro-image", "gateway/gemini-3-pro-image"]  # planned, in order


async def test_a_fallback_serves_when_the_upstream_no_longer_knows_the_model(
    gw: Gateway, upstream: FakeUpstream
) -> None:
    upstream.add_fault("gemini", "status", status=404, model="gemini-3-pro-image")
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "gemini-3-pro-image", "prompt": "served elsewhere"})
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-served-by"] == "vertex/gemini-3-pro-image"
    assert upstream.count("gemini") == 1 and upstream.count("vertex_gemini", "gemini-3-pro-image") == 1
    job = await gw.poll(key, response.headers["x-imagegate-job-id"])
    assert job["model"] == "gemini-3-pro-image"
    assert [(i["model"], i["provider"]) for i in job["images"]] == [("vertex/gemini-3-pro-image", "vertex_gemini")]


async def test_a_gpt_image_model_is_served_by_openai_images(gw: Gateway, upstream: FakeUpstream) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "gpt-image-1.5", "prompt": "two", "n": 2, "quality": "low"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    assert response.headers["x-imagegate-served-by"] == "gpt-image-1.5"
    assert upstream.count("openai_generations", "gpt-image-1.5") == 1  # n images in one upstream call


async def test_the_model_list_shows_every_configured_family(gw: Gateway) -> None:
    key = await gw.create_key()
    listed = (await gw.http.get("/v1/models", headers=key.auth)).json()
    assert listed["object"] == "list"
    ids = {m["id"] for m in listed["data"]}
    assert {"gemini-3-pro-image", "vertex/gemini-3-pro-image", "gateway/gemini-3-pro-image", "gpt-image-1.5",
            "gpt-image-2", "imagen-4.0-generate-001", "demo-image"} <= ids
    gpt = next(m for m in listed["data"] if m["id"] == "gpt-image-1.5")
    assert gpt["object"] == "model" and gpt["capabilities"]["images_per_upstream_call"] == 10
    one = (await gw.http.get("/v1/models/google/gemini-3-pro-image", headers=key.auth)).json()
    assert one["id"] == "gemini-3-pro-image" and one["fallbacks"] == ["vertex/gemini-3-pro-image",
                                                                      "gateway/gemini-3-pro-image"]
    unknown = await gw.http.get("/v1/models/flux-9", headers=key.auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert (await gw.http.get("/v1/models")).status_code == 401


async def test_health_reports_the_database_and_the_embedded_worker(gw: Gateway) -> None:
    response = await gw.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": "embedded", "checks": {"database": "ok", "broker": "ok"},
                               "circuits": {}}


# -- what an image costs ------------------------------------------------------------------------


async def test_an_image_is_charged_its_usage_at_list_price(gw: Gateway, upstream: FakeUpstream) -> None:
    key = await gw.create_key()
    prompt = "an exact lighthouse"
    response = await gw.generate(key, {"model": "gpt-image-1.5", "prompt": prompt, "quality": "low",
                                       "size": "1024x1024"})
    assert response.status_code == 200, response.text
    job_id = response.headers["x-imagegate-job-id"]
    [job] = gw.rows("SELECT hold_per_image_micros FROM jobs WHERE id = :j", j=job_id)
    # the hold: the prompt's bytes and the overhead at the dearer input rate, and the image's tokens
    assert job["hold_per_image_micros"] == (len(prompt) + TEXT_IN_OVERHEAD) * IMAGE_IN + LOW_1024_TOKENS * IMAGE_OUT
    [image] = gw.rows("SELECT * FROM job_images WHERE job_id = :j", j=job_id)
    assert image["output_image_tokens"] == LOW_1024_TOKENS
    assert image["cost_micros"] == image["upstream_cost_micros"] == upstream_micros(image)
    assert image["cost_micros"] < job["hold_per_image_micros"]
    assert gw.amounts(key) == {"hold": [job["hold_per_image_micros"]], "charge": [image["cost_micros"]],
                               "release": [-job["hold_per_image_micros"]]}


async def test_an_image_costing_more_than_its_hold_is_billed_at_the_hold(gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.add_fault("openai_generations", "usage", body={
        "output_tokens": 100_000, "output_tokens_details": {"image_tokens": 100_000, "text_tokens": 0}})
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "gpt-image-1.5", "prompt": "a costly one", "quality": "low",
                                       "size": "1024x1024"})
    assert response.status_code == 200, response.text
    assert upstream.faults_pending() == 0
    job_id = response.headers["x-imagegate-job-id"]
    [job] = gw.rows("SELECT hold_per_image_micros, cost_micros FROM jobs WHERE id = :j", j=job_id)
    hold = job["hold_per_image_micros"]
    [image] = gw.rows("SELECT * FROM job_images WHERE job_id = :j", j=job_id)
    assert image["output_image_tokens"] == 100_000
    # the upstream's list cost is recorded as reported; the key pays no more than it was held
    assert image["upstream_cost_micros"] == upstream_micros(image) > hold
    assert image["cost_micros"] == job["cost_micros"] == hold
    assert gw.amounts(key) == {"hold": [hold], "charge": [hold], "release": [-hold]}
    [charge] = [r for r in gw.ledger(key) if r["kind"] == "charge"]
    assert charge["upstream_cost_micros"] == upstream_micros(image)
    assert gw.committed(key) == hold
    assert response.headers["x-imagegate-cost"] == f"{hold / 1_000_000:.6f}"
