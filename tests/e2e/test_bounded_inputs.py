"""Work is bounded before it is done: a request's image URLs are fetched only once the key, the
model's input limit, the request's caps, the budget and the rate limit have all said yes. A real
HTTP server records every fetch, in each dialect that takes image URLs."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.harness import Stack

pytestmark = pytest.mark.integration


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageServer:
    """Serves one PNG at every path and counts the fetches."""

    def __init__(self) -> None:
        png = _png()
        fetched: list[str] = []
        self.fetched = fetched

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fetched.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}.png"


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def gateway(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("embedded", IMAGEGATE_FETCH_ALLOW_HOSTS="127.0.0.1")


def _chat(urls: list[str]) -> tuple[str, dict[str, Any]]:
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return "/v1/chat/completions", {"model": "demo", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "combine these"}, *parts]}]}


def _anthropic(urls: list[str]) -> tuple[str, dict[str, Any]]:
    blocks = [{"type": "image", "source": {"type": "url", "url": u}} for u in urls]
    return "/v1/messages", {"model": "demo", "max_tokens": 1024, "messages": [
        {"role": "user", "content": [*blocks, {"type": "text", "text": "combine these"}]}]}


def _gemini(urls: list[str]) -> tuple[str, dict[str, Any]]:
    parts = [{"fileData": {"mimeType": "image/png", "fileUri": u}} for u in urls]
    return "/v1beta/models/demo:generateContent", {"contents": [
        {"role": "user", "parts": [{"text": "combine these"}, *parts]}]}


def _edits(urls: list[str]) -> tuple[str, dict[str, Any]]:
    return "/v1/images/edits", {"model": "demo", "prompt": "combine these",
                                "images": [{"image_url": u} for u in urls]}


DIALECTS = [_chat, _anthropic, _gemini, _edits]


def _post(stack: Stack, key: str, request: tuple[str, dict[str, Any]]) -> httpx.Response:
    path, body = request
    return httpx.post(stack.base_url + path, json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"})


@pytest.mark.parametrize("dialect", DIALECTS, ids=["chat", "anthropic", "gemini", "edits"])
def test_too_many_images_are_refused_before_any_fetch(gateway: Stack, images: ImageServer,
                                                       dialect: Callable[[list[str]], tuple[str, dict[str, Any]]]
                                                       ) -> None:
    key = gateway.create_key(f"many-{dialect.__name__}")
    before = len(images.fetched)
    response = _post(gateway, key, dialect([images.url(f"many-{i}") for i in range(40)]))
    assert response.status_code == 400, response.text
    assert len(images.fetched) == before  # not one of the 40 was fetched


@pytest.mark.parametrize("dialect", DIALECTS, ids=["chat", "anthropic", "gemini", "edits"])
def test_an_accepted_request_fetches_each_image_once(gateway: Stack, images: ImageServer,
                                                     dialect: Callable[[list[str]], tuple[str, dict[str, Any]]]
                                                     ) -> None:
    key = gateway.create_key(f"once-{dialect.__name__}")
    before = len(images.fetched)
    response = _post(gateway, key, dialect([images.url(f"once-{i}") for i in range(5)]))
    assert response.status_code == 200, response.text
    assert sorted(images.fetched[before:]) == sorted(f"/once-{i}.png" for i in range(5))


@pytest.mark.parametrize("dialect", DIALECTS, ids=["chat", "anthropic", "gemini", "edits"])
def test_a_signed_image_url_is_fetched_but_never_logged(gateway: Stack, images: ImageServer,
                                                        dialect: Callable[[list[str]], tuple[str, dict[str, Any]]]
                                                        ) -> None:
    """A presigned URL's query is a credential: the gateway fetches it, and no log line holds it
    (httpx logs every request's URL at INFO)."""
    key = gateway.create_key(f"signed-{dialect.__name__}")
    signature = f"{dialect.__name__[1:]}5f0c9e" * 8
    url = images.url(f"signed-{dialect.__name__}") + f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={signature}"
    response = _post(gateway, key, dialect([url]))
    assert response.status_code == 200, response.text
    assert any(signature in path for path in images.fetched)
    assert signature not in gateway.logs(tail=10**9)


@pytest.fixture(scope="module")
def priced(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    prices = tmp_path_factory.mktemp("prices") / "prices.toml"
    prices.write_text('[[models]]\nid = "demo-image"\nsource = "test"\neffective = 2026-11-01\n'
                      'per_image = { "*" = { "*" = "0.05" } }\n')
    return make_stack("embedded", IMAGEGATE_FETCH_ALLOW_HOSTS="127.0.0.1", IMAGEGATE_PRICES_FILE=str(prices))


@pytest.mark.parametrize("dialect", DIALECTS, ids=["chat", "anthropic", "gemini", "edits"])
def test_over_budget_and_rate_limited_fetch_nothing(priced: Stack, images: ImageServer,
                                                    dialect: Callable[[list[str]], tuple[str, dict[str, Any]]]) -> None:
    broke = priced.create_key(f"zero-{dialect.__name__}", budget_usd="0")
    before = len(images.fetched)
    refused = _post(priced, broke, dialect([images.url(f"zero-{i}") for i in range(5)]))
    assert refused.status_code in (402, 429), refused.text
    assert len(images.fetched) == before

    limited = priced.create_key(f"rpm-{dialect.__name__}", rpm=1)
    assert _post(priced, limited, dialect([images.url("rpm-first")])).status_code == 200
    fetched = len(images.fetched)
    again = _post(priced, limited, dialect([images.url(f"rpm-{i}") for i in range(3)]))
    assert again.status_code == 429, again.text
    assert len(images.fetched) == fetched


def test_the_model_input_limit_is_checked_before_any_fetch(make_stack: Callable[..., Stack],
                                                           images: ImageServer) -> None:
    stack = make_stack("embedded", IMAGEGATE_FETCH_ALLOW_HOSTS="127.0.0.1", IMAGEGATE_MAX_INPUT_IMAGES="40")
    key = stack.create_key("limit")
    before = len(images.fetched)
    response = _post(stack, key, _chat([images.url(f"limit-{i}") for i in range(20)]))  # the demo takes 16
    assert response.status_code == 400
    assert "at most 16 input images" in response.json()["error"]["message"]
    assert len(images.fetched) == before
