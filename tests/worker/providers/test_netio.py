"""worker.providers.netio under httpcore's pool against real sockets (plain TCP and TLS): answers
arrive whole, a connection takes in no more than the headers until the body is read, connections
are kept alive and replaced when the server closes them, timeouts and refusals are httpcore's."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.providers.netio import HEAD_BYTES, AnswerBackend, AnswerStream

pytestmark = pytest.mark.anyio
BODY = bytes(range(256)) * 8192  # 2 MiB


@pytest.fixture(params=[("asyncio", {"use_uvloop": True}), ("asyncio", {"use_uvloop": False})],
                ids=["uvloop", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """The worker's loop (uvloop) and asyncio's own, whose transports differ."""
    return request.param  # type: ignore[no-any-return]


class Server:
    """HTTP/1.1 on 127.0.0.1: answers each request with ``body`` after ``delay`` seconds, keeps
    the connection alive unless ``close_after_answer``."""

    def __init__(self, body: bytes = BODY, *, delay: float = 0.0, close_after_answer: bool = False,
                 extra_header: bytes = b"") -> None:
        self.body, self.delay, self.close_after_answer = body, delay, close_after_answer
        self.extra_header = extra_header
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n%s"
                             b"Content-Length: %d\r\n\r\n" % (self.extra_header, len(self.body)))
                writer.write(self.body)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=tls)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def pool() -> AsyncIterator[httpcore.AsyncConnectionPool]:
    async with httpcore.AsyncConnectionPool(network_backend=AnswerBackend(), max_connections=4) as made:
        yield made


async def _get(pool: httpcore.AsyncConnectionPool, url: str) -> bytes:
    response = await pool.request("POST", url, content=b'{"prompt": "a fox"}')
    assert response.status == 200
    return response.content


async def test_an_answer_arrives_whole_and_the_connection_is_kept_alive(
        pool: httpcore.AsyncConnectionPool) -> None:
    server = Server()
    port = await server.start()
    try:
        for _ in range(3):
            assert await _get(pool, f"http://127.0.0.1:{port}/v1") == BODY
        assert server.connections == 1
    finally:
        await server.stop()


async def test_until_its_body_is_read_an_answer_stays_in_the_socket(pool: httpcore.AsyncConnectionPool) -> None:
    server = Server()
    port = await server.start()
    try:
        async with pool.stream("POST", f"http://127.0.0.1:{port}/v1", content=b"{}") as response:
            stream = response.extensions["network_stream"]
            assert isinstance(stream, AnswerStream)
            await asyncio.sleep(0.2)  # the whole answer has reached the socket by now
            assert stream.received <= HEAD_BYTES
            body = b"".join([chunk async for chunk in response.aiter_stream()])
        assert body == BODY and stream.received > len(BODY)
    finally:
        await server.stop()


async def test_a_head_longer_than_one_read_is_read_in_small_pieces_to_its_end(
        pool: httpcore.AsyncConnectionPool) -> None:
    padding = b"X-Padding: " + b"p" * (2 * HEAD_BYTES + 100) + b"\r\n"  # the blank line falls in a third read
    server = Server(extra_header=padding)
    port = await server.start()
    try:
        async with pool.stream("POST", f"http://127.0.0.1:{port}/v1", content=b"{}") as response:
            stream = response.extensions["network_stream"]
            assert isinstance(stream, AnswerStream)
            await asyncio.sleep(0.2)
            assert len(padding) < stream.received <= 3 * HEAD_BYTES
            body = b"".join([chunk async for chunk in response.aiter_stream()])
        assert body == BODY
        assert await _get(pool, f"http://127.0.0.1:{port}/v1") == BODY  # the next answer's head: small again
    finally:
        await server.stop()


async def test_a_connection_the_server_closed_is_replaced(pool: httpcore.AsyncConnectionPool) -> None:
    server = Server(b"small", close_after_answer=True)
    port = await server.start()
    try:
        for _ in range(3):
            assert await _get(pool, f"http://127.0.0.1:{port}/v1") == b"small"
            await asyncio.sleep(0.05)
        assert server.connections == 3
    finally:
        await server.stop()


async def test_a_read_timeout_and_a_refused_connection_are_httpcores_errors(
        pool: httpcore.AsyncConnectionPool) -> None:
    server = Server(delay=5)
    port = await server.start()
    try:
        with pytest.raises(httpcore.ReadTimeout):
            await pool.request("POST", f"http://127.0.0.1:{port}/v1", content=b"{}",
                               extensions={"timeout": {"read": 0.2}})
    finally:
        await server.stop()
    await asyncio.sleep(0.05)
    with pytest.raises(httpcore.ConnectError):
        await pool.request("POST", f"http://127.0.0.1:{port}/v1", content=b"{}")


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_over_tls_the_answer_arrives_whole_and_an_untrusted_server_is_refused(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    server = Server()
    port = await server.start(tls=served)
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpcore.AsyncConnectionPool(network_backend=AnswerBackend(), ssl_context=trusting) as pool:
            async with pool.stream("POST", f"https://localhost:{port}/v1", content=b"{}") as response:
                stream = response.extensions["network_stream"]
                assert isinstance(stream, AnswerStream) and stream.get_extra_info("ssl_object") is not None
                assert stream.received <= HEAD_BYTES
                body = b"".join([chunk async for chunk in response.aiter_stream()])
            assert body == BODY
            assert await _get(pool, f"https://localhost:{port}/v1") == BODY
            assert server.connections == 1
        async with httpcore.AsyncConnectionPool(network_backend=AnswerBackend(),
                                                ssl_context=ssl.create_default_context()) as pool:
            with pytest.raises(httpcore.ConnectError):
                await pool.request("POST", f"https://localhost:{port}/v1", content=b"{}")
    finally:
        await server.stop()


async def test_after_the_tls_handshake_nothing_is_taken_in_before_a_read(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def push(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BODY)  # at once, unasked
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    server = await asyncio.start_server(push, "127.0.0.1", 0, ssl=served)
    port = int(server.sockets[0].getsockname()[1])
    try:
        plain = await AnswerBackend().connect_tcp("127.0.0.1", port, timeout=5)
        stream = await plain.start_tls(ssl.create_default_context(cafile=str(cert)), server_hostname="localhost",
                                       timeout=5)
        assert isinstance(stream, AnswerStream)
        await asyncio.sleep(0.3)  # the server's two megabytes have reached the socket
        assert stream.received <= HEAD_BYTES
        first = await stream.read(1 << 20, timeout=5)
        assert first and stream.received <= HEAD_BYTES
        await stream.aclose()
    finally:
        server.close()
