"""Metrics and structured logs end to end: the API and two workers in prometheus-client's
multi-process mode (one directory, three processes summed by the API's /metrics), with
``IMAGEGATE_LOG_FORMAT=json``; the jobs are driven by the openai SDK, the exposition is read with
prometheus-client's own parser."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import ADMIN_KEY, Stack, env_names, priced_demo

pytestmark = pytest.mark.integration

DEMO_MICROS = 40_000  # priced_demo: 0.04 USD an image

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def observed(make_stack: Callable[..., Stack], fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    tmp = tmp_path_factory.mktemp("observed")
    (tmp / "metrics").mkdir()
    stack = make_stack(
        "distributed",
        start=False,
        IMAGEGATE_LOG_FORMAT="json",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
        **priced_demo(tmp),
        **env_names(fake.gateway_settings(tmp)),
    )
    return stack.start(workers=2)


@pytest.fixture(scope="module")
def key(observed: Stack) -> str:
    return observed.create_key("observed")


def scrape(stack: Stack) -> Samples:
    response = httpx.get(stack.base_url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def test_metrics_need_the_admin_key(observed: Stack, key: str) -> None:
    assert httpx.get(observed.base_url + "/metrics").status_code == 401
    assert httpx.get(observed.base_url + "/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_counters_match_the_jobs_run(observed: Stack, key: str, upstream: FakeUpstream) -> None:
    before = scrape(observed)
    client = openai.OpenAI(base_url=observed.base_url + "/v1", api_key=key)
    for n in (1, 2, 3):
        assert len(client.images.generate(model="demo", prompt=f"{n} lamps", n=n, size="256x256").data) == n
    upstream.add_fault("gemini", "status", status=503, model="gemini-3-pro-image", times=1)
    assert len(client.images.generate(model="gemini-3-pro-image", prompt="a harbour").data) == 1
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="demo", prompt="bad size", size="banana")

    after = scrape(observed)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("imagegate_jobs_total", status="submitted") == 4
    assert delta("imagegate_jobs_total", status="succeeded") == 4
    assert delta("imagegate_jobs_total", status="succeeded", model="demo-image") == 3
    assert delta("imagegate_images_total", status="succeeded", model="demo-image") == 6
    assert delta("imagegate_images_total", status="succeeded", model="gemini-3-pro-image") == 1
    assert delta("imagegate_images_total", status="failed") == 0
    charged = observed.money("observed").charged
    assert delta("imagegate_billed_microdollars_total", model="demo-image") == 6 * DEMO_MICROS
    assert delta("imagegate_billed_microdollars_total") == charged
    route = "/v1/images/generations"
    assert delta("imagegate_http_requests_total", dialect="openai_images", route=route, status="200") == 4
    assert delta("imagegate_http_requests_total", dialect="openai_images", route=route, status="400") == 1
    assert delta("imagegate_upstream_calls_total", provider="gemini", status="503", retry="false") == 1
    assert delta("imagegate_upstream_calls_total", provider="gemini", status="200", retry="true") == 1
    assert delta("imagegate_upstream_seconds_count", provider="gemini") == 2
    assert delta("imagegate_image_seconds_count", status="succeeded") == 7
    assert delta("imagegate_queue_wait_seconds_count") >= 4
    assert total(after, "imagegate_images_in_flight") == 0
    assert total(after, "imagegate_queue_depth", status="queued") == 0
    assert ("imagegate_queue_depth", frozenset({("status", "running")})) in after


def _lines(stack: Stack) -> list[dict[str, Any]]:
    lines = []
    for process in stack.processes:
        for text in process.output().splitlines():
            if text.strip():
                try:
                    lines.append({**json.loads(text), "_process": process.name})
                except json.JSONDecodeError:
                    pytest.fail(f"{process.name} wrote a line that is not JSON: {text!r}")
    return lines


def test_every_log_line_is_json_and_the_job_id_follows_the_request(observed: Stack, key: str) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    response = httpx.post(
        observed.base_url + "/v1/images/generations",
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "Prefer": "respond-async", "x-request-id": request_id},
        json={"model": "demo", "prompt": "three boats", "n": 3, "size": "256x256"},
    )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == request_id
    job_id = response.json()["id"]
    assert poll(observed, key, job_id, until={"succeeded"})["status"] == "succeeded"
    generated = httpx.get(observed.base_url + "/health")
    assert len(generated.headers["x-request-id"]) == 32  # none sent: one is made

    deadline = time.monotonic() + 10
    while True:
        lines = _lines(observed)
        mine = [line for line in lines if line.get("request_id") == request_id]
        if len({line.get("image_id") for line in mine if line["_process"] == "worker"} - {None}) == 3:
            break
        assert time.monotonic() < deadline, f"the workers' lines of the job are missing: {mine}"
        time.sleep(0.2)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    # the API's lines of the request: its access line, and the job it made with the key's prefix
    api = [line for line in mine if line["_process"] == "api"]
    assert any(
        line.get("job_id") == job_id and line.get("key_prefix") == key[: len(line["key_prefix"])] for line in api
    ), api
    assert any("POST /v1/images/generations" in line["message"] for line in api), api
    # the workers' lines of the job: each carries the job id, the image's and the request's
    worker = [line for line in lines if line["_process"] == "worker" and line.get("job_id") == job_id]
    assert worker and all(line.get("request_id") == request_id and line.get("image_id") for line in worker)
    assert all(line.get("job_id") == job_id for line in mine if line["_process"] == "worker")


def test_upstream_lines_carry_status_and_latency(observed: Stack, key: str, upstream: FakeUpstream) -> None:
    upstream.add_fault("gemini", "status", status=503, model="gemini-3.1-flash-image", times=1)
    request_id = f"test-{uuid.uuid4().hex}"
    client = openai.OpenAI(
        base_url=observed.base_url + "/v1",
        api_key=key,
        default_headers={"x-request-id": request_id},
    )
    raw = client.images.with_raw_response.generate(model="gemini-3.1-flash-image", prompt="a kite")
    job_id = raw.headers["x-imagegate-job-id"]
    deadline = time.monotonic() + 10
    while True:
        calls = [line for line in _lines(observed) if line.get("job_id") == job_id and "upstream_status" in line]
        if len(calls) >= 2:
            break
        assert time.monotonic() < deadline, "the upstream calls' lines are missing"
        time.sleep(0.2)
    assert [line["upstream_status"] for line in calls] == [503, 200]
    assert all(isinstance(line["latency_ms"], int) and line["model"] == "gemini-3.1-flash-image" for line in calls)


def test_the_dashboard_graphs_metrics_the_gateway_exposes(observed: Stack) -> None:
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json").read_text())
    graphed = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"imagegate_[a-z_]+", target["expr"])}
    exposed = {name for name, _ in scrape(observed)}
    # families read at scrape time expose no sample while there is nothing to show (no circuit)
    assert graphed - exposed <= {"imagegate_circuit_state"}, graphed - exposed
    assert len(graphed) >= 10
