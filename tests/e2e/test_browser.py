"""A browser extension calling imagegate from its page: SillyImages' requests, sent by a real
headless Chromium (Debian's package, driven by Playwright) from a page of another origin.

SillyImages (https://github.com/0xl0cal/sillyimages, ``src/providers.js`` and ``src/settings.js``)
runs inside SillyTavern's page. With the API type Gemini and the endpoint set to the gateway
(without ``/v1``), it lists models with ``GET {endpoint}/v1/models`` (``Authorization: Bearer``)
and keeps the ids that name an image model (its ``IMAGE_MODEL_KEYWORDS``, minus video models),
then generates with ``POST {endpoint}/v1beta/models/{model}:generateContent``
(``Authorization: Bearer``, ``Content-Type: application/json``), its reference images *before*
the text. The page below sends the same requests with the browser's ``fetch``: every one of them
is cross-origin, so each needs the CORS preflight and headers, errors included.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.installs import CHROMIUM_FLAGS, chromium
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

# the model filter of SillyImages' settings.js (IMAGE_MODEL_KEYWORDS, VIDEO_MODEL_KEYWORDS), as data
IMAGE_WORDS = ["dall-e", "midjourney", "mj", "journey", "stable-diffusion", "sdxl", "flux", "imagen", "drawing",
               "paint", "image", "seedream", "hidream", "dreamshaper", "ideogram", "nano-banana", "gpt-image",
               "wanx", "qwen"]
VIDEO_WORDS = ["sora", "kling", "jimeng", "veo", "pika", "runway", "luma", "video", "gen-3", "minimax", "cogvideo",
               "mochi", "seedance", "vidu", "wan-ai", "hunyuan", "hailuo"]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>extension page</title><script>
const IMAGE_WORDS = __IMAGE__, VIDEO_WORDS = __VIDEO__;
function looksLikeAnImageModel(id) {
  const name = String(id).toLowerCase();
  if (VIDEO_WORDS.some(word => name.includes(word))) return false;
  if (name.includes('vision') && name.includes('preview')) return false;
  return IMAGE_WORDS.some(word => name.includes(word));
}
// the extension's two requests: the model list, then generateContent with the references first
async function extension(endpoint, apiKey, model, references, prompt) {
  const out = {};
  const list = await fetch(endpoint + '/v1/models', {method: 'GET', headers: {'Authorization': 'Bearer ' + apiKey}});
  out.listStatus = list.status;
  out.listed = ((await list.json()).data || []).map(m => m.id);
  out.kept = out.listed.filter(looksLikeAnImageModel);
  const parts = references.map(data => ({inlineData: {mimeType: 'image/png', data}}));
  parts.push({text: prompt});
  const body = {contents: [{role: 'user', parts}],
                generationConfig: {responseModalities: ['TEXT', 'IMAGE'],
                                   imageConfig: {aspectRatio: '16:9', imageSize: '1K'}}};
  const answer = await fetch(endpoint + '/v1beta/models/' + model + ':generateContent', {
    method: 'POST', headers: {'Authorization': 'Bearer ' + apiKey, 'Content-Type': 'application/json'},
    body: JSON.stringify(body)});
  out.status = answer.status;
  out.jobId = answer.headers.get('x-imagegate-job-id');
  const result = await answer.json();
  out.error = result.error || null;
  const image = (((result.candidates || [])[0] || {}).content || {parts: []}).parts.find(p => p.inlineData);
  out.image = image ? 'data:' + image.inlineData.mimeType + ';base64,' + image.inlineData.data : null;
  return out;
}
</script></head><body>SillyTavern</body></html>""".replace("__IMAGE__", json.dumps(IMAGE_WORDS)).replace(
    "__VIDEO__", json.dumps(VIDEO_WORDS))


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """A second local HTTP server, on another port than the gateway's: another origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path, why_not = chromium()
    if path is None:
        pytest.skip(f"Chromium is not available ({why_not}); test_cors_headers_for_the_extension checks the "
                    "CORS headers with httpx instead")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def _png(width: int = 48, height: int = 32) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _run_extension(browser: Any, origin: str, *args: Any) -> dict[str, Any]:
    page = browser.new_page()
    try:
        page.goto(origin + "/")
        result: dict[str, Any] = page.evaluate("args => extension(...args)", list(args))
        return result
    finally:
        page.close()


def test_sillyimages_in_chromium_from_a_page_of_another_origin(browser: Any, page_origin: str, gw: Stack, key: str,
                                                               upstream: FakeUpstream) -> None:
    reference = _png()
    prompt = "[CRITICAL: The reference image(s) above show the character.]\n\nthe character, waving"
    result = _run_extension(browser, page_origin, gw.base_url, key, "gemini-3-pro-image", [reference], prompt)
    assert result["listStatus"] == 200 and result["status"] == 200, result["error"]
    # every listed model is one the extension keeps; the demo model among them
    assert "demo-image" in result["kept"] and result["kept"] == result["listed"]
    assert result["jobId"].startswith("job_")  # an exposed header, readable by the page
    head, _, data = result["image"].partition(",")
    assert head == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (1376, 768)
    [call] = [c for c in upstream.calls if c.endpoint == "gemini"]
    parts = (call.json or {})["contents"][-1]["parts"]
    # the reference image reaches the model before the text, as the extension sent them
    assert [next(iter(p)) for p in parts] == ["inlineData", "text"] and parts[1]["text"] == prompt


def test_errors_reach_the_page_too(browser: Any, page_origin: str, gw: Stack) -> None:
    result = _run_extension(browser, page_origin, gw.base_url, "ig-not-a-key", "demo", [], "a fox")
    assert result["listStatus"] == 401  # readable, not a "Failed to fetch"
    assert result["status"] == 400 and result["error"]["status"] == "INVALID_ARGUMENT"


def test_the_demo_model_in_chromium(browser: Any, page_origin: str, gw: Stack, key: str) -> None:
    result = _run_extension(browser, page_origin, gw.base_url, key, "demo-image", [], "a lighthouse at dusk")
    assert result["status"] == 200 and result["image"].startswith("data:image/png;base64,")


def test_cors_headers_for_the_extension(gw: Stack, key: str, page_origin: str) -> None:
    """What Chromium needs, checked over plain HTTP (also where Chromium cannot be installed)."""
    headers = {"Origin": page_origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type,x-goog-api-key,anthropic-version,"
                                                 "anthropic-beta,x-api-key,idempotency-key,x-stainless-retry-count"}
    for path in ("/v1/models", "/v1beta/models/demo:generateContent", "/v1/messages", "/v1/images/generations"):
        preflight = httpx.options(gw.base_url + path, headers=headers)
        assert preflight.status_code == 200, (path, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert all(name in allowed for name in ("authorization", "x-goog-api-key", "anthropic-version",
                                                "idempotency-key", "x-stainless-retry-count"))
    unauthorised = httpx.get(gw.base_url + "/v1/models", headers={"Origin": page_origin})
    assert unauthorised.status_code == 401 and unauthorised.headers["access-control-allow-origin"] == "*"
    answer = httpx.post(gw.base_url + "/v1beta/models/demo:generateContent", timeout=60,
                        headers={"Origin": page_origin, "Authorization": f"Bearer {key}"},
                        json={"contents": [{"parts": [{"text": "a fox"}]}]})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "x-imagegate-job-id" in exposed and "x-imagegate-applied" in exposed
