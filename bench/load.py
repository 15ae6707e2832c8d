"""The client side of the benchmark: what one unit of work is, and the three ways it is timed
(one at a time, a closed loop at fixed concurrency, a burst all at once). One :class:`ClientPool`
(async httpx) sends both the direct calls to the fake upstream and the calls through imagegate,
so the two differ only in what answers them.

A unit of work is a list of calls sent concurrently (a direct Gemini n=10 is ten calls, the way a
client without imagegate would do it); it succeeds when every call answers 200 with its images.
Bodies are read in full but parsed only when checked (once per measurement), so the client spends
as little CPU as it can on bytes the gateway must still move.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from bench import fake

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Call:
    label: str
    url: str
    headers: dict[str, str]
    body: bytes
    images: int
    shape: str  # "openai" or "gemini": where the images are in the answer


Work = list[Call]


def prompt(delay_s: float = 0.0) -> str:
    return f"a benchmark image [delay={delay_s:g}]" if delay_s else "a benchmark image"


def gateway_call(base_url: str, key: str, model: str, *, n: int = 1, delay_s: float = 0.0) -> Call:
    body = {"model": model, "prompt": prompt(delay_s), "n": n, "size": "1024x1024", "response_format": "b64_json"}
    return Call(f"gateway {model} n={n}", f"{base_url}/v1/images/generations",
                {"authorization": f"Bearer {key}", "content-type": "application/json"},
                json.dumps(body).encode(), n, "openai")


def direct_openai(upstream: str, model: str, *, n: int = 1, delay_s: float = 0.0) -> Call:
    body = {"model": model, "prompt": prompt(delay_s), "n": n, "size": "1024x1024", "output_format": "png"}
    return Call(f"direct {model} n={n}", f"{upstream}/v1/images/generations",
                {"authorization": f"Bearer {fake.OPENAI_KEY}", "content-type": "application/json"},
                json.dumps(body).encode(), n, "openai")


def direct_gemini(upstream: str, model: str, *, delay_s: float = 0.0) -> Call:
    body = {"contents": [{"role": "user", "parts": [{"text": prompt(delay_s)}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "1:1"}}}
    return Call(f"direct {model}", f"{upstream}/v1beta/models/{model}:generateContent",
                {"x-goog-api-key": fake.GEMINI_KEY, "content-type": "application/json"},
                json.dumps(body).encode(), 1, "gemini")


class ClientPool:
    """The bench's client: a few ``httpx.AsyncClient`` used in turn, each with at most
    ``per_client`` connections.

    One client with hundreds of connections is a bottleneck of its own: httpcore assigns queued
    requests to connections in O(requests x connections) on every change (200 requests on 200
    kept-alive connections: 10 million ``is_idle`` calls, 7 s of CPU for one burst). And httpcore
    reads an answer 64 KiB at a time, which makes a 1.4 MB answer cost ~7 ms of CPU under load;
    reading 1 MiB at a time halves that. Both apply to direct and gateway calls alike.
    """

    def __init__(self, connections: int, *, per_client: int = 25) -> None:
        httpcore._async.http11.AsyncHTTP11Connection.READ_NUM_BYTES = 1 << 20
        count = max(1, -(-connections // per_client))
        self._clients = [httpx.AsyncClient(
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0),
            # idle connections are dropped before uvicorn's 5 s keep-alive timeout can close them
            # under a request (a POST on a connection the server is closing fails with ReadError)
            limits=httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client,
                                keepalive_expiry=2.0))
            for _ in range(count)]
        self._next = 0

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        client = self._clients[self._next]
        self._next = (self._next + 1) % len(self._clients)
        return await client.post(url, **kwargs)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def new_client(connections: int) -> ClientPool:
    return ClientPool(connections)


def check(call: Call, content: bytes) -> None:
    """The answer carries ``call.images`` PNG images (raises AssertionError if not)."""
    data = json.loads(content)
    if call.shape == "openai":
        encoded = [item["b64_json"] for item in data["data"]]
    else:
        encoded = [p["inlineData"]["data"] for p in data["candidates"][0]["content"]["parts"] if "inlineData" in p]
    assert len(encoded) == call.images, f"{call.label}: {len(encoded)} images, expected {call.images}"
    for item in encoded:
        assert base64.b64decode(item).startswith(PNG_MAGIC), f"{call.label}: not a PNG"


@dataclass
class Outcome:
    ok: bool
    seconds: float
    error: str | None = None
    bytes: int = 0
    job_id: str | None = None  # x-imagegate-job-id, with the wall-clock start and end (bench/timeline.py)
    wall: tuple[float, float] = (0.0, 0.0)


async def send(client: ClientPool, call: Call, *, verify: bool = False,
               timeout_s: float = REQUEST_TIMEOUT_S) -> Outcome:
    wall_start = time.time()
    started = time.perf_counter()
    try:
        response = await client.post(call.url, content=call.body, headers=call.headers,
                                     timeout=httpx.Timeout(timeout_s, connect=10.0))
        content = response.content
    except httpx.HTTPError as exc:
        return Outcome(False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:200])
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        return Outcome(False, elapsed, f"HTTP {response.status_code}: {content[:200]!r}")
    if verify:
        try:
            check(call, content)
        except (AssertionError, ValueError, KeyError, IndexError, TypeError) as exc:
            return Outcome(False, elapsed, f"bad answer: {exc}"[:200])
    return Outcome(True, elapsed, bytes=len(content), job_id=response.headers.get("x-imagegate-job-id"),
                   wall=(wall_start, wall_start + elapsed))


async def run_work(client: ClientPool, work: Work, *, verify: bool = False,
                   timeout_s: float = REQUEST_TIMEOUT_S) -> Outcome:
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(send(client, call, verify=verify, timeout_s=timeout_s) for call in work))
    elapsed = time.perf_counter() - started
    failed = next((o for o in outcomes if not o.ok), None)
    return Outcome(failed is None, elapsed, failed.error if failed else None, sum(o.bytes for o in outcomes),
                   outcomes[0].job_id, outcomes[0].wall)


@dataclass
class Sample:
    """Timings of one measurement, with its failures."""

    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    wall_s: float = 0.0
    bytes: int = 0
    marks: list[tuple[str, float, float]] = field(default_factory=list)  # job id, wall start, wall end
    units: int = 0  # units completed in the whole run, warm-up included (for CPU per request)

    def add(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.seconds.append(outcome.seconds)
            self.bytes += outcome.bytes
            if outcome.job_id:
                self.marks.append((outcome.job_id, *outcome.wall))
        else:
            self.errors += 1
            self.first_error = self.first_error or outcome.error

    def quantile(self, q: float) -> float | None:
        if not self.seconds:
            return None
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    def summary(self) -> dict[str, Any]:
        ms = [s * 1000 for s in self.seconds]
        return {
            "ok": len(self.seconds),
            "errors": self.errors,
            "first_error": self.first_error,
            "wall_s": round(self.wall_s, 3),
            "p50_ms": round(statistics.median(ms), 2) if ms else None,
            "p95_ms": round((self.quantile(0.95) or 0) * 1000, 2) if ms else None,
            "max_ms": round(max(ms), 2) if ms else None,
            "mb_received": round(self.bytes / 1e6, 1),
        }


async def sequential(client: ClientPool, work: Work, *, count: int, warmup: int,
                     max_s: float = 120.0) -> Sample:
    """``count`` units one after the other (one in flight), after ``warmup`` unmeasured ones."""
    for i in range(warmup):
        await run_work(client, work, verify=i == 0)
    sample = Sample()
    started = time.perf_counter()
    for _ in range(count):
        sample.add(await run_work(client, work))
        if time.perf_counter() - started > max_s:
            break
    sample.wall_s = time.perf_counter() - started
    return sample


async def closed_loop(client: ClientPool, work: Work, *, concurrency: int, duration_s: float,
                      warmup_s: float, min_answers: int = 0, max_s: float = 60.0,
                      max_units: int = 100_000) -> Sample:
    """``concurrency`` loops, each sending its next unit when the last one answered, for
    ``duration_s`` (after ``warmup_s`` unmeasured). Units that end inside the measured window
    count, so rate = completed in the window / ``wall_s`` (the window's length). The window grows
    past ``duration_s`` (up to ``max_s``) until ``min_answers`` ended in it: a target slower than
    the window would otherwise show 0 requests/s."""
    await run_work(client, work, verify=True)
    sample = Sample()
    loop_start = time.perf_counter()
    window_start = loop_start + warmup_s
    window = {"end": window_start + duration_s}
    hard_end = window_start + max(duration_s, max_s)
    budget = [max_units]

    async def loop() -> None:
        while time.perf_counter() < window["end"] and budget[0] > 0:
            budget[0] -= 1
            outcome = await run_work(client, work)
            sample.units += 1
            now = time.perf_counter()
            answered = len(sample.seconds) + sample.errors
            if now >= window_start and answered < min_answers and now <= hard_end:
                window["end"] = max(window["end"], now)
            if window_start <= now <= window["end"]:
                sample.add(outcome)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    sample.wall_s = max(duration_s, window["end"] - window_start)
    return sample


async def burst(client: ClientPool, work: Work, *, count: int, timeout_s: float = 30.0) -> Sample:
    """``count`` units sent at once; ``wall_s`` is the time until the last one answered (or
    failed: a unit not answered within ``timeout_s`` is an error)."""
    sample = Sample()
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(run_work(client, work, timeout_s=timeout_s) for _ in range(count)))
    sample.wall_s = time.perf_counter() - started
    for outcome in outcomes:
        sample.add(outcome)
    return sample
