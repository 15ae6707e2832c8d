"""The sockets under the worker's upstream connections: httpcore's network backend on the event
loop's own transports, reading an answer into memory only once the worker is ready for it.

httpcore's default backend (anyio's streams) lets the event loop read whatever a socket holds as
soon as a read is asked for; uvloop then reads until the socket is empty. So the moment an
upstream answers, its whole 1.4 MB body moves from the kernel into the process while httpcore
was only asking for the status line and headers, before :class:`worker.providers.http.UpstreamClient`
could decide whether it has room for another answer (``IMAGEGATE_UPSTREAM_CONCURRENT_READS``).
A thousand answers arriving together were then a thousand bodies in the worker's memory at once.

Here each connection receives into a buffer of its own through :class:`asyncio.BufferedProtocol`:
:data:`HEAD_BYTES` at a time until the blank line that ends the answer's head, so the rest of the
answer waits in the socket's buffer (kernel memory, bounded by TCP's flow control); httpcore hands
the answer to the client once its head is in, so the next read is the client's read of the body,
made after it took its place, and takes as much as httpcore asks for
(:data:`worker.providers.http.READ_BYTES`). Each request sent starts a new head. Reading is on
only while a read waits, as with anyio's streams, and a full buffer stops it. The buffer is given
up each time a read empties it, so idle keep-alive connections hold none.

httpcore's own interface (``httpcore.AsyncNetworkBackend``, ``AsyncNetworkStream``) and its
exceptions are kept exactly: timeouts raise ``ConnectTimeout`` / ``ReadTimeout`` /
``WriteTimeout``, a broken connection ``ConnectError`` / ``ReadError`` / ``WriteError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import typing
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable

HEAD_BYTES = 16 * 1024
"""How much of an answer a connection takes in before the client reads its body: its status
line and headers (an upstream's fit in a few hundred bytes), and no more than this of the body."""

WRITE_BUFFER_HIGH = 256 * 1024
"""A write waits once this much of a request is queued in the transport (a request with input
images runs to megabytes)."""


@contextlib.contextmanager
def _mapped(errors: dict[type[BaseException], type[Exception]]) -> Iterator[None]:
    try:
        yield
    except tuple(errors) as exc:
        for kind, raised in errors.items():
            if isinstance(exc, kind):
                raise raised(str(exc) or type(exc).__name__) from exc
        raise  # pragma: no cover - the tuple above holds exactly the dictionary's keys


class _Receiver(asyncio.BufferedProtocol):
    """One connection's receiving side: the bytes the transport delivered and not yet read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.limit: int | None = HEAD_BYTES
        """The most the buffer takes in: HEAD_BYTES until the answer's head has been read, then
        None (as much as the read in progress asks for)."""
        self._head_tail = b""
        """The last bytes of the head read so far (its end, a blank line, may straddle reads)."""
        self._capacity = HEAD_BYTES
        self._buffer: bytearray | None = None
        self._length = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reading = True
        self.eof = False
        self.error: BaseException | None = None
        self.received = 0
        """Bytes taken in from the connection since it opened."""

    # -- asyncio's side ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it
        self.transport = typing.cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.pause()

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = bytearray(self._capacity)
        elif self._length >= len(buffer):  # asked again before the pause took (TLS records)
            buffer.extend(bytes(HEAD_BYTES))
        return memoryview(buffer)[self._length:]

    def buffer_updated(self, nbytes: int) -> None:
        self._length += nbytes
        self.received += nbytes
        if self._buffer is not None and self._length >= len(self._buffer):
            self.pause()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- the stream's side --------------------------------------------------------------------

    def adopt(self, transport: asyncio.Transport) -> None:
        """Receive from ``transport`` from now on (TLS over the connection: asyncio's start_tls
        makes it reading, and does not call connection_made), paused until a read waits."""
        self.transport = transport
        self._reading = True
        self.pause()

    def pause(self) -> None:
        if self._reading and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._reading = False

    def resume(self) -> None:
        if not self._reading and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._reading = True

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def buffered(self) -> int:
        return self._length

    async def wait_readable(self, max_bytes: int) -> None:
        """Until some bytes are buffered (at most ``max_bytes``, or the limit), or the
        connection ended."""
        capacity = max_bytes if self.limit is None else min(self.limit, max_bytes)
        while not self._length and not self.eof:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if self._capacity != capacity:
                self._capacity, self._buffer = capacity, None  # made to size on the next get_buffer
            self.resume()
            try:
                await waiter
            finally:
                self.pause()

    def expect_head(self) -> None:
        """A request was sent: its answer's head comes next, read in pieces of HEAD_BYTES."""
        self.limit, self._head_tail = HEAD_BYTES, b""

    def _note_head(self, data: bytes | bytearray) -> None:
        """Past the blank line that ends the head, reads may be large: the next one is the
        client's read of the body (httpcore returns the answer once its head is in)."""
        seen = self._head_tail + data
        if b"\r\n\r\n" in seen:
            self.limit, self._head_tail = None, b""
        else:
            self._head_tail = bytes(seen[-3:])

    def take(self, max_bytes: int) -> bytes | bytearray:
        data = self._take(max_bytes)
        if self.limit is not None and data:
            self._note_head(data)
        return data

    def _take(self, max_bytes: int) -> bytes | bytearray:
        """Up to ``max_bytes`` of what is buffered. All of it is the buffer itself, handed over
        without a copy (h11, which reads it, takes any bytes-like object): the connection then
        holds no buffer until it receives again."""
        buffer = self._buffer
        length = self._length
        if buffer is None or not length:
            return b""
        if length <= max_bytes:
            self._buffer, self._length = None, 0
            del buffer[length:]
            return buffer
        data = bytes(memoryview(buffer)[:max_bytes])
        buffer[:length - max_bytes] = buffer[max_bytes:length]
        self._length = length - max_bytes
        return data

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await self._writable


class AnswerStream(httpcore.AsyncNetworkStream):
    """httpcore's view of one connection (plain TCP, or TLS over it)."""

    def __init__(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        self._transport = transport
        self._receiver = receiver

    @property
    def received(self) -> int:
        """Bytes taken in from the connection since it opened (after TLS: decrypted bytes)."""
        return self._receiver.received

    async def read(self, max_bytes: int,  # type: ignore[override]  # a bytearray too: h11 takes any bytes-like
                   timeout: float | None = None) -> bytes | bytearray:
        receiver = self._receiver
        with _mapped({TimeoutError: httpcore.ReadTimeout, OSError: httpcore.ReadError}):
            if not receiver.buffered and not receiver.eof:
                async with asyncio.timeout(timeout):
                    await receiver.wait_readable(max_bytes)
            if receiver.buffered:
                return receiver.take(max_bytes)
            if receiver.error is not None:
                raise httpcore.ReadError(f"the connection broke: {receiver.error}")
            return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        receiver = self._receiver
        receiver.expect_head()
        with _mapped({TimeoutError: httpcore.WriteTimeout, OSError: httpcore.WriteError}):
            if self._transport.is_closing():
                raise httpcore.WriteError("the connection is closed")
            self._transport.write(buffer)
            async with asyncio.timeout(timeout):
                await receiver.wait_writable()
            if receiver.error is not None:
                raise httpcore.WriteError(f"the connection broke: {receiver.error}")

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped({TimeoutError: httpcore.ConnectTimeout, OSError: httpcore.ConnectError}):
            try:
                async with asyncio.timeout(timeout):
                    transport = await loop.start_tls(self._transport, self._receiver, ssl_context,
                                                     server_hostname=server_hostname)
            except BaseException:
                self._transport.close()
                raise
        if transport is None:  # pragma: no cover - only for a transport already closing
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._receiver.adopt(transport)
        return AnswerStream(transport, self._receiver)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # an idle connection that is readable was closed by the server (or sent junk)
            receiver = self._receiver
            if receiver.buffered or receiver.eof or self._transport.is_closing():
                return True
            sock = self._transport.get_extra_info("socket")
            return sock is not None and is_socket_readable(sock)
        return None


class AnswerBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend of :class:`AnswerStream` connections."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped({TimeoutError: httpcore.ConnectTimeout, OSError: httpcore.ConnectError}):
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_connection(
                    _Receiver, host, port, local_addr=(local_address, 0) if local_address else None)
        _set_options(transport, socket_options)
        return AnswerStream(transport, receiver)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped({TimeoutError: httpcore.ConnectTimeout, OSError: httpcore.ConnectError}):
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_unix_connection(_Receiver, path)
        _set_options(transport, socket_options)
        return AnswerStream(transport, receiver)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _set_options(transport: asyncio.Transport, options: Iterable[Any] | None) -> None:
    sock: socket.socket | None = transport.get_extra_info("socket")
    for option in options or ():
        if sock is not None:
            sock.setsockopt(*option)
