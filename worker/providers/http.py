"""The one place that sends to upstreams: timeouts, retries, ``Retry-After``, secret redaction.

An image call is slow (5-130 s), so the connect timeout is short and the read timeout long. An
attempt is also bounded as a whole, since an upstream that trickles its answer, each read well
inside the read timeout, would otherwise hold a call for ever: a whole answer must end within the
read timeout of its request, a streamed one (its events come as the image is drawn) within what is
left of the route's retry budget.
408, 409, 429, 500, 502, 503, 504, 529 and connection errors are retried with exponential backoff
and jitter, honouring ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date, RFC 9110
https://www.rfc-editor.org/rfc/rfc9110#field.retry-after) and ``x-should-retry`` (the headers the
official OpenAI and Anthropic SDKs honour); other statuses are not. Attempts and total time are
bounded. Upstream keys never reach a log line or an error message.

Calls run on the worker process's event loop (``worker/pool.py``): a call waiting for an upstream
costs a socket and a coroutine, not a thread. Each upstream host gets its own
:class:`httpx.AsyncClient`, so its connections (``IMAGEGATE_UPSTREAM_MAX_CONNECTIONS`` per host, in
pools of at most 32: :class:`ShardedTransport`) serve that host alone; and at most
``IMAGEGATE_UPSTREAM_CONCURRENT_READS`` answers are in memory at once, so that a thousand answers
arriving together do not all hold their megabytes at the same moment (the others wait in their
sockets' buffers: ``worker/providers/netio.py`` takes in no more than an answer's head until its
body is read). An answer read inside :func:`holding_answers` (the worker's run of an attempt)
keeps its place until the block ends, that is until its images are stored and recorded:
the images decoded from it are in memory until then, and answers arriving faster than the worker
records them would otherwise pile up.

This module knows HTTP only. What an upstream's error body means (a daily quota that no retry
will cure, a retry delay in the body, which error the caller gets) is the adapter's to say,
through :class:`UpstreamErrors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import inspect
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import httpcore
import httpx

from core import metrics
from core.errors import GatewayError, UpstreamError, UpstreamTimeoutError
from worker.providers.clock import SYSTEM_CLOCK, Clock
from worker.providers.netio import AnswerBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

READ_BYTES = 1 << 20
"""How much of an answer one socket read takes. httpcore reads 64 KiB at a time
(``AsyncHTTP11Connection.READ_NUM_BYTES``), so a 1.4 MB image answer is 22 reads, each a pass
through httpcore's and h11's Python; at 1 MiB it is 2 (``bench/load.py`` does the same for the
bench's client). httpcore offers no per-client setting, so :class:`UpstreamClient` sets the class
attribute for the worker process."""

ANSWER_BACKEND = AnswerBackend()
"""The sockets of every upstream connection (``worker/providers/netio.py``: an answer's body stays
in its socket until the client reads it)."""

CONNECTIONS_PER_POOL = 32
"""The most connections one httpcore pool holds; a host allowed more has several pools
(:class:`ShardedTransport`)."""


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The TLS settings of every upstream connection of the process: one context for all, since
    each takes some 20 ms to load the certificate authorities (a worker builds it as it starts,
    :func:`worker.run_job.prepare`, not on its first image's way)."""
    return httpx.create_ssl_context()


class ShardedTransport(httpx.AsyncBaseTransport):
    """One host's connections spread over several httpcore pools of at most
    :data:`CONNECTIONS_PER_POOL` each; a request goes to the pool with the fewest requests open.

    httpcore's pool goes over every one of its connections each time a request starts or ends
    (``AsyncConnectionPool._assign_requests_to_connections``): it asks each idle connection
    whether its socket is readable (a ``poll`` system call) and, for each idle one, counts all of
    them again. With a hundred connections to one host that is some ten thousand steps per
    request, which had become a tenth of embedded mode's CPU under load (bench/README.md). In
    pools of 32 the work per request is a small fraction of that, whatever the host's limit.
    Requests balance over the pools by those in flight (until each answer is closed), so every
    pool is kept busy before any of them opens more connections than its share."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float | None = 5.0) -> None:
        count = -(-max_connections // CONNECTIONS_PER_POOL)
        sizes = [max_connections // count + (1 if i < max_connections % count else 0) for i in range(count)]
        self._pools = [_transport(size, keepalive_expiry) for size in sizes]
        self._open = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._pools)), key=self._open.__getitem__)
        self._open[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._open[index] -= 1
            raise
        response.stream = _ClosedOnce(response.stream, lambda: self._done(index))  # type: ignore[arg-type]
        return response

    def _done(self, index: int) -> None:
        self._open[index] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _transport(size: int, keepalive_expiry: float | None) -> httpx.AsyncHTTPTransport:
    """httpx's transport over an httpcore pool of ``size`` connections on
    :class:`worker.providers.netio.AnswerBackend`. httpx takes no network backend, so the pool
    it builds is replaced by one built with the same settings (``httpx.AsyncHTTPTransport``
    keeps it as ``_pool`` and does nothing else with it than send and close)."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context(), limits=httpx.Limits(
        max_connections=size, max_keepalive_connections=size, keepalive_expiry=keepalive_expiry))
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context(), max_connections=size, max_keepalive_connections=size,
        keepalive_expiry=keepalive_expiry, http1=True, http2=False, network_backend=ANSWER_BACKEND)
    return transport


