"""Streamed OpenAI Images answers (``stream: true``, ``partial_images``), driven by the official
openai SDK against the real stack: uvicorn, a real Celery worker, Redis and PostgreSQL (and the
embedded mode's in-process worker and bus), with the fake upstream streaming GPT image drafts
as OpenAI does. Drafts are passed through as they arrive; every image is a completed event as
soon as it is stored; the job is billed once; a failure mid-stream is an error event."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from api.dialects.openai_images.stream import KEEP_ALIVE_S
from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.fakes.upstream_openai import PARTIAL_IMAGE_TOKENS
from tests.harness import Stack, env_names, priced_demo
from tests.pngs import blank_png as png_bytes

pytestmark = pytest.mark.integration

PER_IMAGE = 40_000  # the priced demo's $0.04, at the default markup of 1.0


@pytest.fixture(scope="module")
def embedded_gw(
    make_stack: Callable[..., Stack], fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    return make_stack("embedded", **env_names(fake.gateway_settings(tmp_path_factory.mktemp("stream-providers"))))


@pytest.fixture(params=["distributed", "embedded"])
def gateway(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue("gw" if request.param == "distributed" else "embedded_gw")


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key)


def _timed(events: Iterator[Any]) -> list[tuple[float, Any]]:
    return [(time.monotonic(), event) for event in events]


def _image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _charges(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    return stack.rows("SELECT kind, amount_micros FROM ledger_entries WHERE job_id = :j AND kind = 'charge'", j=job_id)


def _usage(stack: Stack, key: str) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(f"{stack.base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    return report


def test_gpt_image_drafts_are_passed_through_as_they_arrive(gateway: Stack, upstream: FakeUpstream) -> None:
    key = gateway.create_key(f"stream-gpt-{gateway.mode}")
    upstream.stream_pause_s = pause = 1.0  # long enough that a busy machine does not blur it
    raw = _client(gateway, key).images.with_raw_response.generate(
        model="gpt-image-1.5",
        prompt="a lighthouse at dusk",
        stream=True,
        partial_images=2,
        quality="low",
        size="1024x1024",
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    job_id = raw.headers["x-imagegate-job-id"]
    events = _timed(iter(raw.parse()))
    assert [e.type for _, e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for _, e in events[:2]] == [0, 1]
    drafts = [_image(e.b64_json) for _, e in events[:2]]
    assert {(d.format, d.size) for d in drafts} == {("PNG", (1024, 1024))}
    final = events[-1][1]
    assert (final.size, final.quality, final.background, final.output_format) == ("1024x1024", "low", "opaque", "png")
    assert _image(final.b64_json).size == (1024, 1024)
    assert final.b64_json not in {e.b64_json for _, e in events[:2]}
    # the drafts came while the upstream was still drawing (the fake pauses between its events),
    # not once the image was done
    assert events[-1][0] - events[0][0] >= pause
    # the upstream was asked to stream, once; the drafts' tokens are in the image's usage
    [call] = [c for c in upstream.calls if c.endpoint == "openai_generations"]
    assert call.json is not None and (call.json["stream"], call.json["partial_images"], call.json["n"]) == (True, 2, 1)
    assert final.usage.output_tokens == 272 + 2 * PARTIAL_IMAGE_TOKENS
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    # billed once, as the non-streamed answer is
    [charge] = _charges(gateway, job_id)
    job = httpx.get(f"{gateway.base_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert job["status"] == "succeeded" and job["images"][0]["usage"]["output_tokens"] == final.usage.output_tokens
    assert charge["amount_micros"] > 0
    usage = _usage(gateway, key)["totals"]
    assert usage["images_succeeded"] == 1 and int(usage["output_tokens"]) == final.usage.output_tokens
    # a sent draft is not kept
    drafts_left = [p for p in (gateway.tmp / "data").rglob(f"{job_id}/*partial*")]
    assert drafts_left == []


def test_n_gpt_images_each_have_their_drafts_and_one_completed(gw: Stack, upstream: FakeUpstream) -> None:
    key = gw.create_key("stream-gpt-n")
    events = list(
        _client(gw, key).images.generate(
            model="gpt-image-1.5",
            prompt="three boats",
            n=3,
            stream=True,
            partial_images=1,
            quality="low",
            size="1024x1024",
        )
    )
    kinds = [e.type for e in events]
    assert kinds.count("image_generation.partial_image") == 3 and kinds.count("image_generation.completed") == 3
    # one streamed call per image: each image's drafts and usage are its own
    assert upstream.count("openai_generations") == 3
    assert {e.usage.output_tokens for e in events if e.type.endswith("completed")} == {272 + PARTIAL_IMAGE_TOKENS}


def test_a_multipart_edit_streams_image_edit_events(gateway: Stack, upstream: FakeUpstream) -> None:
    key = gateway.create_key(f"stream-edit-{gateway.mode}")
    events = list(
        _client(gateway, key).images.edit(
            model="gpt-image-1.5",
            image=("in.png", png_bytes(64, 64), "image/png"),
            prompt="add a moon",
            stream=True,
            partial_images=1,
            quality="low",
            size="1024x1024",
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[-1].usage.input_tokens_details.image_tokens > 0
    [call] = [c for c in upstream.calls if c.endpoint == "openai_edits"]
    assert call.form is not None and call.form["stream"] == ["true"] and call.form["partial_images"] == ["1"]


def test_a_json_edit_streams_without_partials_as_completed_events(gw: Stack, upstream: FakeUpstream) -> None:
    key = gw.create_key("stream-edit-json")
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(64, 64)).decode()
    with httpx.stream(
        "POST",
        f"{gw.base_url}/v1/images/edits",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "gpt-image-1.5",
            "prompt": "add a moon",
            "images": [{"image_url": data_url}],
            "stream": True,
            "n": 2,
            "quality": "low",
            "size": "1024x1024",
        },
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert lines == ["event: image_edit.completed"] * 2
    # without partial_images the upstream answers in one piece, one call for both images
    [call] = [c for c in upstream.calls if c.endpoint == "openai_edits"]
    assert call.form is not None and "stream" not in call.form and call.form["n"] == ["2"]


def test_ten_demo_images_are_ten_completed_events(gateway: Stack) -> None:
    key = gateway.create_key(f"stream-demo-{gateway.mode}")
    raw = _client(gateway, key).images.with_raw_response.generate(
        model="demo", prompt="ten foxes", n=10, size="64x64", stream=True, partial_images=3
    )
    job_id = raw.headers["x-imagegate-job-id"]
    events = list(raw.parse())
    assert [e.type for e in events] == ["image_generation.completed"] * 10
    assert len({e.b64_json for e in events}) == 10
    assert {(_image(e.b64_json).size, e.size, e.output_format) for e in events} == {((64, 64), "64x64", "png")}
    assert all(e.usage.total_tokens == 0 for e in events)
    assert len(_charges(gateway, job_id)) == 10
    assert _usage(gateway, key)["totals"]["images_succeeded"] == 10


def test_gemini_images_are_sent_as_each_is_stored(gw: Stack, upstream: FakeUpstream) -> None:
    key = gw.create_key("stream-gemini")
    upstream.add_fault("gemini", "hang", delay_s=1.2, prompt_contains="slow")
    events = _timed(
        iter(_client(gw, key).images.generate(model="gemini-3-pro-image", prompt="slow herons", n=3, stream=True))
    )
    assert [e.type for _, e in events] == ["image_generation.completed"] * 3
    # the two quick images did not wait for the slow one
    assert events[-1][0] - events[0][0] >= 0.8
    assert all(e.usage.output_tokens > 0 for _, e in events)


def test_an_upstream_failure_mid_stream_is_an_error_event(gateway: Stack, upstream: FakeUpstream) -> None:
    key = gateway.create_key(f"stream-broken-{gateway.mode}")
    upstream.add_fault("openai_generations", "stream_error", times=20)
    raw = _client(gateway, key).images.with_raw_response.generate(
        model="gpt-image-1.5", prompt="a broken stream", stream=True, partial_images=1, quality="low", size="1024x1024"
    )
    job_id = raw.headers["x-imagegate-job-id"]
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for event in raw.parse():
            seen.append(event.type)
    assert seen and set(seen) == {"image_generation.partial_image"}
    assert caught.value.body is not None and caught.value.body["type"] == "server_error"  # type: ignore[index]
    assert caught.value.body["job_id"] == job_id  # type: ignore[index]
    assert _charges(gateway, job_id) == []
    assert (
        gateway.rows("SELECT COALESCE(SUM(amount_micros), 0) AS s FROM ledger_entries WHERE job_id = :j", j=job_id)[0][
            "s"
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"stream": True, "partial_images": 4}, "partial_images"),
        ({"stream": True, "partial_images": -1}, "partial_images"),
        ({"partial_images": 2}, "partial_images"),
        ({"stream": True, "response_format": "url"}, "response_format"),
    ],
)
def test_bad_streaming_parameters_are_refused_before_anything_is_stored(
    gw: Stack, body: dict[str, Any], param: str
) -> None:
    key = gw.create_key(f"stream-bad-{param}-{len(body)}-{body.get('partial_images')}")
    response = httpx.post(
        f"{gw.base_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-image-1.5", "prompt": "refused", **body},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]
    assert httpx.get(f"{gw.base_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()["data"] == []


def test_a_multipart_edit_with_partial_images_out_of_range_is_refused(gw: Stack) -> None:
    key = gw.create_key("stream-bad-form")
    response = httpx.post(
        f"{gw.base_url}/v1/images/edits",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        files={"image": ("in.png", png_bytes(64, 64), "image/png")},
        data={"model": "gpt-image-1.5", "prompt": "x", "stream": "true", "partial_images": "9"},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "partial_images"
    assert httpx.get(f"{gw.base_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()["data"] == []


@pytest.fixture(scope="module")
def slow_demo(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """One worker thread, a paid demo model that takes longer than a keep-alive an image."""
    return make_stack(
        "distributed",
        **priced_demo(tmp_path_factory.mktemp("stream-prices")),
        IMAGEGATE_DEMO_LATENCY_S=str(KEEP_ALIVE_S + 1),
        IMAGEGATE_WORKER_CONCURRENCY="1",
    )


def test_a_reader_who_leaves_cancels_what_has_not_started(slow_demo: Stack) -> None:
    key = slow_demo.create_key("stream-leaver")
    raw = _client(slow_demo, key).images.with_raw_response.generate(
        model="demo", prompt="nobody will see the rest", n=3, size="64x64", stream=True
    )
    job_id = raw.headers["x-imagegate-job-id"]
    stream = raw.parse()
    first = next(iter(stream))
    assert first.type == "image_generation.completed"
    stream.close()
    final = poll(slow_demo, key, job_id, until={"succeeded", "partial", "failed", "canceled"}, timeout=30)
    statuses = [i["status"] for i in sorted(final["images"], key=lambda i: i["index"])]
    # the image sent was made and billed; the one running when the reader left finishes (and
    # stays in /v1/jobs); what had not started is canceled, its hold released
    assert statuses[0] == "succeeded" and "canceled" in statuses, statuses
    money = slow_demo.money("stream-leaver")
    assert money.charges == statuses.count("succeeded")
    assert money.committed == money.charged == statuses.count("succeeded") * PER_IMAGE


def test_keep_alives_flow_while_the_job_runs(slow_demo: Stack) -> None:
    key = slow_demo.create_key("stream-patient")
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{slow_demo.base_url}/v1/images/generations",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "demo", "prompt": "patience", "n": 1, "size": "64x64", "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = [line for line in response.iter_lines() if line]
    assert lines.count(": keep-alive") >= 1
    assert [line for line in lines if line.startswith("event: ")] == ["event: image_generation.completed"]
