"""A fast fake upstream for the benchmark: OpenAI ``POST /v1/images/generations``
(https://platform.openai.com/docs/api-reference/images) and Gemini
``POST /v1beta/models/{model}:generateContent`` (https://ai.google.dev/api/generate-content),
answering with one pre-encoded ~1 MiB PNG of random pixels.

The image is made and base64-encoded once at startup; every answer is the same bytes, spliced into
a pre-built JSON body, so the fake costs as little CPU as possible (the benchmark measures the
gateway, not the fake). A prompt containing ``[delay=1.5]`` makes the answer wait that many
seconds (asyncio sleep: no thread held), which stands in for a slow upstream without any shared
state between the bench and this process.

``GET /_bench/stats`` reports the calls received per endpoint and the peak number of calls in
flight; ``POST /_bench/reset`` zeroes them.

Run: ``python -m bench.fake --port 8123`` (uvicorn, one process, uvloop + httptools).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

OPENAI_KEY = "bench-openai-key"
GEMINI_KEY = "bench-gemini-key"
IMAGE_SIDE = 1024  # 1024 x 1024 grey noise: a PNG of ~1.05 MB (noise does not compress)
MAX_DELAY_S = 30.0
_DELAY = re.compile(r"\[delay=(\d+(?:\.\d+)?)\]")
_GEMINI_PATH = re.compile(r"(?P<model>[^:/]+):generateContent")
# output image tokens per Gemini model at 1K (https://ai.google.dev/gemini-api/docs/image-generation)
_GEMINI_TOKENS = {"gemini-2.5-flash-image": 1290}


def noise_png(side: int = IMAGE_SIDE, seed: bytes | None = None) -> bytes:
    """A side x side 8-bit greyscale PNG of random pixels (about side*side bytes)."""
    from PIL import Image

    pixels = seed if seed is not None else os.urandom(side * side)
    buffer = io.BytesIO()
    Image.frombytes("L", (side, side), pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Bodies:
    """Pre-built JSON answers around one base64 image (built lazily, then cached)."""

    def __init__(self, png: bytes) -> None:
        self.png_bytes = len(png)
        self.b64 = base64.b64encode(png)
        self.created = int(time.time())
        self._openai: dict[int, bytes] = {}
        self._gemini: dict[str, bytes] = {}

    def openai(self, n: int) -> bytes:
        if n not in self._openai:
            item = b'{"b64_json":"' + self.b64 + b'"}'
            usage = {"input_tokens": 12, "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
                     "output_tokens": 1056 * n, "output_tokens_details": {"image_tokens": 1056 * n, "text_tokens": 0},
                     "total_tokens": 12 + 1056 * n}
            tail = {"background": "opaque", "output_format": "png", "size": "1024x1024", "quality": "medium",
                    "usage": usage}
            self._openai[n] = (b'{"created":' + str(self.created).encode() + b',"data":['
                               + b",".join([item] * n) + b"]," + json.dumps(tail).encode()[1:])
        return self._openai[n]

    def gemini(self, model: str) -> bytes:
        if model not in self._gemini:
            tokens = _GEMINI_TOKENS.get(model, 1120)
            usage = {"promptTokenCount": 12, "candidatesTokenCount": tokens, "totalTokenCount": 12 + tokens,
                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
                     "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": tokens}]}
            tail = {"usageMetadata": usage, "modelVersion": model, "responseId": "bench"}
            self._gemini[model] = (
                b'{"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":"'
                + self.b64 + b'"}}]},"finishReason":"STOP","index":0}],' + json.dumps(tail).encode()[1:])
        return self._gemini[model]


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.peak_in_flight = 0

    def enter(self, endpoint: str) -> None:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1


def _delay(prompt: object) -> float:
    match = _DELAY.search(prompt) if isinstance(prompt, str) else None
    return min(MAX_DELAY_S, float(match.group(1))) if match else 0.0


def _error(status: int, message: str, *, google: bool) -> JSONResponse:
    if google:
        return JSONResponse({"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}, status)
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}}, status)


def create_app(png: bytes | None = None) -> Starlette:
    bodies = Bodies(png if png is not None else noise_png())
    stats = Stats()

    async def openai_generations(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return _error(401, "Incorrect API key provided.", google=False)
        try:
            body: dict[str, Any] = json.loads(await request.body())
            n = int(body.get("n", 1))
        except (ValueError, TypeError):
            return _error(400, "We could not parse the JSON body of your request.", google=False)
        if not isinstance(body.get("prompt"), str) or not 1 <= n <= 10:
            return _error(400, "Invalid 'prompt' or 'n'.", google=False)
        stats.enter("openai_generations")
        try:
            delay = _delay(body["prompt"])
            if delay:
                await asyncio.sleep(delay)
            return Response(bodies.openai(n), media_type="application/json")
        finally:
            stats.leave()

    async def gemini_generate(request: Request) -> Response:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if key != GEMINI_KEY:
            return _error(400, "API key not valid. Please pass a valid API key.", google=True)
        match = _GEMINI_PATH.fullmatch(request.path_params["rest"])
        if match is None:
            return _error(404, "Not found.", google=True)
        try:
            body = json.loads(await request.body())
            prompt = body["contents"][0]["parts"][0]["text"]
        except (ValueError, TypeError, KeyError, IndexError):
            return _error(400, "Invalid JSON payload received.", google=True)
        stats.enter("gemini")
        try:
            delay = _delay(prompt)
            if delay:
                await asyncio.sleep(delay)
            return Response(bodies.gemini(match["model"]), media_type="application/json")
        finally:
            stats.leave()

    async def get_stats(_request: Request) -> Response:
        return JSONResponse({"calls": stats.calls, "in_flight": stats.in_flight,
                             "peak_in_flight": stats.peak_in_flight, "png_bytes": bodies.png_bytes,
                             "b64_bytes": len(bodies.b64)})

    async def reset(_request: Request) -> Response:
        stats.reset()
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/images/generations", openai_generations, methods=["POST"]),
        Route("/v1beta/models/{rest:path}", gemini_generate, methods=["POST"]),
        Route("/_bench/stats", get_stats, methods=["GET"]),
        Route("/_bench/reset", reset, methods=["POST"]),
    ])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", backlog=4096, timeout_keep_alive=60)


if __name__ == "__main__":
    main()
