"""Bad input of every kind is a 4xx in the caller's own dialect, naming the field, and leaves
nothing behind: no job, no image, no ledger entry."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from tests.inproc.portal import SyncGateway
from tests.inproc.shapes import ANTHROPIC, GOOGLE, OPENAI, assert_dialect_error

AV = {"anthropic-version": "2023-06-01"}
MESSAGE = {"messages": [{"role": "user", "content": "a fox"}]}
GEMINI = "/v1beta/models/demo:generateContent"
CONTENTS = {"contents": [{"parts": [{"text": "a fox"}]}]}
PREDICT = "/v1beta/models/demo:predict"


class _Redirects(BaseHTTPRequestHandler):
    """Answers /to?<location> with a 302 to that location, verbatim."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.path.split("?", 1)[1])
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG_B64 = _png()

# (id, method, path, request kwargs, status, dialect, the field named)
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str | None]] = [
    ("signature-not-ascii", "GET", "/v1/files/img_nothing?expires=9999999999&signature=%C3%A9", {}, 404, OPENAI,
     "file_id"),
    ("fetch-port-out-of-range", "POST", "/v1/images/edits",
     {"json": {"prompt": "x", "images": [{"image_url": "http://example.com:99999/a.png"}]}}, 400, OPENAI,
     "images[0]"),
    ("fetch-broken-ipv6", "POST", "/v1/images/edits",
     {"json": {"prompt": "x", "images": [{"image_url": "http://[::1/a.png"}]}}, 400, OPENAI, "images[0]"),
    ("jobs-background", "POST", "/v1/jobs", {"json": {"prompt": "x", "background": "purple"}}, 400, OPENAI,
     "background"),
    ("anthropic-models-limit", "GET", "/v1/models?limit=%C2%B2", {"headers": AV}, 400, ANTHROPIC, "limit"),
    ("gemini-models-page-token", "GET", "/v1beta/models?pageToken=%C2%B2", {}, 400, GOOGLE, "pageToken"),
    ("gemini-models-page-token-long", "GET", "/v1beta/models?pageToken=" + "9" * 5000, {}, 400, GOOGLE, "pageToken"),
    ("usage-until-9999", "GET", "/v1/usage?until=9999-12-31", {}, 400, OPENAI, "until"),
    ("usage-since-before-year-1", "GET", "/v1/usage?since=0001-01-01T00:00:00%2B01:00", {}, 400, OPENAI, "since"),
    ("admin-usage-until-9999", "GET", "/admin/usage?until=9999-12-31", {"admin": True}, 400, OPENAI, "until"),
    ("admin-budget-huge", "POST", "/admin/keys", {"admin": True, "json": {"name": "huge", "budget_usd": "1e30"}},
     400, OPENAI, "budget_usd"),
    ("admin-rpm-float", "POST", "/admin/keys", {"admin": True, "json": {"name": "fast", "rpm": 1e20}}, 400, OPENAI,
     "rpm"),
    ("images-n-string", "POST", "/v1/images/generations", {"json": {"prompt": "x", "n": "3"}}, 400, OPENAI, "n"),
    ("images-n-true", "POST", "/v1/images/generations", {"json": {"prompt": "x", "n": True}}, 400, OPENAI, "n"),
    ("images-compression-string", "POST", "/v1/images/generations",
     {"json": {"prompt": "x", "output_compression": "50"}}, 400, OPENAI, "output_compression"),
    ("images-partial-true", "POST", "/v1/images/generations", {"json": {"prompt": "x", "partial_images": True}},
     400, OPENAI, "partial_images"),
    ("images-stream-string", "POST", "/v1/images/generations", {"json": {"prompt": "x", "stream": "false"}},
     400, OPENAI, "stream"),
    ("edits-json-n-string", "POST", "/v1/images/edits",
     {"json": {"prompt": "x", "n": "2", "images": [{"image_url": f"data:image/png;base64,{PNG_B64}"}]}},
     400, OPENAI, "n"),
    ("jobs-n-string", "POST", "/v1/jobs", {"json": {"prompt": "x", "n": "3"}}, 400, OPENAI, "n"),
    ("chat-n-string", "POST", "/v1/chat/completions", {"json": {**MESSAGE, "n": "2"}}, 400, OPENAI, "n"),
    ("chat-part-type-not-a-string", "POST", "/v1/chat/completions",
     {"json": {"messages": [{"role": "user", "content": [{"type": ["text"], "text": "x"}]}]}}, 400, OPENAI,
     "messages[0].content"),
    ("chat-image-config-string", "POST", "/v1/chat/completions", {"json": {**MESSAGE, "image_config": "x"}},
     400, OPENAI, "image_config"),
    ("anthropic-n-true", "POST", "/v1/messages", {"json": {**MESSAGE, "n": True}}, 400, ANTHROPIC, "n"),
    ("anthropic-image-config-string", "POST", "/v1/messages", {"json": {**MESSAGE, "image_config": "x"}},
     400, ANTHROPIC, "image_config"),
    ("gemini-candidate-count-string", "POST", GEMINI,
     {"json": {**CONTENTS, "generationConfig": {"candidateCount": "2"}}}, 400, GOOGLE, "candidateCount"),
    ("predict-sample-count-true", "POST", PREDICT,
     {"json": {"instances": [{"prompt": "x"}], "parameters": {"sampleCount": True}}}, 400, GOOGLE, "sampleCount"),
    # characters a database refuses (PostgreSQL: NUL), in any field, header or URL
    ("nul-prompt", "POST", "/v1/images/generations", {"json": {"prompt": "a\u0000b"}}, 400, OPENAI, "prompt"),
    ("nul-model", "POST", "/v1/images/generations", {"json": {"prompt": "x", "model": "demo\u0000"}}, 400, OPENAI,
     "model"),
    ("nul-style", "POST", "/v1/images/generations", {"json": {"prompt": "x", "style": "\u0000"}}, 400, OPENAI,
     "style"),
    ("nul-idempotency-key", "POST", "/v1/images/generations",
     {"json": {"prompt": "x"}, "headers": {"Idempotency-Key": "a\u0000b"}}, 400, OPENAI, "Idempotency-Key"),
    ("nul-chat-text", "POST", "/v1/chat/completions",
     {"json": {"messages": [{"role": "user", "content": [{"type": "text", "text": "\u0000"}]}]}}, 400, OPENAI,
     "messages[0].content[0].text"),
    ("nul-anthropic-system", "POST", "/v1/messages", {"json": {**MESSAGE, "system": "be\u0000"}}, 400, ANTHROPIC,
     "system[0].text"),
    ("nul-generate-system", "POST", "/generate", {"json": {"prompt": "x", "system": "\u0000"}}, 400, ANTHROPIC,
     "system"),
    ("nul-gemini-text", "POST", GEMINI, {"json": {"contents": [{"parts": [{"text": "\u0000"}]}]}}, 400, GOOGLE,
     "contents[0].parts[0].text"),
    ("nul-jobs-prompt", "POST", "/v1/jobs", {"json": {"prompt": "\u0000"}}, 400, OPENAI, "prompt"),
    ("nul-key-name", "POST", "/admin/keys", {"admin": True, "json": {"name": "a\u0000"}}, 400, OPENAI, "name"),
    ("nul-job-id", "GET", "/v1/jobs/job_%00", {}, 400, OPENAI, None),
    ("nul-status-filter", "GET", "/v1/jobs?status=%00", {}, 400, OPENAI, "status"),
    ("nul-gemini-model", "POST", "/v1beta/models/de%00mo:generateContent", {"json": CONTENTS}, 400, GOOGLE, None),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "dialect", "param"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_in_the_dialect_naming_the_field_and_leaves_nothing(
        sync_gateway: SyncGateway, method: str, path: str, kwargs: dict[str, Any], status: int, dialect: str,
        param: str | None) -> None:
    kwargs = dict(kwargs)
    gateway = sync_gateway
    headers = {**(gateway.admin if kwargs.pop("admin", False) else gateway.auth), **kwargs.pop("headers", {})}
    before = sync_gateway.counts()
    response = sync_gateway.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert_dialect_error(dialect, response.status_code, response.text, param=param)
    assert sync_gateway.counts() == before


@pytest.mark.parametrize("location", ["http://example.com:99999/x.png", "http://[::1/x.png", "http://a..b/x.png"])
def test_a_redirect_to_a_url_that_cannot_be_parsed_is_a_400(sync_gateway: SyncGateway, redirector: str,
                                                             location: str) -> None:
    before = sync_gateway.counts()
    response = sync_gateway.post("/v1/images/edits", headers=sync_gateway.auth,
                            json={"prompt": "x", "images": [{"image_url": f"{redirector}/to?{location}"}]})
    assert_dialect_error(OPENAI, response.status_code, response.text, param="images[0]")
    assert sync_gateway.counts() == before


def test_a_signed_url_with_a_signature_that_is_not_ascii_is_refused_without_a_key(
        sync_gateway: SyncGateway) -> None:
    response = sync_gateway.get("/v1/files/img_nothing?expires=9999999999&signature=%C3%A9")
    assert_dialect_error(OPENAI, response.status_code, response.text)
    assert response.status_code == 401


def test_multipart_fields_are_text_and_their_numbers_are_parsed(sync_gateway: SyncGateway) -> None:
    response = sync_gateway.post("/v1/images/edits", headers=sync_gateway.auth, data={"prompt": "an edit", "n": "2"},
                            files={"image": ("in.png", base64.b64decode(PNG_B64), "image/png")})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


def test_multipart_text_with_nul_is_refused(sync_gateway: SyncGateway) -> None:
    before = sync_gateway.counts()
    response = sync_gateway.post("/v1/images/edits", headers=sync_gateway.auth, data={"prompt": "a\x00b"},
                            files={"image": ("in.png", base64.b64decode(PNG_B64), "image/png")})
    assert_dialect_error(OPENAI, response.status_code, response.text, param="prompt")
    assert sync_gateway.counts() == before


@pytest.mark.parametrize("count", ["9" * 5000, "\u00b2", "-1", "x"])
def test_an_sdk_retry_count_that_is_not_a_small_number_is_no_retry(sync_gateway: SyncGateway, count: str) -> None:
    response = sync_gateway.post("/v1/images/generations", json={"prompt": "a fox"},
                                 headers={**sync_gateway.auth, "x-stainless-retry-count": count.encode("latin-1")})
    assert response.status_code == 200, response.text
