"""ShardedTransport: a host's connections in pools of at most 32, against a real HTTP server on
a socket. The host's limit holds in total, requests spread over the pools, and connections are
kept and used again as with one pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from core.errors import GatewayError, UpstreamError
from worker.providers.http import (
    CONNECTIONS_PER_POOL,
    NO_HINT,
    Redact,
    RetryHint,
    RetryPolicy,
    ShardedTransport,
    UpstreamClient,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class HeldServer:
    """HTTP/1.1 with keep-alive; each answer waits until ``release`` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    waiting: int = 0
    most_waiting: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.waiting += 1
                self.most_waiting = max(self.most_waiting, self.waiting)
                await self.release.wait()
                self.waiting -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[HeldServer]:
    held = HeldServer()
    listening = await asyncio.start_server(held.handle, "127.0.0.1", 0)
    held.port = listening.sockets[0].getsockname()[1]
    try:
        yield held
    finally:
        listening.close()


async def _wait_for(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_hosts_limit_holds_over_all_its_pools_of_32(server: HeldServer) -> None:
    transport = ShardedTransport(max_connections=100)
    assert len(transport._pools) == 4  # 25 connections each
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10, pool=10)) as client:
        url = f"http://127.0.0.1:{server.port}/"
        calls = [asyncio.create_task(client.get(url)) for _ in range(110)]
        await _wait_for(lambda: server.waiting == 100, "100 requests held by the server")
        await asyncio.sleep(0.1)
        assert server.waiting == 100 and server.connections == 100, "10 wait for a connection"
        sizes = [len(pool._pool.connections) for pool in transport._pools]
        assert sizes == [25, 25, 25, 25] and max(sizes) <= CONNECTIONS_PER_POOL
        server.release.set()
        assert [r.text for r in await asyncio.gather(*calls)] == ["ok"] * 110
        assert server.most_waiting == 100
        assert transport._open == [0, 0, 0, 0], "each answer closed gave its pool's place back"

        # the connections stay open and serve the next requests: none is opened again
        again = await asyncio.gather(*(client.get(url) for _ in range(100)))
        assert all(r.status_code == 200 for r in again) and server.connections == 100


async def test_a_small_limit_is_one_pool_and_a_failed_request_gives_its_place_back(server: HeldServer) -> None:
    transport = ShardedTransport(max_connections=CONNECTIONS_PER_POOL)
    assert len(transport._pools) == 1
    server.release.set()
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:1/")  # nothing listens there
        assert transport._open == [0]
        assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
        assert transport._open == [0]


class _NoErrors:
    def retry_hint(self, response: httpx.Response) -> RetryHint:
        return NO_HINT

    def parse_error(self, response: httpx.Response, *, retryable: bool, redact: Redact) -> GatewayError:
        return UpstreamError(f"HTTP {response.status_code}", retryable=retryable)


async def test_the_upstream_client_sends_a_hosts_calls_over_pools_of_32(server: HeldServer) -> None:
    upstream = UpstreamClient(connect_timeout_s=5, read_timeout_s=10, policy=RetryPolicy(), max_connections=64)
    url = f"http://127.0.0.1:{server.port}/v1/images/generations"

    async def build() -> httpx.Request:
        return httpx.Request("POST", url, json={"prompt": "a kite"})

    try:
        calls = [asyncio.create_task(upstream.call(build, lambda r: r.text, errors=_NoErrors())) for _ in range(64)]
        await _wait_for(lambda: server.waiting == 64, "64 calls held by the server")
        server.release.set()
        assert await asyncio.gather(*calls) == ["ok"] * 64
        (client,) = upstream._clients.values()
        transport = client._transport
        assert isinstance(transport, ShardedTransport) and len(transport._pools) == 2
        assert [len(pool._pool.connections) for pool in transport._pools] == [32, 32]
    finally:
        await upstream.aclose()
