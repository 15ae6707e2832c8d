"""The CLI's gateway client against answers a real gateway cannot easily be made to give: an
older gateway without job event streams, a stream that breaks, a rate limit, a gateway that is
down, an image URL on another host (httpx.MockTransport stands in for the gateway)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.client import Declined, ExitCode, GatewayClient, Refused, Unreachable

BASE = "http://gateway.test"
KEY = "ig-secret-key"


def view(status: str, images: list[str]) -> dict[str, Any]:
    return {
        "id": "job_1",
        "status": status,
        "cost_usd": "0.000000",
        "images": [{"index": i, "id": f"img_{i}", "status": s, "error": None} for i, s in enumerate(images)],
    }


def client(handler: Callable[[httpx.Request], httpx.Response]) -> GatewayClient:
    return GatewayClient(BASE, KEY, transport=httpx.MockTransport(handler), poll_s=0.01)


def test_without_an_event_stream_the_job_is_polled() -> None:
    polls = iter(
        [
            view("running", ["running", "queued"]),
            view("running", ["succeeded", "running"]),
            view("succeeded", ["succeeded", "succeeded"]),
        ]
    )
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})  # an older gateway: no such route
        return httpx.Response(200, json=next(polls))

    views = list(client(handler).follow("job_1"))
    assert [v["status"] for v in views] == ["running", "running", "succeeded"]
    assert seen == ["/v1/jobs/job_1/events"] + ["/v1/jobs/job_1"] * 3


def test_events_are_folded_into_the_job_view() -> None:
    stream = (
        f"event: job.snapshot\ndata: {json.dumps(view('running', ['queued', 'queued']))}\n\n"
        ": keep-alive\n\n"
        f"event: image.running\ndata: {json.dumps({'job_id': 'job_1', 'index': 1, 'status': 'running'})}\n\n"
        f"event: image.succeeded\ndata: {json.dumps({'job_id': 'job_1', 'index': 1, 'status': 'succeeded'})}\n\n"
        f"event: job.ended\ndata: {json.dumps(view('partial', ['failed', 'succeeded']))}\n\n"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/job_1/events"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.encode())

    views = list(client(handler).follow("job_1"))
    assert [[i["status"] for i in v["images"]] for v in views] == [
        ["queued", "queued"],
        ["queued", "running"],
        ["queued", "succeeded"],
        ["failed", "succeeded"],
    ]
    assert views[-1]["status"] == "partial"


def test_a_stream_that_breaks_falls_back_to_polling() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, json=view("succeeded", ["succeeded"]))

    assert [v["status"] for v in client(handler).follow("job_1")] == ["succeeded"]


def test_an_unknown_job_is_a_usage_error_not_a_fallback() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "job_not_found", "message": "No job found with id 'x'."}})

    with pytest.raises(Refused) as caught:
        list(client(handler).follow("x"))
    assert caught.value.exit_code == ExitCode.USAGE and "No job found" in caught.value.message


def test_a_rate_limit_is_waited_out_and_a_spent_budget_is_not() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"retry-after": "0.01"}, json={"error": {"code": "rate_limit_exceeded"}}),
            httpx.Response(202, json=view("queued", ["queued"])),
            httpx.Response(429, json={"error": {"code": "insufficient_quota", "message": "Budget spent."}}),
        ]
    )
    gateway = client(lambda request: next(answers))
    assert gateway.submit({"prompt": "x"}, idempotency_key="k")["status"] == "queued"
    with pytest.raises(Declined) as caught:
        gateway.submit({"prompt": "x"}, idempotency_key="k2")
    assert caught.value.exit_code == ExitCode.FAILED


def test_a_gateway_that_cannot_be_reached_is_said_without_the_key() -> None:
    tries = []

    def handler(request: httpx.Request) -> httpx.Response:
        tries.append(request.headers["idempotency-key"])
        raise httpx.ConnectError("refused")

    with pytest.raises(Unreachable) as caught:
        client(handler).submit({"prompt": "x"}, idempotency_key="same")
    assert caught.value.exit_code == ExitCode.UNREACHABLE and KEY not in str(caught.value)
    assert tries == ["same"] * 3  # retried with the same key: never a second job


def test_the_key_goes_to_the_gateway_only(tmp_path: Path) -> None:
    sent: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        sent[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=b"png bytes")

    gateway = client(handler)
    gateway.download(f"{BASE}/v1/files/img_1?sig=x", tmp_path / "a.png")
    gateway.download("https://bucket.s3.test/img_2?X-Amz-Signature=y", tmp_path / "b.png")
    assert sent == {"gateway.test": f"Bearer {KEY}", "bucket.s3.test": None}
    assert (tmp_path / "b.png").read_bytes() == b"png bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
