"""The image fetcher against a real local HTTP server: what it refuses (SSRF) and what it fetches."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from api.fetch import Fetched, FetchPolicy, fetch_image, parse_target
from core.errors import InvalidRequestError
from core.ssrf import address_is_public


def _png(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    seen_hosts: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        _Handler.seen_hosts.append(self.headers.get("Host", ""))
        routes = {
            "/ok.png": (200, {"Content-Type": "image/png"}, PNG),
            "/no-type.png": (200, {}, PNG),
            "/page.html": (200, {"Content-Type": "text/html"}, b"<html></html>"),
            "/lie.png": (200, {"Content-Type": "image/png"}, b"GIF87a not really"),
            "/big.png": (200, {"Content-Type": "image/png"}, PNG + b"\0" * 4096),
            "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/to-private": (302, {"Location": "http://10.0.0.1/x.png"}, b""),
            "/to-ok": (301, {"Location": "/ok.png"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/missing": (404, {}, b"nope"),
            "/to-bad-port": (302, {"Location": "http://example.com:99999/x.png"}, b""),
            "/to-bad-ipv6": (302, {"Location": "http://[::1/x.png"}, b""),
            "/to-bad-host": (302, {"Location": "http://a..b/x.png"}, b""),
        }
        if self.path == "/slow.png":
            time.sleep(2)
        status, headers, body = routes.get(self.path, (200, {"Content-Type": "image/png"}, PNG))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.path == "/odd-length.png":  # digits str.isdigit() accepts and int() refuses
            self.send_header("Content-Length", "\u00b2")
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


ALLOW_LOCAL = FetchPolicy(allow=("127.0.0.1",), timeout_s=5)


def fetch(url: str, policy: FetchPolicy = ALLOW_LOCAL) -> Fetched:
    return asyncio.run(fetch_image(url, param="images[0].image_url", policy=policy))


def refused(url: str, policy: FetchPolicy = ALLOW_LOCAL) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        fetch(url, policy)
    assert caught.value.param == "images[0].image_url" and caught.value.code == "invalid_image_url"
    return caught.value.message


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "2002:7f00:1::", "2001:db8::1", "64:ff9b::a00:1",
])
def test_internal_and_special_addresses_are_refused(address: str) -> None:
    assert not address_is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_is_public(ipaddress.ip_address(address))


def test_loopback_is_refused_without_the_allow_list(server: str) -> None:
    assert "not a public address" in refused(f"http://{server}/ok.png", FetchPolicy(timeout_s=5))


def test_a_name_that_resolves_to_loopback_is_refused(server: str) -> None:
    port = server.split(":")[1]
    assert "'localhost' is not a public address" in refused(f"http://localhost:{port}/ok.png", FetchPolicy())


def test_an_allow_listed_host_is_fetched_and_checked(server: str) -> None:
    fetched = fetch(f"http://{server}/ok.png")
    assert fetched.data == PNG and (fetched.info.format, fetched.info.width, fetched.info.height) == ("png", 8, 6)


def test_the_connection_is_pinned_and_the_host_header_kept(server: str) -> None:
    port = server.split(":")[1]
    _Handler.seen_hosts.clear()
    fetch(f"http://localhost:{port}/ok.png", FetchPolicy(allow=("127.0.0.1", "::1"), timeout_s=5))
    assert _Handler.seen_hosts == [f"localhost:{port}"]


def test_every_redirect_is_checked_again(server: str) -> None:
    assert "169.254.169.254" in refused(f"http://{server}/to-metadata")
    assert "10.0.0.1" in refused(f"http://{server}/to-private")
    assert fetch(f"http://{server}/to-ok").data == PNG
    assert "redirects" in refused(f"http://{server}/loop")


@pytest.mark.parametrize(("path", "message"), [
    ("/page.html", "text/html, not an image"),
    ("/lie.png", "not a PNG, JPEG, WebP or GIF"),
    ("/missing", "HTTP 404"),
])
def test_what_is_not_an_image_is_refused(server: str, path: str, message: str) -> None:
    assert message in refused(f"http://{server}{path}")


def test_a_missing_content_type_is_judged_by_the_magic_bytes(server: str) -> None:
    assert fetch(f"http://{server}/no-type.png").data == PNG


def test_the_size_cap(server: str) -> None:
    policy = FetchPolicy(allow=("127.0.0.1",), max_bytes=len(PNG) + 100, timeout_s=5)
    assert "larger than" in refused(f"http://{server}/big.png", policy)


def test_the_timeout(server: str) -> None:
    assert "did not answer within" in refused(f"http://{server}/slow.png", FetchPolicy(allow=("127.0.0.1",),
                                                                                       timeout_s=0.5))


@pytest.mark.parametrize("url", ["ftp://example.com/x.png", "file:///etc/passwd", "gopher://x/", "http:///x.png",
                                 "http://user:pass@example.com/x.png"])
def test_only_plain_http_and_https_urls(url: str) -> None:
    refused(url)


@pytest.mark.parametrize(("url", "message"), [
    ("http://example.com:99999/x.png", "port is not a number from 0 to 65535"),
    ("http://[::1/x.png", "not a valid URL"),
    ("http://[not-an-address]/x.png", "not a valid URL"),
    ("http://a..b/x.png", "not a valid host name"),
    ("http://a\x00b/x.png", "not a valid host name"),
])
def test_a_url_that_cannot_be_parsed_is_refused_naming_the_field(url: str, message: str) -> None:
    assert message in refused(url)


@pytest.mark.parametrize("path", ["/to-bad-port", "/to-bad-ipv6", "/to-bad-host"])
def test_a_redirect_to_a_url_that_cannot_be_parsed_is_refused(server: str, path: str) -> None:
    # httpx itself refuses some Locations (RemoteProtocolError), the fetcher's own check the rest
    assert "Could not fetch images[0].image_url" in refused(f"http://{server}{path}")


def test_a_content_length_that_is_not_ascii_digits_is_refused(server: str) -> None:
    refused(f"http://{server}/odd-length.png")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.text(), st.builds("{}://{}{}".format, st.sampled_from(["http", "https", "ftp", ""]),
                                      st.text(alphabet="0123456789abcdef.:[]@%/?#\\ \x00é", max_size=30),
                                      st.text(max_size=10))))
def test_parse_target_refuses_any_text_with_an_invalid_request_error(url: str) -> None:
    try:
        target = parse_target(url, param="images[0].image_url")
    except InvalidRequestError as error:
        assert error.param == "images[0].image_url"
        return
    assert target.host and 0 < target.port <= 65535
    target.pinned(ipaddress.ip_address("8.8.8.8"))