_CLOSED_BODY = httpx.ByteStream(b"")


def _unbind(response: httpx.Response) -> None:
    """Let a closed answer go as soon as nothing uses it. httpx's client binds an answer's stream
    to the answer (``httpx._client.BoundAsyncStream`` holds the response), a reference cycle: the
    answer, its megabytes of body with it, would wait for the garbage collector's next pass of
    its generation, and a thousand answers ending together held over a gigabyte that way
    (bench/README.md). Once closed, the stream is not read again."""
    response.stream = _CLOSED_BODY


class _ClosedOnce(httpx.AsyncByteStream):
    """An answer's body, which calls ``on_close`` the first time it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class AnswerHold:
    """The place in memory an attempt's answer takes (see :func:`holding_answers`): taken by the
    first answer of the attempt that is read, given back when the attempt's block ends or its
    answer turned out unusable (another attempt at the call follows)."""

    def __init__(self) -> None:
        self._taken: asyncio.Semaphore | None = None

    async def take(self, places: asyncio.Semaphore) -> None:
        if self._taken is None:
            await places.acquire()
            self._taken = places

    def give_back(self) -> None:
        taken, self._taken = self._taken, None
        if taken is not None:
            taken.release()


_hold: contextvars.ContextVar[AnswerHold | None] = contextvars.ContextVar("imagegate_answer_hold", default=None)


@contextlib.contextmanager
def holding_answers() -> Iterator[AnswerHold]:
    """Within the block (and the tasks it starts), an answer read by :meth:`UpstreamClient.call`
    keeps its place among the ``IMAGEGATE_UPSTREAM_CONCURRENT_READS`` until the block ends."""
    hold = AnswerHold()
    token = _hold.set(hold)
    try:
        yield hold
    finally:
        _hold.reset(token)
        hold.give_back()


Redact = Callable[[str], str]
"""Removes the configured secrets from a text (see :class:`Redactor`)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    budget_s: float = 600.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base x 2^(attempt-1), capped, minus up to 25 %."""
        delay = min(self.backoff_max_s, self.backoff_base_s * (2.0 ** (attempt - 1)))
        return delay * random.uniform(0.75, 1.0)


@dataclass(frozen=True)
class RetryHint:
    """What an upstream's error body says about retrying, which its status and headers cannot.

    ``final``: never retry, whatever the status (an exhausted daily quota, a content-policy
    refusal). ``delay_s``: when the status calls for a retry, wait this long unless a header names
    a delay. Neither (:data:`NO_HINT`): the status and headers decide alone.
    """

    final: bool = False
    delay_s: float | None = None
    reason: str = ""

    @classmethod
    def never(cls, reason: str) -> RetryHint:
        return cls(final=True, reason=reason)

    @classmethod
    def after(cls, seconds: float) -> RetryHint:
        return cls(delay_s=max(0.0, seconds))


NO_HINT = RetryHint()


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float | None = None
    reason: str = ""


def header_delay(headers: httpx.Headers, *, now: datetime) -> float | None:
    """The wait ``retry-after-ms`` or ``Retry-After`` asks for; an HTTP date counts from ``now``."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_decision(response: httpx.Response, hint: RetryHint, *, now: datetime) -> RetryDecision:
    """Whether a non-2xx answer is worth another attempt, and after how long.

    ``x-should-retry: false`` and a final hint stop; a retried status or ``x-should-retry: true``
    retries, after the headers' delay, else the hint's, else the policy's backoff (``None``).
    """
    status = response.status_code
    should = response.headers.get("x-should-retry", "").lower()
    if should == "false":
        return RetryDecision(False, reason="x-should-retry: false")
    if hint.final:
        return RetryDecision(False, reason=hint.reason)
    if status in RETRY_STATUSES or should == "true":
        delay = header_delay(response.headers, now=now)
        return RetryDecision(True, hint.delay_s if delay is None else delay, reason=f"HTTP {status}")
    return RetryDecision(False, reason=f"HTTP {status}")


