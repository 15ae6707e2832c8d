"""Where one request's wall-clock time goes, function by function, across the gateway's processes.

``python -m bench.run --trace`` starts every gateway process with ``IMAGEGATE_BENCH_TRACE`` naming
a directory (through bench/_profile_site/sitecustomize.py). In each process, :func:`install` wraps
the functions named in :data:`SPANS` as their modules are imported: each call appends one JSON line
``[name, wall start, wall end]`` to ``spans-<pid>.jsonl`` there. Scenario a then places the spans
that began inside each request (one request in flight, so every span in its window is its own) on
the request's timeline: for each function, the median of when it started (milliseconds after the
client sent the request) and of how long it took. bench/timeline.py splits the same requests into
four segments from the job's own timestamps; this goes one level down.

Every process runs on this machine's clock, so the offsets of the API's, the worker's and the
client's spans are comparable to well under a millisecond. Tracing costs a few microseconds per
span (a wrapper and a line write); the figures measured while it runs are marked as distorted.
"""

from __future__ import annotations

import bisect
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

SPANS: dict[str, tuple[str, ...]] = {
    # the API: the request, its submit and enqueue, the wait, the read of the answer and its sending
    "api.auth": ("authenticate",),
    "api.flow": ("respond", "load_finished"),
    "api.submit": ("submit_job", "submit"),
    "api.enqueue": ("Enqueuer.send",),
    "api.wait": ("JobWaiter.wait",),
    "api.splice": ("Splice.response", "SplicedResponse.__call__"),
    # the worker: the task's hand-over to the event loop, claim, upstream call, store and record
    "worker.pool": ("AsyncioPool.on_apply", "_awaited"),
    "worker.run_job": ("_claim", "_call", "_store", "_record"),
    "core.circuit_redis": ("RedisCircuitStore.permit",),
    "worker.providers.http": ("UpstreamClient.call", "ShardedTransport.handle_async_request"),
    "worker.providers.openai_images": ("parse_images",),
    "worker.providers.gemini": ("parse_generate_content",),
    "worker.providers.payload": ("decode_image",),
    "core.storage.local": ("LocalImageStore.aput", "LocalImageStore.aopen"),
    "core.events": ("RedisEventPublisher.publish",),
    # both: every one-statement phase on PostgreSQL (submit, claim, record, the answer's read)
    "core.db": ("run_alone",),
}
"""Module -> the functions of it to time (``Class.method`` for methods), all in this repository:
tests/bench/test_spans.py checks that each still exists."""


class _Recorder:
    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / f"spans-{os.getpid()}.jsonl"
        self._file: Any = None

    def add(self, name: str, start: float, end: float) -> None:
        if self._file is None or self.path.name != f"spans-{os.getpid()}.jsonl":  # a forked child: its own file
            self.path = self.path.with_name(f"spans-{os.getpid()}.jsonl")
            self._file = self.path.open("a", buffering=1)
        self._file.write(json.dumps([name, start, end]) + "\n")


def timed(name: str, fn: Callable[..., Any], record: Callable[[str, float, float], None]) -> Callable[..., Any]:
    """``fn`` (a function or a coroutine function), calling ``record(name, start, end)`` after each
    call with its wall-clock start and end, whether it returned or raised."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return await fn(*args, **kwargs)
            finally:
                record(name, start, time.time())
        return timed_coroutine

    @functools.wraps(fn)
    def timed_function(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            record(name, start, time.time())
    return timed_function


def lookup(module: ModuleType, target: str) -> tuple[Any, str, Any]:
    """Where ``target`` (``function`` or ``Class.method``) lives in ``module``: its owner (the module
    or the class), its name there, and what it is (None when it is not there)."""
    owner_name, _, attribute = target.rpartition(".")
    owner: Any = getattr(module, owner_name, None) if owner_name else module
    return owner, attribute, None if owner is None else vars(owner).get(attribute)


def wrap_module(module: ModuleType, targets: Sequence[str], record: Callable[[str, float, float], None]) -> list[str]:
    """Replace each of ``targets`` in ``module`` by its :func:`timed` self; returns the targets not
    found (a renamed function: the trace goes on without it)."""
    missing = []
    for target in targets:
        owner, attribute, found = lookup(module, target)
        name = f"{module.__name__}.{target}"
        if isinstance(found, staticmethod):
            setattr(owner, attribute, staticmethod(timed(name, found.__func__, record)))
        elif callable(found):
            setattr(owner, attribute, timed(name, found, record))
        else:
            missing.append(target)
    return missing


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, targets: Sequence[str],
                 record: Callable[[str, float, float], None]) -> None:
        self.inner, self.targets, self.record = inner, targets, record

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        for target in wrap_module(module, self.targets, self.record):
            print(f"bench trace: {module.__name__}.{target} not found, not traced", file=sys.stderr)


class _WrappingFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``spans`` as the other finders do, and wraps them once they have run:
    before any other module has imported a name from them."""

    def __init__(self, spans: dict[str, tuple[str, ...]], record: Callable[[str, float, float], None]) -> None:
        self.spans, self.record = spans, record

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.spans:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _WrappingLoader(spec.loader, self.spans[fullname], self.record)
        return spec


def install(out_dir: str | Path, spans: dict[str, tuple[str, ...]] = SPANS) -> None:
    """Trace ``spans`` in this process, into ``out_dir`` (call before the modules are imported)."""
    recorder = _Recorder(Path(out_dir))
    sys.meta_path.insert(0, _WrappingFinder(spans, recorder.add))


def read(out_dir: str | Path) -> list[tuple[str, float, float]]:
    """Every span written so far by every process (a line cut short by a process's end is skipped)."""
    spans: list[tuple[str, float, float]] = []
    for path in Path(out_dir).glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                name, start, end = json.loads(line)
            except ValueError:
                continue
            spans.append((name, float(start), float(end)))
    return spans


def breakdown(spans: list[tuple[str, float, float]], marks: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """For each function with spans inside the requests of ``marks`` (job id, client start, client
    end; one request in flight at a time): in how many requests it ran, the median of its first
    start after the request's start and of its total time in the request (ms), in order of start."""
    spans = sorted(spans, key=lambda span: span[1])
    starts = [span[1] for span in spans]
    per_name: dict[str, dict[str, list[float]]] = {}
    for _job, begin, finish in marks:
        seen: dict[str, list[float]] = {}
        for name, start, end in spans[bisect.bisect_left(starts, begin):bisect.bisect_right(starts, finish)]:
            first_and_total = seen.setdefault(name, [start, 0.0])
            first_and_total[1] += end - start
        for name, (first, total) in seen.items():
            entry = per_name.setdefault(name, {"start": [], "took": []})
            entry["start"].append((first - begin) * 1000)
            entry["took"].append(total * 1000)
    rows = [{"name": name, "requests": len(v["start"]), "start_ms": round(statistics.median(v["start"]), 2),
             "took_ms": round(statistics.median(v["took"]), 2)} for name, v in per_name.items()]
    return sorted(rows, key=lambda row: row["start_ms"])
