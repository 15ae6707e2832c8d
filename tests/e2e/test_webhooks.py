"""Signed webhooks, end to end: a real receiver (an HTTP server of the test) checks every signature
with the ``standardwebhooks`` package (an implementation of the Standard Webhooks specification
independent of imagegate's), sees each ended job at least once under one ``webhook-id``, gets
retries after it answers 500, and a webhook pointing at a private address is refused at submit."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx
import openai
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.harness import Stack, free_port

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
FAST_RETRIES = {"IMAGEGATE_WEBHOOK_SECRET": SECRET, "IMAGEGATE_FETCH_ALLOW_HOSTS": "127.0.0.1",
                "IMAGEGATE_SWEEP_INTERVAL_S": "0.3", "IMAGEGATE_WEBHOOK_RETRY_BASE_S": "0.5",
                "IMAGEGATE_WEBHOOK_RETRY_MAX_S": "1"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server that records every webhook and answers 500 to the first ``fail`` requests of
    each path ``/fail-<fail>/...``, 200 to the others."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body))
                    seen = sum(r.path == self.path for r in receiver.received)
                fail = int(self.path.split("/")[1].removeprefix("fail-")) if self.path.startswith("/fail-") else 0
                self.send_response(500 if seen <= fail else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def wait(self, path: str, *, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [r for r in self.received if r.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path}: {len(got)} webhook(s) within {timeout} s, expected {count}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = receiver.start()
    yield receiver
    server.shutdown()


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def hooked(request: pytest.FixtureRequest, make_stack: Callable[..., Stack]) -> Stack:
    """A gateway signing webhooks with ``SECRET``, whose receiver (127.0.0.1) is allow-listed."""
    return make_stack(request.param, **FAST_RETRIES)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _verified(secret: str, received: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


def _job(stack: Stack, key: str, job_id: str, *, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=_auth(key)).json()
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_a_job_webhook_is_signed_retried_after_500_and_recorded_on_the_job(hooked: Stack, receiver: Receiver) -> None:
    key = hooked.create_key(f"hook-{hooked.mode}")
    path = f"/fail-2/{hooked.mode}"
    response = httpx.post(f"{hooked.base_url}/v1/jobs", headers=_auth(key),
                          json={"model": "demo", "prompt": "a signed lighthouse", "n": 2, "size": "64x64",
                                "webhook_url": receiver.url(path)})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    attempts = receiver.wait(path, count=3)
    # every attempt: the same webhook-id and body, a signature the independent implementation accepts
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1
    payloads = [_verified(SECRET, a) for a in attempts]
    event = payloads[0]
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job_id and event["data"]["status"] == "succeeded"
    assert [i["status"] for i in event["data"]["images"]] == ["succeeded", "succeeded"]
    # the image URLs in the body open (signed by the gateway)
    assert httpx.get(event["data"]["images"][0]["url"]).content.startswith(b"\x89PNG")
    # a signature made with another secret is refused by the same implementation
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(attempts[0].body, attempts[0].headers)

    job = _job(hooked, key, job_id, until=lambda j: bool(j.get("webhooks")) and j["webhooks"][0]["status"] != "pending")
    [delivery] = job["webhooks"]
    assert delivery["id"] == attempts[0].headers["webhook-id"]
    assert delivery["status"] == "delivered" and delivery["url"] == receiver.url(path)
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    assert delivery["attempts"][0]["error"] == "the receiver answered HTTP 500"
    # the backoff waited between attempts
    times = [a.headers["webhook-timestamp"] for a in attempts]
    assert int(times[-1]) - int(times[0]) >= 1
    time.sleep(1.5)  # delivered: no attempt more
    assert len(receiver.wait(path, count=3)) == 3


def test_a_webhook_url_s_query_reaches_the_receiver_and_no_log(hooked: Stack, receiver: Receiver) -> None:
    """Receivers take credentials in the query (``?token=``, ``?code=``): the delivery carries it,
    no log line of the gateway does (httpx logs each request's URL at INFO)."""
    key = hooked.create_key(f"hook-query-{hooked.mode}")
    token = f"{hooked.mode}7d1f0c2b9e4a6f83d5c1"
    path = f"/ok/query-{hooked.mode}?token={token}"
    response = httpx.post(f"{hooked.base_url}/v1/jobs", headers=_auth(key),
                          json={"model": "demo", "prompt": "a quiet harbour", "size": "64x64",
                                "webhook_url": receiver.url(path)})
    assert response.status_code == 202, response.text
    receiver.wait(path, count=1)
    job = _job(hooked, key, response.json()["id"],
               until=lambda j: bool(j.get("webhooks")) and j["webhooks"][0]["status"] == "delivered")
    assert job["webhooks"][0]["status"] == "delivered"
    assert token not in hooked.logs(tail=10**9)


def test_prefer_respond_async_with_the_webhook_header(hooked: Stack, receiver: Receiver) -> None:
    key = hooked.create_key(f"hook-header-{hooked.mode}")
    path = f"/ok/header-{hooked.mode}"
    client = openai.OpenAI(base_url=hooked.base_url + "/v1", api_key=key)
    raw = client.images.with_raw_response.generate(
        model="demo", prompt="called back", size="64x64",
        extra_headers={"Prefer": "respond-async", "x-imagegate-webhook-url": receiver.url(path)})
    assert raw.status_code == 202
    job_id = json.loads(raw.text)["id"]
    [got] = receiver.wait(path, count=1)
    event = _verified(SECRET, got)
    assert event["data"]["id"] == job_id and event["type"] == "job.succeeded"


def test_a_canceled_job_calls_back_too(hooked: Stack, receiver: Receiver) -> None:
    key = hooked.create_key(f"hook-cancel-{hooked.mode}")
    path = f"/ok/cancel-{hooked.mode}"
    response = httpx.post(f"{hooked.base_url}/v1/jobs", headers={**_auth(key), "Idempotency-Key": path},
                          json={"model": "demo", "prompt": "never mind", "n": 10, "size": "1024x1024",
                                "webhook_url": receiver.url(path)})
    job_id = response.json()["id"]
    httpx.delete(f"{hooked.base_url}/v1/jobs/{job_id}", headers=_auth(key))
    [got] = receiver.wait(path, count=1)
    event = _verified(SECRET, got)
    assert event["data"]["id"] == job_id
    assert event["type"] in ("job.canceled", "job.partial", "job.succeeded")
    assert event["type"] == f"job.{event['data']['status']}"


def test_a_key_default_webhook_signed_with_the_key_s_own_secret(hooked: Stack, receiver: Receiver) -> None:
    path = f"/ok/default-{hooked.mode}"
    made = httpx.post(f"{hooked.base_url}/admin/keys", headers=_auth(hooked.env["IMAGEGATE_ADMIN_KEY"]),
                      json={"name": f"hook-default-{hooked.mode}", "webhook_url": receiver.url(path),
                            "webhook_secret": "new"}).json()
    own = made["webhook_secret"]
    assert own.startswith("whsec_") and own != SECRET
    assert made["webhook_url"] == receiver.url(path)
    listed = httpx.get(f"{hooked.base_url}/admin/keys/{made['id']}",
                       headers=_auth(hooked.env["IMAGEGATE_ADMIN_KEY"])).json()
    assert listed["webhook_secret"] == "own" and own not in json.dumps(listed)
    assert own not in json.dumps(hooked.rows("SELECT * FROM api_keys"), default=str)  # never stored

    response = httpx.post(f"{hooked.base_url}/v1/jobs", headers=_auth(made["secret"]),
                          json={"model": "demo", "prompt": "by default", "size": "64x64"})
    assert response.status_code == 202
    [got] = receiver.wait(path, count=1)
    assert _verified(own, got)["data"]["id"] == response.json()["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(got.body, got.headers)


PRIVATE = ["http://10.0.0.7/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/x",
           "http://192.168.1.20/hook", "ftp://example.com/hook"]


@pytest.mark.parametrize("url", PRIVATE)
def test_a_webhook_to_a_private_address_is_refused_in_the_caller_s_dialect(hooked: Stack, url: str) -> None:
    key = hooked.create_key(f"hook-private-{hooked.mode}-{PRIVATE.index(url)}")
    before = hooked.count_rows()
    response = httpx.post(f"{hooked.base_url}/v1/jobs", headers=_auth(key),
                          json={"model": "demo", "prompt": "no", "webhook_url": url})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "webhook_url"
    assert error["code"] == "invalid_webhook_url" and "webhook_url" in error["message"]

    # the header, on the Anthropic dialect: the Anthropic SDK raises its 400 with the header named
    client = anthropic.Anthropic(base_url=hooked.base_url, api_key=key)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="demo", max_tokens=100, messages=[{"role": "user", "content": "no"}],
                               extra_headers={"Prefer": "respond-async", "x-imagegate-webhook-url": url})
    assert "x-imagegate-webhook-url" in caught.value.message
    assert hooked.count_rows() == before  # nothing stored, enqueued or billed


def test_a_key_default_webhook_to_a_private_address_is_refused(hooked: Stack) -> None:
    response = httpx.post(f"{hooked.base_url}/admin/keys", headers=_auth(hooked.env["IMAGEGATE_ADMIN_KEY"]),
                          json={"name": f"hook-private-default-{hooked.mode}", "webhook_url": "http://10.1.2.3/"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhook_url"
    assert hooked.rows("SELECT id FROM api_keys WHERE name = :n", n=f"hook-private-default-{hooked.mode}") == []


def test_webhooks_are_refused_while_no_secret_is_set(embedded: Stack) -> None:
    key = embedded.create_key("hook-no-secret")
    response = httpx.post(f"{embedded.base_url}/v1/jobs", headers=_auth(key),
                          json={"model": "demo", "prompt": "no", "webhook_url": "https://example.com/hook"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhooks_disabled"


def test_a_webhook_never_accepted_is_given_up_in_bounded_time(make_stack: Callable[..., Stack],
                                                              receiver: Receiver) -> None:
    stack = make_stack("embedded", **FAST_RETRIES, IMAGEGATE_WEBHOOK_GIVE_UP_S="3")
    key = stack.create_key("hook-give-up")
    path = "/fail-1000/give-up"
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=_auth(key),
                        json={"model": "demo", "prompt": "nobody listens", "size": "64x64",
                              "webhook_url": receiver.url(path)}).json()["id"]
    job = _job(stack, key, job_id, until=lambda j: bool(j.get("webhooks")) and j["webhooks"][0]["status"] != "pending")
    [delivery] = job["webhooks"]
    assert delivery["status"] == "failed"
    attempts = delivery["attempts"]
    assert len(attempts) >= 2 and {a["status_code"] for a in attempts} == {500}
    assert attempts[-1]["at"] - job["finished_at"] <= 4
    got = receiver.wait(path, count=len(attempts))
    assert len(got) == len(attempts) and len({g.headers["webhook-id"] for g in got}) == 1
    time.sleep(1.5)
    assert len(receiver.wait(path, count=1)) == len(attempts)  # given up: no more attempts


def test_the_command_line_refuses_a_private_default_webhook(hooked: Stack) -> None:
    with pytest.raises(RuntimeError) as caught:
        hooked.cli("keys", "create", "--name", f"cli-hook-{hooked.mode}", "--webhook-url", "http://10.9.8.7/x")
    assert "webhook_url" in str(caught.value) and "not a public address" in str(caught.value)
