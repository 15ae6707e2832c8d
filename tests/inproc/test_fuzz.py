"""Property-based fuzzing of the real application in process: whatever a client sends, the answer
is never a 5xx, and an error is in the shape of the caller's dialect.

Two generators: schemathesis, from the application's own OpenAPI schema (every operation, valid
and invalid inputs), and hypothesis bodies for each dialect's generation endpoint, where the
fields a dialect reads get plausible values or random JSON of any type and nesting (unicode with
NUL and lone surrogates, as escapes or as bytes that are not UTF-8, huge numbers, NaN). Runs are
derandomized, so CI sees the same examples every time; the demo model is shrunk
(tests/inproc/portal.py) so that an accepted request completes in milliseconds.
"""

from __future__ import annotations

import base64
import json
import math
import os
from typing import Any
from urllib.parse import urlencode

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from imagegate.embedded import create_embedded_app
from tests.inproc.portal import SyncGateway
from tests.inproc.shapes import dialect_of, error_of
from tests.pngs import blank_png

EXAMPLES = int(os.environ.get("IMAGEGATE_TEST_FUZZ_EXAMPLES", "60"))
"""Examples per test: 60 in CI, derandomized (the same examples every run). For a deeper search,
set IMAGEGATE_TEST_FUZZ_EXAMPLES=1000 and IMAGEGATE_TEST_FUZZ_RANDOM=1 (new examples each run)."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("IMAGEGATE_TEST_FUZZ_RANDOM"),
                database=None, suppress_health_check=list(HealthCheck))


def check(gateway: SyncGateway, method: str, path: str, *, headers: dict[str, Any],
          content: bytes | None = None) -> None:
    """Send one request: never a 5xx, and a 4xx in the shape of the request's dialect."""
    response = gateway.request(method, path, headers=headers, content=content)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        named = {k if isinstance(k, str) else k.decode("latin-1"): v for k, v in headers.items()}
        error_of(dialect_of(method, path.split("?")[0], named), response.status_code, response.text)


# -- schemathesis: every operation of the OpenAPI schema -------------------------------------

schema = schemathesis.openapi.from_dict(create_embedded_app(Settings(_env_file=None)).openapi())


@schema.parametrize()
@settings(FUZZ, max_examples=max(1, EXAMPLES * 2 // 3))  # 25 operations: the largest share of the time
def test_no_operation_of_the_schema_answers_a_5xx(case: Any, sync_gateway: SyncGateway) -> None:
    prepared = requests.Request(**case.as_transport_kwargs(base_url="http://gateway")).prepare()
    headers = dict(prepared.headers)
    headers.update(sync_gateway.admin if case.path.startswith("/admin") else sync_gateway.auth)
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    assert body is None or isinstance(body, bytes)
    check(sync_gateway, case.method, (prepared.path_url or "/"), headers=headers, content=body)


# -- hypothesis: each dialect's generation endpoint ------------------------------------------

any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())  # NUL, surrogates
plain_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
hostile_text = st.text(any_char, max_size=12) | st.sampled_from(["", "\x00", "\ud800", "²", "é", "a" * 300])
any_text = st.integers(0, 3).flatmap(lambda k: hostile_text if k == 3 else plain_text)
numbers = (st.integers(min_value=-3, max_value=12) | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([0.5, 1.0, -0.0, 1e308, math.nan, math.inf, -math.inf]))
scalars = st.none() | st.booleans() | numbers | any_text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(any_text, inner, max_size=3), max_leaves=8)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
BOMB = "data:image/png;base64," + base64.b64encode(blank_png(12000, 12000)).decode()
# image references that never leave this machine: refused before any connection, or inline
image_urls = st.sampled_from([f"data:image/png;base64,{PNG}"] * 6 + [
    f"data:image/png;base64,{PNG}", f"data:image/jpeg;base64,{PNG}", "data:image/png;base64,!!!!", "data:,",
    BOMB, "http://[::1/x.png", "http://example.com:99999/x.png", "http://10.0.0.1/x.png", "http://127.0.0.1:1/x.png",
    "https://a..b/x.png", "ftp://x/y.png", "file:///etc/passwd", "http://user:pw@1.1.1.1/x.png", "x",
]) | any_text


