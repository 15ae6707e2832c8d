"""One webhook delivery attempt, and when to try again.

:func:`post_webhook` is a plain async function (httpx), so that a thread-pool task runs it with
``asyncio.run`` and an asyncio worker awaits it. Before every attempt the URL passes the rules of
:mod:`core.ssrf` again (a name may resolve elsewhere than at submit), and the connection goes to
the address that was checked, the URL's host in the Host header and TLS SNI. Redirects are not
followed: a receiver answers the URL it was given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from core.ssrf import UnsafeUrl, checked_addresses, parse_target

MAX_URL = 2048
USER_AGENT = "imagegate-webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def check_webhook_url(url: str, *, allow: Iterable[str]) -> None:
    """Refuse (:class:`UnsafeUrl`, saying why) a URL that may not receive webhooks."""
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL} characters.")
    await checked_addresses(parse_target(url), allow)


async def post_webhook(url: str, *, body: bytes, headers: Mapping[str, str], allow: Iterable[str],
                       timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> AttemptResult:
    """POST ``body`` (JSON) with ``headers`` (the signature's) to ``url``; never raises."""
    started = time.monotonic()

    def result(status: int | None, error: str | None) -> AttemptResult:
        return AttemptResult(status, error, int((time.monotonic() - started) * 1000))

    try:
        target = parse_target(url)
        addresses = await checked_addresses(target, allow)
    except UnsafeUrl as exc:
        return result(None, f"refused: {exc}")
    request_headers = {**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "Host": target.host_header}
    try:
        # the whole exchange within timeout_s: httpx's timeouts are per read, and a receiver may
        # trickle its answer a byte at a time; only the status counts, so the body is never read
        async with asyncio.timeout(timeout_s), httpx.AsyncClient(
                transport=transport, follow_redirects=False, trust_env=False,
                timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))) as client:
            request = client.build_request("POST", target.pinned(addresses[0]), content=body,
                                           headers=request_headers, extensions={"sni_hostname": target.host})
            response = await client.send(request, stream=True)
            await response.aclose()
    except (httpx.TimeoutException, TimeoutError):
        return result(None, f"no answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return result(None, f"could not connect ({type(exc).__name__})")
    if 200 <= response.status_code < 300:
        return result(response.status_code, None)
    return result(response.status_code, f"the receiver answered HTTP {response.status_code}")


def next_attempt(*, attempts: int, now: datetime, created_at: datetime, base_s: float, max_s: float,
                 give_up_s: float) -> datetime | None:
    """When to try again after ``attempts`` failed attempts: ``base_s`` doubled after each, at most
    ``max_s``; None once that is past ``give_up_s`` after the job ended."""
    delay = min(max_s, base_s * 2 ** max(0, attempts - 1))
    at = now + timedelta(seconds=delay)
    return at if at <= created_at + timedelta(seconds=give_up_s) else None
