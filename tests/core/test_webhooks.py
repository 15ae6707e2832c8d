"""Webhook signing against an independent implementation of Standard Webhooks (the
``standardwebhooks`` package), secrets, the backoff schedule, and the SSRF rules at delivery."""

from __future__ import annotations

import asyncio
import base64
import os
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from core.config import Settings
from core.webhooks import signing
from core.webhooks.delivery import AttemptResult, next_attempt, post_webhook

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    key = signing.decode_secret(SECRET)
    body = b'{"type":"job.succeeded","data":{"id":"job_1","prompt":"caf\\u00e9"}}'
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers(key, msg_id="msg_1", timestamp=now, body=body)
    assert Webhook(SECRET).verify(body, headers)["data"]["id"] == "job_1"
    assert headers["webhook-signature"] == Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(now, UTC),
                                                                 body.decode())


def test_a_key_s_own_secret_is_derived_and_differs_by_salt() -> None:
    server = signing.decode_secret(SECRET)
    first = signing.key_secret(server, key_id="key_1", salt="aa")
    assert first == signing.key_secret(server, key_id="key_1", salt="aa")
    assert first != signing.key_secret(server, key_id="key_1", salt="bb")
    assert first != signing.key_secret(server, key_id="key_2", salt="aa")
    assert len(signing.decode_secret(first)) == 32


@pytest.mark.parametrize("value", ["nope", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_bad_webhook_secret_is_refused_at_startup_without_being_echoed(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, webhook_secret=value)  # type: ignore[call-arg]
    assert "webhook" in str(caught.value) and value not in str(caught.value).replace("input_value", "")


def test_the_backoff_doubles_up_to_its_cap_and_gives_up_in_time() -> None:
    ended = datetime(2026, 12, 1, tzinfo=UTC)
    delays = []
    now = ended
    for attempts in range(1, 8):
        at = next_attempt(attempts=attempts, now=now, created_at=ended, base_s=5, max_s=60, give_up_s=3600)
        assert at is not None
        delays.append((at - now).total_seconds())
        now = at
    assert delays == [5, 10, 20, 40, 60, 60, 60]
    late = ended + timedelta(seconds=3590)
    assert next_attempt(attempts=9, now=late, created_at=ended, base_s=5, max_s=60, give_up_s=3600) is None


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://169.254.169.254/", "http://[::1]/",
                                 "http://user:pw@example.com/", "file:///etc/passwd"])
def test_a_delivery_to_a_private_address_is_refused_before_any_connection(url: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no connection may be made")

    result = asyncio.run(post_webhook(url, body=b"{}", headers={}, allow=(), timeout_s=1,
                                      transport=httpx.MockTransport(refuse)))
    assert not result.delivered and result.status_code is None
    assert result.error is not None and result.error.startswith("refused: ")


def test_a_delivery_connects_to_the_checked_address_with_the_host_header() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    result = asyncio.run(post_webhook("http://127.0.0.1:9/hook?x=1", body=b'{"a":1}',
                                      headers={"webhook-id": "msg_1"}, allow=("127.0.0.1",), timeout_s=1,
                                      transport=httpx.MockTransport(receive)))
    assert result.delivered and result.status_code == 204
    [request] = seen
    assert request.url == "http://127.0.0.1:9/hook?x=1" and request.headers["host"] == "127.0.0.1:9"
    assert request.content == b'{"a":1}' and request.headers["webhook-id"] == "msg_1"
    assert request.headers["content-type"] == "application/json"


async def _receiver(answer: bytes, *, pause_s: float, then: bytes = b"") -> tuple[asyncio.Server, int]:
    """A receiver on a real socket that reads the request, then sends ``answer`` a byte at a time,
    ``pause_s`` apart, then ``then`` at once (and keeps the connection open)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            for byte in answer:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(pause_s)
            writer.write(then)
            await writer.drain()
            await asyncio.sleep(60)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_receiver_trickling_its_answer_is_given_up_within_the_timeout() -> None:
    """Each byte 0.2 s after the last, inside the 1 s timeout, the answer's head taking 8 s in all:
    the attempt ends at 1 s as a timeout, not when the receiver is done."""
    async def attempt() -> tuple[AttemptResult, float]:
        server, port = await _receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Slow: " + b"x" * 20 + b"\r\n\r\n",
                                       pause_s=0.2)
        started = asyncio.get_running_loop().time()
        try:
            result = await asyncio.wait_for(post_webhook(f"http://127.0.0.1:{port}/hook", body=b"{}", headers={},
                                                         allow=("127.0.0.1",), timeout_s=1), 20)
        finally:
            server.close()
        return result, asyncio.get_running_loop().time() - started

    result, took = asyncio.run(attempt())
    assert not result.delivered and result.error == "no answer within 1 s"
    assert took < 3


def test_a_delivery_reads_the_status_not_the_receiver_s_body() -> None:
    """A receiver answering 200 with a 1 GB body (sent slowly) has the delivery at once: only the
    status counts."""
    async def attempt() -> AttemptResult:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"
        server, port = await _receiver(b"", pause_s=0, then=head + b"x" * 65536)
        try:
            return await asyncio.wait_for(post_webhook(f"http://127.0.0.1:{port}/hook", body=b"{}", headers={},
                                                       allow=("127.0.0.1",), timeout_s=5), 20)
        finally:
            server.close()

    result = asyncio.run(attempt())
    assert result.delivered and result.status_code == 200