def mostly(plausible: st.SearchStrategy[Any], *, odds: int = 12) -> st.SearchStrategy[Any]:
    """``plausible``, and one time in ``odds`` any JSON value at all: a body is mostly what the
    dialect expects, with a wrong type here and there, so requests get past the first check."""
    return st.integers(0, odds - 1).flatmap(lambda k: json_values if k == odds - 1 else plausible)


def shaped(fields: dict[str, st.SearchStrategy[Any]], **required: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with the fields a dialect reads (any of them left out, now and then an extra one
    added), or, now and then, any JSON value at all."""
    objects = st.fixed_dictionaries({k: mostly(v) for k, v in required.items()},
                                    optional={k: mostly(v) for k, v in fields.items()})
    extras = st.integers(0, 3).flatmap(lambda k: st.dictionaries(any_text, json_values, max_size=1) if k == 3
                                       else st.just({}))
    with_extras = st.builds(lambda body, extra: {**extra, **body}, objects, extras)
    return mostly(with_extras)


prompts = mostly(st.sampled_from(["a fox", "a lighthouse at dusk"]) | plain_text, odds=6) | any_text
models = st.sampled_from(["demo", "auto", "demo-image", "openai/demo", "no-such-model", "gemini-3-pro-image"])
sizes = st.sampled_from(["32x32", "64x48", "96x96", "auto", "1024x1024", "4096x4096", "0x0", "x", "-1x5",
                         "\u00b2x\u00b2", "9" * 5000 + "x9"])
ratios = st.sampled_from(["1:1", "16:9", "3:2", "7:4", "5:1", "0:0", "a:b"])
formats = st.sampled_from(["png", "jpeg", "webp", "gif", "image/png", "image/jpeg"])
small_n = st.integers(min_value=-1, max_value=4) | st.sampled_from([10, 11, True, "2"])
image_options = {
    "model": models, "n": small_n, "size": sizes, "aspect_ratio": ratios,
    "quality": st.sampled_from(["low", "medium", "high", "auto", "hd", "standard", "ultra"]),
    "output_format": formats, "output_compression": numbers, "response_format": st.sampled_from(["url", "b64_json"]),
    "background": st.sampled_from(["transparent", "opaque", "auto", "purple"]), "style": any_text,
    "moderation": st.sampled_from(["low", "auto"]), "user": any_text, "stream": st.booleans(),
    "partial_images": small_n,
}
image_ref = mostly(shaped({}, image_url=image_urls), odds=6) | shaped({"image_url": image_urls}, file_id=any_text)
openai_images = shaped(image_options, prompt=prompts)
openai_edits = shaped({**image_options, "mask": image_ref, "input_fidelity": st.sampled_from(["high", "low"])},
                      prompt=prompts, images=st.lists(image_ref, min_size=1, max_size=3))

chat_part = (shaped({"text": prompts}, type=st.just("text"))
             | shaped({"image_url": shaped({"url": image_urls, "detail": any_text})}, type=st.just("image_url")))
chat_message = shaped({"name": any_text}, content=prompts | st.lists(chat_part, min_size=1, max_size=3),
                      role=st.sampled_from(["user", "user", "system", "assistant", "developer", "tool", "robot"]))
openai_chat = shaped({
    "model": models, "modalities": st.lists(st.sampled_from(["text", "image", "audio"]), max_size=3),
    "image_config": shaped({"aspect_ratio": ratios, "image_size": st.sampled_from(["512", "1K", "2K", "4K", 512])}),
    "n": small_n, "stream": st.booleans(), "stream_options": shaped({"include_usage": st.booleans()}),
    "image_output": st.sampled_from(["data_url", "url"]), "max_tokens": numbers, "temperature": numbers,
}, messages=st.lists(chat_message, min_size=1, max_size=3))

anthropic_source = (shaped({"media_type": formats, "data": st.just(PNG) | any_text}, type=st.just("base64"))
                    | shaped({"url": image_urls}, type=st.just("url"))
                    | shaped({"file_id": any_text}, type=st.just("file")))
anthropic_block = (shaped({"text": prompts}, type=st.just("text")) | shaped({"source": anthropic_source},
                                                                            type=st.just("image"))
                   | shaped({"content": json_values}, type=st.sampled_from(["tool_result", "thinking", "document"])))
anthropic_message = shaped({}, content=prompts | st.lists(anthropic_block, min_size=1, max_size=3),
                           role=st.sampled_from(["user", "user", "assistant", "system", "robot"]))
anthropic = shaped({
    "model": models, "system": prompts | st.lists(shaped({"text": prompts}, type=st.just("text")), max_size=2),
    "max_tokens": numbers, "stream": st.booleans(), "n": small_n,
    "image_config": shaped({"aspect_ratio": ratios, "image_size": st.sampled_from(["1K", "2K"])}),
}, messages=st.lists(anthropic_message, min_size=1, max_size=3))

gemini_part = (shaped({"thought": st.booleans()}, text=prompts)
               | shaped({}, inlineData=shaped({"mimeType": formats}, data=st.just(PNG) | any_text))
               | shaped({}, fileData=shaped({"mimeType": formats}, fileUri=image_urls)))
gemini_content = shaped({"role": st.sampled_from(["user", "user", "model"])},
                        parts=st.lists(gemini_part, min_size=1, max_size=3))
gemini = shaped({
    "systemInstruction": prompts | gemini_content,
    "generationConfig": shaped({
        "responseModalities": st.lists(st.sampled_from(["IMAGE", "TEXT", "image", "AUDIO"]), max_size=2),
        "candidateCount": small_n,
        "imageConfig": shaped({"aspectRatio": ratios, "imageSize": st.sampled_from(["1K", "2K", "512"]),
                               "imageOutputOptions": shaped({"mimeType": formats, "compressionQuality": numbers})}),
    }),
    "safetySettings": st.lists(shaped({"category": any_text, "threshold": any_text}), max_size=2),
}, contents=st.lists(gemini_content, min_size=1, max_size=3))
predict = shaped({"parameters": shaped({
    "sampleCount": small_n, "aspectRatio": ratios, "sampleImageSize": st.sampled_from(["1K", "2K"]),
    "imageSize": st.sampled_from(["1K", "2K"]), "includeRaiReason": st.booleans(), "personGeneration": any_text,
    "outputOptions": shaped({"mimeType": formats, "compressionQuality": numbers})})},
    instances=st.lists(shaped({}, prompt=prompts), min_size=1, max_size=2))
simple = shaped({"system": prompts, "model": models}, prompt=prompts)
jobs = shaped({k: v for k, v in image_options.items() if k not in ("response_format", "moderation", "user", "stream",
                                                                     "partial_images")}
              | {"system": prompts, "image_size": st.sampled_from(["1K", "512"])}, prompt=prompts)

ENDPOINTS = {
    "/v1/images/generations": openai_images,
    "/v1/images/edits": openai_edits,
    "/v1/chat/completions": openai_chat,
    "/v1/messages": anthropic,
    "/v1/messages/count_tokens": anthropic,
    "/v1beta/models/demo:generateContent": gemini,
    "/v1beta/models/demo:streamGenerateContent?alt=sse": gemini,
    "/v1beta/models/demo:predict": predict,
    "/generate": simple,
    "/v1/jobs": jobs,
}


def _encode(body: Any, as_escapes: bool) -> bytes:
    """JSON text of ``body``: non-ASCII as \\u escapes (lone surrogates too), or as UTF-8 with
    lone surrogates passed through as bytes that are not UTF-8; NaN and infinities as the tokens
    Python writes (which JSON does not have)."""
    text = json.dumps(body, ensure_ascii=as_escapes)
    return text.encode("utf-8", "surrogatepass")


headers_extra = st.fixed_dictionaries({}, optional={
    "Prefer": st.sampled_from(["respond-async", "wait=1", "x"]),
    "Idempotency-Key": st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=8),
    "anthropic-version": st.just("2023-06-01"),
    "x-stainless-retry-count": (st.sampled_from(["0", "1", "-1", "\u00b2", "9" * 5000])
                                | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=3)),
})


def _fuzz_endpoint(path: str) -> Any:
    @FUZZ
    @given(body=ENDPOINTS[path], as_escapes=st.booleans(), extra=headers_extra)
    def run(sync_gateway: SyncGateway, body: Any, as_escapes: bool, extra: dict[str, str]) -> None:
        headers: dict[str, Any] = {**sync_gateway.auth, "Content-Type": "application/json",
                                   **{k: v.encode("latin-1") for k, v in extra.items()}}
        check(sync_gateway, "POST", path, headers=headers, content=_encode(body, as_escapes))
    return run


test_openai_images_generations_bodies = _fuzz_endpoint("/v1/images/generations")
test_openai_images_edits_json_bodies = _fuzz_endpoint("/v1/images/edits")
test_openai_chat_bodies = _fuzz_endpoint("/v1/chat/completions")
test_anthropic_messages_bodies = _fuzz_endpoint("/v1/messages")
test_anthropic_count_tokens_bodies = _fuzz_endpoint("/v1/messages/count_tokens")
test_gemini_generate_content_bodies = _fuzz_endpoint("/v1beta/models/demo:generateContent")
test_gemini_stream_generate_content_bodies = _fuzz_endpoint("/v1beta/models/demo:streamGenerateContent?alt=sse")
test_gemini_predict_bodies = _fuzz_endpoint("/v1beta/models/demo:predict")
test_simple_generate_bodies = _fuzz_endpoint("/generate")
test_jobs_bodies = _fuzz_endpoint("/v1/jobs")



# -- multipart edits and query strings, which the schema does not describe --------------------

form_values = (st.sampled_from(["a fox", "2", "1", "0", "11", "true", "64x64", "demo", "png", "transparent", "url", ""])
               | any_text.map(lambda text: text.encode("utf-8", "surrogatepass"))
               | st.binary(max_size=8))
form_files = st.sampled_from([base64.b64decode(PNG), blank_png(12000, 12000), b"", b"GIF89a", b"\x89PNG\r\n\x1a\n"])


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["prompt", "n", "size", "model", "output_format", "background",
                                               "response_format", "stream", "quality", "svg[model]"]) | plain_text,
                              form_values, max_size=6),
       files=st.lists(st.tuples(st.sampled_from(["image", "image[]", "file", "mask", "other"]), form_files,
                                st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain"])),
                      max_size=3),
       broken=st.none() | st.binary(max_size=64))
def test_multipart_edits(sync_gateway: SyncGateway, fields: dict[str, Any], files: list[tuple[str, bytes, str]],
                         broken: bytes | None) -> None:
    if broken is not None:  # a body that is not the multipart it says it is
        check(sync_gateway, "POST", "/v1/images/edits", content=broken,
              headers={**sync_gateway.auth, "Content-Type": "multipart/form-data; boundary=xyz"})
        return
    response = sync_gateway.post("/v1/images/edits", headers=sync_gateway.auth, data=fields,
                            files=[(name, (f"{name}.png", data, mime)) for name, data, mime in files] or None)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        error_of("openai", response.status_code, response.text)


query_values = any_text | st.sampled_from(["1", "20", "1000", "1001", "-1", "\u00b2", "9" * 30, "demo", "job_x"])


@FUZZ
@given(path=st.sampled_from(["/v1/models", "/v1/models/demo", "/v1beta/models", "/v1beta/models/demo",
                             "/v1/files/img_x", "/v1/jobs", "/v1/usage", "/admin/usage", "/admin/keys/x"]),
       params=st.dictionaries(st.sampled_from(["limit", "after_id", "before_id", "lifecycle", "pageSize", "pageToken",
                                               "expires", "signature", "after", "status", "include", "since", "until",
                                               "group_by", "format", "key"]) | plain_text, query_values, max_size=4),
       anthropic=st.booleans())
def test_query_strings(sync_gateway: SyncGateway, path: str, params: dict[str, str], anthropic: bool) -> None:
    headers = {**(sync_gateway.admin if path.startswith("/admin") else sync_gateway.auth),
               **({"anthropic-version": "2023-06-01"} if anthropic else {})}
    query = urlencode({k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                       for k, v in params.items()})
    check(sync_gateway, "GET", f"{path}?{query}", headers=headers)