class UpstreamErrors(Protocol):
    """How an adapter reads its upstream's error answers (the error half of an HttpAdapter)."""

    def retry_hint(self, response: httpx.Response) -> RetryHint:
        """What the error body of ``response`` says about retrying (pure)."""
        ...

    def parse_error(self, response: httpx.Response, *, retryable: bool, redact: Redact) -> GatewayError:
        """The error the caller gets for ``response``, complete: ``retryable`` as the client
        decided, and every text taken from the upstream passed through ``redact``."""
        ...


class Redactor:
    """Removes configured secrets from any text that may reach a log or a caller."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def _count_call(provider: str, status: str, attempt: int, sent: float) -> int:
    """Count and time one call; its latency in milliseconds."""
    elapsed = time.perf_counter() - sent
    metrics.UPSTREAM_CALLS(provider, status, "true" if attempt > 1 else "false").inc()
    metrics.UPSTREAM_LATENCY(provider).observe(elapsed)
    return int(elapsed * 1000)


@dataclass(frozen=True)
class _Try:
    """One attempt of :meth:`UpstreamClient.call`: what its methods need to know of it."""

    attempt: int
    limit_s: float
    label: str
    stream: bool
    provider: str
    hold: AnswerHold | None
    may_refresh: bool


@dataclass(frozen=True)
class _Answered(Generic[T]):
    value: T


@dataclass(frozen=True)
class _Failed:
    error: GatewayError
    latency_ms: int
    delay_s: float | None = None
    """How long the upstream asked to be left alone (Retry-After), if it did."""


class _Unauthorized:
    """A 401 with credentials that may be refreshed (once per call)."""


_UNAUTHORIZED = _Unauthorized()


class UpstreamClient:
    """The HTTP clients of every provider of a worker process: one :class:`httpx.AsyncClient` per
    upstream host, made on first use; used from the process's event loop only."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        policy: RetryPolicy,
        max_connections: int = 200,
        concurrent_reads: int = 16,
        redact: Redactor | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES
        self.policy = policy
        self.read_timeout_s = read_timeout_s
        self.redact = redact or Redactor([])
        self.clock = clock
        # a call waiting for one of its host's connections is still within its read timeout
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, write=60.0, pool=read_timeout_s)
        self._max_connections = max_connections
        self._transport = transport
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}
        self._reads = asyncio.Semaphore(concurrent_reads)

    def _client_for(self, url: httpx.URL) -> httpx.AsyncClient:
        host = (url.scheme, url.host, url.port)
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False,
                transport=self._transport or ShardedTransport(max_connections=self._max_connections))
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def call(
        self,
        build: Callable[[], Awaitable[httpx.Request]],
        parse: Callable[[httpx.Response], T | Awaitable[T]],
        *,
        errors: UpstreamErrors,
        on_unauthorized: Callable[[], Awaitable[None]] | None = None,
        label: str = "upstream",
        stream: bool = False,
        provider: str = "upstream",
    ) -> T:
        """Send ``await build()``, retrying per the policy, and return ``parse(response)``.

        ``errors`` reads a non-2xx answer (the adapter knows its upstream's error body); ``parse``
        may itself raise a retryable UpstreamError (no image, broken body). ``on_unauthorized``
        refreshes credentials once on a 401 (Vertex OAuth tokens). Every error raised is the one
        built for the last attempt, never an altered one. With ``stream``, ``parse`` reads the
        answer as it arrives (a coroutine over ``response.aiter_lines()``); a stream broken off is
        retried like a failed connection. Each attempt is counted and timed under ``provider``
        (``imagegate_upstream_calls_total``, ``imagegate_upstream_seconds``).
        """
        policy, clock = self.policy, self.clock
        hold = _hold.get()
        deadline = clock.monotonic() + policy.budget_s
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            request = await build()
            limit_s = max(0.0, deadline - clock.monotonic())
            if not stream:
                limit_s = min(limit_s, self.read_timeout_s)
            outcome = await self._attempt(request, parse, errors, _Try(
                attempt=attempt, limit_s=limit_s, label=label, stream=stream, provider=provider, hold=hold,
                may_refresh=on_unauthorized is not None and not refreshed))
            if isinstance(outcome, _Answered):
                return outcome.value
            if outcome is _UNAUTHORIZED:
                assert on_unauthorized is not None
                refreshed = True
                await on_unauthorized()
                attempt -= 1  # the credentials' fault, not the upstream's: not counted against it
                continue
            assert isinstance(outcome, _Failed)
            if hold is not None:
                hold.give_back()  # this try's answer is dropped: another is awaited
            error = outcome.error
            log.info("%s attempt %d failed: %s", label, attempt, error.code,
                     extra={"upstream_status": getattr(error, "upstream_status", None),
                            "latency_ms": outcome.latency_ms})
            if attempt >= policy.max_attempts:
                raise error
            wait = outcome.delay_s if outcome.delay_s is not None else policy.backoff(attempt)
            if clock.monotonic() + wait > deadline:
                raise error
            await clock.sleep(wait)

    async def _attempt(self, request: httpx.Request, parse: Callable[[httpx.Response], T | Awaitable[T]],
                       errors: UpstreamErrors, how: _Try) -> _Answered[T] | _Failed | _Unauthorized:
        """One try, sent, read and parsed within ``how.limit_s`` as a whole (an upstream that
        trickles its bytes, each read inside the read timeout, would otherwise hold the call for
        ever). Raises the errors not worth another try."""
        sent = time.perf_counter()
        latency_ms: int | None = None
        try:
            async with asyncio.timeout(how.limit_s) as limit:
                try:
                    response = await self._client_for(request.url).send(request, stream=True)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    status = "timeout" if isinstance(exc, httpx.TimeoutException) else "error"
                    return _Failed(self._transport_error(exc, how.label),
                                   _count_call(how.provider, status, how.attempt, sent))
                latency_ms = _count_call(how.provider, str(response.status_code), how.attempt, sent)
                try:
                    return await self._answer(response, parse, errors, how, limit, latency_ms)
                finally:
                    await response.aclose()
                    _unbind(response)
        except TimeoutError:
            if not limit.expired():
                raise
            if latency_ms is None:
                latency_ms = _count_call(how.provider, "timeout", how.attempt, sent)
            # worded as httpx's read timeout is, which a whole answer's limit may beat by a hair
            within = f"within {round(how.limit_s, 1):g} s."
            return _Failed(UpstreamTimeoutError(f"The {how.label} did not finish its streamed answer {within}"
                                                if how.stream else f"The {how.label} did not answer {within}",
                                                retryable=True), latency_ms)

    async def _answer(self, response: httpx.Response, parse: Callable[[httpx.Response], T | Awaitable[T]],
                      errors: UpstreamErrors, how: _Try, limit: asyncio.Timeout,
                      latency_ms: int) -> _Answered[T] | _Failed | _Unauthorized:
        """What one answer comes to: its parse, or the error it says (and whether to try again)."""
        try:
            await self._read(response, how, limit)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            return _Failed(self._transport_error(exc, how.label), latency_ms)
        if response.is_success:
            log.info("%s answered in %d ms", how.label, latency_ms,
                     extra={"upstream_status": response.status_code, "latency_ms": latency_ms})
            try:
                parsed = parse(response)
                return _Answered(await parsed if inspect.isawaitable(parsed) else parsed)
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                return _Failed(exc, latency_ms)
            except (httpx.TimeoutException, httpx.TransportError) as exc:  # a stream broken off
                return _Failed(self._transport_error(exc, how.label), latency_ms)
        if response.status_code == 401 and how.may_refresh:
            return _UNAUTHORIZED
        decision = retry_decision(response, errors.retry_hint(response), now=self.clock.now())
        error = errors.parse_error(response, retryable=decision.retry, redact=self.redact)
        if not decision.retry:
            raise error
        return _Failed(error, latency_ms, decision.delay_s)

    async def _read(self, response: httpx.Response, how: _Try, limit: asyncio.Timeout) -> None:
        """Read a whole answer into memory, once one of the reads at once is free (the wait for it
        is not timed); a successful stream is left to its parser."""
        if how.stream and response.is_success:
            return
        if how.hold is not None and response.is_success:
            # the place is kept until the attempt's images are recorded
            await _not_timed(limit, self._reads, how.hold.take(self._reads))
            await response.aread()
            return
        await _not_timed(limit, self._reads, self._reads.acquire())
        try:
            await response.aread()
        finally:
            self._reads.release()

    def _transport_error(self, exc: httpx.TimeoutException | httpx.TransportError, label: str) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeoutError(f"The {label} did not answer within {self.read_timeout_s:g} s.",
                                        retryable=True)
        return UpstreamError(f"Could not reach the {label}: {type(exc).__name__}.", retryable=True,
                             code="upstream_unreachable")


async def _not_timed(limit: asyncio.Timeout, places: asyncio.Semaphore, waiting: Awaitable[object]) -> None:
    """Await ``waiting`` (a place among ``places``, the answers read at once) with ``limit``
    stopped: the time an answer waits in its socket for the worker is not the upstream's."""
    loop = asyncio.get_running_loop()
    when = limit.when()
    if when is None or not places.locked():  # a place is free: no wait to leave out
        await waiting
        return
    left = when - loop.time()
    limit.reschedule(None)
    try:
        await waiting
    finally:
        limit.reschedule(loop.time() + left)
