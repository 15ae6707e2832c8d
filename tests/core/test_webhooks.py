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
from core.webhooks.delivery import next_attempt, post_webhook

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
