"""imagegate benchmark: the gateway against a direct call to a fake upstream, same client, same
~1 MiB images, every bar a ratio to what the direct upstream did in the same run. See
bench/README.md for what is measured and how to read it.

    .venv/bin/python -m bench.run [--mode distributed|embedded|both] [--quick] [--only abcdefg]
                                  [--peer .bench-peer-venv/bin/litellm]

Scenarios (each: direct first, then through imagegate; the bars are in bench/bars.py):

a. one request in flight, GPT and Gemini      -> p50 added      bar: <= 5x the direct p50, <= +10 ms
b. CPU per image under load (during c)        -> ms per image   bar: API+worker+PostgreSQL+Redis
                                                                     <= 10x the fake's CPU per answer
c. 50 in flight, closed loop, GPT and Gemini  -> requests/s     bar: >= 30 % (distributed) /
                                                                     16 % (embedded) of direct
d. 200 at once, upstream answers after 2 s    -> last answer    bar: <= direct + 0.5 s, 200 in flight
e. 1,000 at once (embedded 500), upstream 20 s -> last answer   bar: no failure, <= direct + 2 s,
                                                                     peak RSS of the gateway <= 1 GiB
f. n=10 against n=1, upstream 1 s             -> wall ratio     bar: <= 1.2x
g. a key with 1 M ledger rows and 100 k jobs  -> a and c        bar: within 10 % of a fresh key's

With --peer, LiteLLM's proxy runs a, c and d in the same run, and imagegate's figures are printed
as multiples of LiteLLM's (bars: >= 5x its throughput, <= 1/5 of its added latency).

Prints a table with the bar and PASS/MISS next to each figure, and writes everything (with CPU
seconds per process group for each phase) to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import bars, history, load, procstat, spans, timeline
from bench.peer import LiteLLMProcess
from bench.stack import FakeUpstreamProcess, Gateway

RESULTS = Path(__file__).resolve().parent / "results"
GPT = "gpt-image-2"
GEMINI = "gemini-3-pro-image"
SCENARIOS = "abcdefg"
PEER_SCENARIOS = "acd"  # what the peer gateway runs (b, e, f and g are about imagegate's own design)


@dataclass(frozen=True)
class Plan:
    latency_count: int
    latency_warmup: int
    throughput_s: float
    throughput_warmup_s: float
    concurrency: int
    burst_count: int
    burst_delay_s: float
    burst_reps: int
    big_burst_delay_s: float
    nx_reps: int
    nx_delay_s: float
    history_jobs: int
    history_ledger_rows: int


FULL = Plan(latency_count=50, latency_warmup=5, throughput_s=10.0, throughput_warmup_s=2.0, concurrency=50,
            burst_count=200, burst_delay_s=2.0, burst_reps=3, big_burst_delay_s=20.0, nx_reps=5, nx_delay_s=1.0,
            history_jobs=100_000, history_ledger_rows=1_000_000)
QUICK = Plan(latency_count=10, latency_warmup=2, throughput_s=3.0, throughput_warmup_s=1.0, concurrency=50,
             burst_count=200, burst_delay_s=2.0, burst_reps=1, big_burst_delay_s=20.0, nx_reps=2, nx_delay_s=1.0,
             history_jobs=100_000, history_ledger_rows=1_000_000)


@dataclass
class Row:
    scenario: str
    direct: str
    gateway: str
    compare: str
    bar: str
    verdict: str  # PASS, MISS or "" (information only)


@dataclass
class Target:
    """What the client talks to: imagegate in one mode, or the peer gateway."""

    name: str  # "imagegate" or "LiteLLM"
    mode: str  # "distributed", "embedded" or "peer"
    base_url: str
    key: str
    groups: dict[str, procstat.GroupSpec]  # process groups whose CPU is measured
    gateway_groups: tuple[str, ...]  # the groups that are the gateway (CPU per image, memory)
    models: tuple[str, ...] = (GPT, GEMINI)
    gateway: Gateway | None = None  # imagegate's stack (keys and database, for g and the timeline)


class RssPeak:
    """The peak of the summed resident memory of some process groups, sampled from a thread
    every ``every_s`` while the ``with`` block runs."""

    def __init__(self, groups: dict[str, procstat.GroupSpec], every_s: float = 0.2) -> None:
        self.groups, self.every_s = groups, every_s
        self.peak = 0
        self.peak_by_group: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-peak", daemon=True)

    def _run(self) -> None:
        while True:
            now = procstat.rss(self.groups)
            if sum(now.values()) > self.peak:
                self.peak, self.peak_by_group = sum(now.values()), now
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Bench:
    """One target's run: the client, the CPU probes, the rows and the raw results."""

    def __init__(self, upstream: FakeUpstreamProcess, target: Target, plan: Plan,
                 profile_dir: Path | None = None, trace_dir: Path | None = None) -> None:
        self.profile_flag = profile_dir / "measuring" if profile_dir else None
        self.trace_dir = trace_dir  # bench/spans.py: the gateway's function spans, placed on a's requests
        self.upstream = upstream
        self.target = target
        self.mode = target.mode
        self.key = target.key
        self.plan = plan
        self.rows: list[Row] = []
        self.wall_s = 0.0  # time spent measuring, and CPU used meanwhile by processes not in the bench
        self.other_cpu_s = 0.0
        self.results: dict[str, Any] = {}
        self.groups: dict[str, procstat.GroupSpec] = {
            **target.groups,
            "fake_upstream": [upstream.process.pid] if upstream.process else [],
            "bench_client": os.getpid(),  # this process alone, not the processes it started
        }

    def gateway_rss_groups(self) -> dict[str, procstat.GroupSpec]:
        """The gateway's own processes (imagegate's API and workers, or the peer): what e's memory
        bar counts. PostgreSQL and Redis are shared servers, measured apart."""
        return {k: v for k, v in self.target.groups.items() if k in self.target.gateway_groups
                and k not in ("postgres", "redis")}

    async def measured(self, phase: Callable[[], Awaitable[load.Sample]]) -> tuple[load.Sample, dict[str, float]]:
        if self.profile_flag:
            self.profile_flag.touch()  # bench/sampler.py samples the gateway while this file exists
        before = procstat.snapshot(self.groups)
        started = time.monotonic()
        try:
            sample = await phase()
        finally:
            if self.profile_flag:
                self.profile_flag.unlink(missing_ok=True)
        cpu = procstat.delta(before, procstat.snapshot(self.groups))
        self.wall_s += time.monotonic() - started
        self.other_cpu_s += max(0.0, cpu.get("other_processes", 0.0))
        return sample, cpu

    def _direct(self, model: str, *, n: int = 1, delay_s: float = 0.0) -> load.Work:
        up = self.upstream.base_url
        if model == GEMINI:  # what a client would do without a gateway: n calls
            return [load.direct_gemini(up, model, delay_s=delay_s)] * n
        return [load.direct_openai(up, model, n=n, delay_s=delay_s)]

    def _through(self, model: str, *, key: str | None = None, n: int = 1, delay_s: float = 0.0) -> load.Work:
        return [load.gateway_call(self.target.base_url, key or self.key, model, n=n, delay_s=delay_s)]

    def _gateway_cpu_ms(self, cpu: dict[str, float], units: int) -> float | None:
        return round(sum(cpu.get(g, 0.0) for g in self.target.gateway_groups) * 1000 / units, 2) if units else None

    # -- a. latency at one in flight ---------------------------------------------------------------
    async def _sequential(self, client: load.ClientPool, work: load.Work) -> tuple[load.Sample, dict[str, float]]:
        p = self.plan
        await load.sequential(client, work, count=0, warmup=p.latency_warmup)
        return await self.measured(lambda: load.sequential(client, work, count=p.latency_count, warmup=0))

    async def latency(self, client: load.ClientPool, model: str) -> None:
        direct, direct_cpu = await self._sequential(client, self._direct(model))
        gateway, gateway_cpu = await self._sequential(client, self._through(model))
        d, g = direct.summary(), gateway.summary()
        stack = self.target.gateway
        segments = timeline.breakdown(stack.stack.database_url, gateway.marks) if stack else {}
        added50 = _sub(g["p50_ms"], d["p50_ms"])
        added95 = _sub(g["p95_ms"], d["p95_ms"])
        v = bars.latency(d["p50_ms"], added50, errors=gateway.errors)
        self.results[f"a_latency_{model}"] = {"direct": d, "gateway": g, "added_p50_ms": added50,
                                              "added_p95_ms": added95, "bar": v.bar, "verdict": v.text,
                                              "cpu_s": {"direct": direct_cpu, "gateway": gateway_cpu},
                                              "gateway_cpu_ms_per_request": _per(gateway_cpu, gateway),
                                              "timeline_ms": segments}
        self.rows.append(Row(f"a. 1 in flight, {model}, p50 added", _ms(d["p50_ms"]), _ms(g["p50_ms"]),
                             _added(added50) + _times(g["p50_ms"], d["p50_ms"]), v.bar, v.text))
        self.rows.append(Row(f"   {model}, p95", _ms(d["p95_ms"]), _ms(g["p95_ms"]), _added(added95),
                             "(information)", ""))
        _errors(self.rows, "a", direct, gateway)
        if segments:
            self.rows.append(Row(f"   where it goes, {model}: in | queue | worker | out", "", "", " | ".join(
                f"{v:g} ms" for k, v in segments.items() if k != "requests"), "(information)", ""))
        cpu = _per(gateway_cpu, gateway)
        self.rows.append(Row(f"   gateway CPU per request, {model}", "", "", " | ".join(
            f"{k} {cpu.get(k, 0):.1f} ms" for k in self.target.gateway_groups), "(information)", ""))
        if self.trace_dir is not None:
            traced = spans.breakdown(spans.read(self.trace_dir), gateway.marks)
            self.results[f"a_latency_{model}"]["spans_ms"] = traced
            for row in traced:
                self.rows.append(Row(f"   {row['name']}", "", "", f"at {row['start_ms']:.2f} ms, "
                                     f"takes {row['took_ms']:.2f} ms", "trace", ""))

    # -- c. throughput at 50 in flight, and b. CPU per image meanwhile ------------------------------
    async def _closed_loop(self, client: load.ClientPool, work: load.Work) -> tuple[load.Sample, dict[str, float],
                                                                                      dict[str, Any]]:
        p = self.plan
        self.upstream.reset()
        sample, cpu = await self.measured(lambda: load.closed_loop(
            client, work, concurrency=p.concurrency, duration_s=p.throughput_s, warmup_s=p.throughput_warmup_s,
            min_answers=2 * p.concurrency))
        return sample, cpu, self.upstream.stats()

    async def throughput(self, client: load.ClientPool, model: str, only: str) -> None:
        p = self.plan
        direct, direct_cpu, _ = await self._closed_loop(client, self._direct(model))
        await asyncio.sleep(0.5)
        gateway, gateway_cpu, stats = await self._closed_loop(client, self._through(model))
        d_rps, g_rps = _rps(direct), _rps(gateway)
        calls = sum(int(v) for v in dict(stats.get("calls") or {}).values())
        gateway_ms = self._gateway_cpu_ms(gateway_cpu, gateway.units)
        fake_ms = round(gateway_cpu.get("fake_upstream", 0.0) * 1000 / calls, 3) if calls else None
        share = self.mode if self.mode in bars.THROUGHPUT_SHARE else "distributed"
        vc = bars.throughput(share, d_rps, g_rps, errors=gateway.errors)
        vb = bars.cpu_per_image(gateway_ms, fake_ms)
        self.results[f"c_throughput_{model}"] = {
            "concurrency": p.concurrency, "window_s": {"direct": direct.wall_s, "gateway": gateway.wall_s},
            "direct": direct.summary() | {"rps": round(d_rps, 1)},
            "gateway": gateway.summary() | {"rps": round(g_rps, 1)},
            "ratio": bars.ratio(g_rps, d_rps), "bar": vc.bar, "verdict": vc.text,
            "cpu_s": {"direct": direct_cpu, "gateway": gateway_cpu},
            "gateway_cpu_ms_per_request": _per(gateway_cpu, gateway),
        }
        self.results[f"b_cpu_{model}"] = {"gateway_ms_per_image": gateway_ms, "fake_ms_per_answer": fake_ms,
                                          "upstream_calls": calls, "units": gateway.units,
                                          "groups": list(self.target.gateway_groups), "bar": vb.bar,
                                          "verdict": vb.text if self.mode == "distributed" else ""}
        if "b" in only:
            groups = " + ".join(self.target.gateway_groups)
            cpu = _per(gateway_cpu, gateway)
            self.rows.append(Row(f"b. CPU per image under load, {model} ({groups})",
                                 f"fake {fake_ms:.2f} ms" if fake_ms else "-",
                                 f"{gateway_ms:.1f} ms" if gateway_ms is not None else "-",
                                 f"{gateway_ms / fake_ms:.1f}x fake" if gateway_ms and fake_ms else "-",
                                 vb.bar if self.mode == "distributed" else "(bar: distributed mode)",
                                 vb.text if self.mode == "distributed" else ""))
            self.rows.append(Row(f"   CPU per image, {model}", "", "", " | ".join(
                f"{k} {cpu.get(k, 0):.1f} ms" for k in self.target.gateway_groups), "(information)", ""))
        if "c" in only:
            self.rows.append(Row(f"c. {p.concurrency} in flight, {model}", f"{d_rps:.1f} req/s", f"{g_rps:.1f} req/s",
                                 f"{g_rps / d_rps:.2f}x direct" if d_rps else "-",
                                 vc.bar if self.mode in bars.THROUGHPUT_SHARE else "(information)",
                                 vc.text if self.mode in bars.THROUGHPUT_SHARE else ""))
            self.rows.append(Row(f"   latency under load, {model}, p50 / p95",
                                 f"{_ms(direct.summary()['p50_ms'])} / {_ms(direct.summary()['p95_ms'])}",
                                 f"{_ms(gateway.summary()['p50_ms'])} / {_ms(gateway.summary()['p95_ms'])}",
                                 "", "(information)", ""))
            _errors(self.rows, "c", direct, gateway)

    # -- d and e. many at once against a slow upstream ---------------------------------------------
    async def _bursts(self, client: load.ClientPool, model: str, *, count: int, delay_s: float, reps: int,
                      timeout_s: float) -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
        failures: dict[str, str] = {}
        for _ in range(reps):
            for side, work in (("direct", self._direct(model, delay_s=delay_s)),
                               ("gateway", self._through(model, delay_s=delay_s))):
                self.upstream.reset()
                with RssPeak(self.gateway_rss_groups()) as memory:
                    sample, cpu = await self.measured(functools.partial(load.burst, client, work, count=count,
                                                                        timeout_s=timeout_s))
                stats = self.upstream.stats()
                runs[side].append(sample.summary() | {
                    "cpu_s": cpu, "upstream_peak_in_flight": stats["peak_in_flight"], "upstream_calls": stats["calls"],
                    "gateway_peak_rss_bytes": memory.peak, "gateway_peak_rss_by_group": memory.peak_by_group})
                if sample.errors:
                    failures.setdefault(side, f"{sample.errors} errors, first: {sample.first_error}")
                await asyncio.sleep(1.0)
        d_wall = bars.median([r["wall_s"] for r in runs["direct"]]) or 0.0
        g_wall = bars.median([r["wall_s"] for r in runs["gateway"]]) or 0.0
        return {"count": count, "upstream_delay_s": delay_s, "runs": runs, "direct_wall_s": d_wall,
                "gateway_wall_s": g_wall, "errors": sum(r["errors"] for r in runs["gateway"]),
                "peak_in_flight": min(int(r["upstream_peak_in_flight"]) for r in runs["gateway"]),
                "peak_rss_bytes": max(int(r["gateway_peak_rss_bytes"]) for r in runs["gateway"]),
                "failures": failures}

    def _failures(self, failures: dict[str, str]) -> None:
        for side, text in failures.items():
            self.rows.append(Row(f"   ! {side}: {text}"[:160], "", "", "", "", ""))

    async def burst(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        r = await self._bursts(client, model, count=p.burst_count, delay_s=p.burst_delay_s, reps=p.burst_reps,
                               timeout_s=p.burst_delay_s + 28)
        v = bars.burst(r["direct_wall_s"], r["gateway_wall_s"], r["peak_in_flight"], p.burst_count, errors=r["errors"])
        self.results[f"d_burst_{model}"] = r | {"bar": v.bar, "verdict": v.text}
        self.rows.append(Row(f"d. {p.burst_count} at once, upstream {p.burst_delay_s:g} s, {model}, last answer",
                             f"{r['direct_wall_s']:.2f} s", f"{r['gateway_wall_s']:.2f} s",
                             f"+{(r['gateway_wall_s'] - r['direct_wall_s']) * 1000:.0f} ms", v.bar, v.text))
        self.rows.append(Row("   upstream calls in flight at the peak (fewest over the runs)", "", "",
                             f"{r['peak_in_flight']} of {p.burst_count}", "in the bar above", ""))
        self.rows.append(Row("   peak RSS of the gateway's processes", "", "", _gib(r["peak_rss_bytes"]),
                             "(information)", ""))
        self._failures(r["failures"])

    async def big_burst(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        count = bars.BIG_BURST_COUNT.get(self.mode, bars.BIG_BURST_COUNT["distributed"])
        r = await self._bursts(client, model, count=count, delay_s=p.big_burst_delay_s, reps=1,
                               timeout_s=p.big_burst_delay_s + 100)
        v = bars.big_burst(r["direct_wall_s"], r["gateway_wall_s"], r["peak_rss_bytes"], errors=r["errors"])
        self.results[f"e_big_burst_{model}"] = r | {"bar": v.bar, "verdict": v.text}
        ok = count - r["errors"]
        self.rows.append(Row(f"e. {count} at once, upstream {p.big_burst_delay_s:g} s, {model}, last answer",
                             f"{r['direct_wall_s']:.2f} s", f"{r['gateway_wall_s']:.2f} s",
                             f"{ok}/{count} ok, peak RSS {_gib(r['peak_rss_bytes'])}", v.bar, v.text))
        self.rows.append(Row("   upstream calls in flight at the peak", "", "", f"{r['peak_in_flight']} of {count}",
                             "(information)", ""))
        self._failures(r["failures"])

    # -- f. n=10 vs n=1 ----------------------------------------------------------------------------
    async def n10(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        delay = p.nx_delay_s
        medians: dict[str, float | None] = {}
        raw: dict[str, Any] = {}
        failed: list[str] = []
        for name, work in (("direct_n1", self._direct(model, n=1, delay_s=delay)),
                           ("direct_n10", self._direct(model, n=10, delay_s=delay)),
                           ("gateway_n1", self._through(model, n=1, delay_s=delay)),
                           ("gateway_n10", self._through(model, n=10, delay_s=delay))):
            sample, cpu = await self.measured(
                functools.partial(load.sequential, client, work, count=p.nx_reps, warmup=1))
            raw[name] = sample.summary() | {"cpu_s": cpu}
            medians[name] = (sample.summary()["p50_ms"] or 0) / 1000 or None
            if sample.errors:
                failed.append(f"{name}: {sample.errors} errors, {sample.first_error}")
        d_ratio = bars.ratio(medians["direct_n10"], medians["direct_n1"])
        g_ratio = bars.ratio(medians["gateway_n10"], medians["gateway_n1"])
        v = bars.nx(g_ratio, failed=bool(failed))
        self.results[f"f_n10_{model}"] = {"upstream_delay_s": delay, "reps": p.nx_reps, "runs": raw,
                                          "direct_ratio": d_ratio, "gateway_ratio": g_ratio, "bar": v.bar,
                                          "verdict": v.text}
        how = "10 parallel calls" if model == GEMINI else "one call"
        self.rows.append(Row(f"f. n=10 / n=1, upstream {delay:g} s, {model} ({how})",
                             f"{d_ratio:.2f}x" if d_ratio else "-", f"{g_ratio:.2f}x" if g_ratio else "-",
                             f"n1 {_s(medians['gateway_n1'])}, n10 {_s(medians['gateway_n10'])}", v.bar, v.text))
        for line in failed:
            self.rows.append(Row(f"   ! {line}"[:160], "", "", "", "", ""))

    # -- g. a key with a long history against a fresh one ------------------------------------------
    async def history(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        stack = self.target.gateway
        if stack is None:
            return
        fresh, heavy = stack.stack.create_key("bench-fresh"), stack.stack.create_key("bench-history")
        first = await load.send(client, self._through(model, key=heavy)[0], verify=True)
        if not first.ok or not first.job_id:
            self.rows.append(Row(f"g. ! the history key's first request failed: {first.error}"[:160], "", "", "",
                                 "", "MISS"))
            return
        seeded = await asyncio.to_thread(history.seed, stack.stack.database_url, first.job_id,
                                         jobs=p.history_jobs, ledger_rows=p.history_ledger_rows)
        figures: dict[str, dict[str, Any]] = {}
        for name, key in (("fresh", fresh), ("history", heavy)):
            sample, _ = await self._sequential(client, self._through(model, key=key))
            figures[name] = {"latency": sample.summary()}
        for name, key in (("fresh", fresh), ("history", heavy)):
            sample, _, _ = await self._closed_loop(client, self._through(model, key=key))
            figures[name]["rps"] = round(_rps(sample), 1)
            figures[name]["closed_loop"] = sample.summary()
        f_p50, h_p50 = figures["fresh"]["latency"]["p50_ms"], figures["history"]["latency"]["p50_ms"]
        f_rps, h_rps = figures["fresh"]["rps"], figures["history"]["rps"]
        errors = sum(int(f[k]["errors"]) for f in figures.values() for k in ("latency", "closed_loop"))
        va, vc = bars.history_latency(f_p50, h_p50), bars.history_throughput(f_rps, h_rps)
        self.results[f"g_history_{model}"] = {"seeded": seeded, "figures": figures, "errors": errors,
                                              "latency_bar": va.bar, "latency_verdict": va.text,
                                              "throughput_bar": vc.bar, "throughput_verdict": vc.text}
        rows = seeded["inserted"]
        self.rows.append(Row(f"g. history key ({rows['ledger_entries']:,} ledger rows, {rows['jobs']:,} jobs, "
                             f"seeded in {seeded['seconds']:g} s)", "", "", "", "(information)", ""))
        self.rows.append(Row(f"   a with it, {model}, p50 (fresh key -> history key)", _ms(f_p50), _ms(h_p50),
                             f"{bars.ratio(h_p50, f_p50) or 0:.2f}x fresh", va.bar, _verdict(va.ok and not errors)))
        self.rows.append(Row(f"   c with it, {model} (fresh key -> history key)", f"{f_rps:.1f} req/s",
                             f"{h_rps:.1f} req/s", f"{bars.ratio(h_rps, f_rps) or 0:.2f}x fresh", vc.bar,
                             _verdict(vc.ok and not errors)))
        if errors:
            first_error = next((f[k]["first_error"] for f in figures.values() for k in ("latency", "closed_loop")
                                if f[k]["first_error"]), "")
            self.rows.append(Row(f"   ! g: {errors} errors, first: {first_error}"[:160], "", "", "", "", ""))

    async def run(self, only: str = SCENARIOS) -> None:
        big = bars.BIG_BURST_COUNT["distributed"] if "e" in only else 0
        client = load.new_client(connections=max(300, self.plan.burst_count + 50, big + 50))
        models = self.target.models
        try:
            if "a" in only:
                for model in models:
                    await self.latency(client, model)
            if "b" in only or "c" in only:
                for model in models:
                    await self.throughput(client, model, only)
                    await asyncio.sleep(1.0)
            if "d" in only:
                await self.burst(client, GPT)
            if "e" in only:
                await self.big_burst(client, GPT)
            if "f" in only:
                for model in models:
                    await self.n10(client, model)
            if "g" in only:
                await self.history(client, GPT)
        finally:
            await client.aclose()


# -- formatting ----------------------------------------------------------------------------------

def _sub(a: float | None, b: float | None) -> float | None:
    return round(a - b, 2) if a is not None and b is not None else None


def _per(cpu: dict[str, float], sample: load.Sample) -> dict[str, float]:
    done = sample.units or len(sample.seconds) + sample.errors
    return {k: round(v * 1000 / done, 2) for k, v in cpu.items()} if done else {}


def _rps(sample: load.Sample) -> float:
    """Requests answered per second in a closed loop's measured window."""
    return len(sample.seconds) / sample.wall_s if sample.wall_s else 0.0


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"


def _added(value: float | None) -> str:
    return f"{value:+.1f} ms" if value is not None else "-"


def _times(a: float | None, b: float | None) -> str:
    r = bars.ratio(a, b)
    return f" ({r:.1f}x direct)" if r is not None else ""


def _gib(value: int) -> str:
    return f"{value / (1 << 30):.2f} GiB"


def _verdict(ok: bool) -> str:
    return bars.verdict(ok)


def _errors(rows: list[Row], tag: str, direct: load.Sample, gateway: load.Sample) -> None:
    for side, sample in (("direct", direct), ("gateway", gateway)):
        if sample.errors:
            rows.append(Row(f"   ! {tag}: {side} errors: {sample.errors}, first: {sample.first_error}"[:160],
                            "", "", "", "", ""))


def table(title: str, rows: list[Row], columns: tuple[str, ...] = (
        "scenario", "direct", "imagegate", "imagegate vs direct", "bar", "result")) -> str:
    """The rows as a text table; notes (rows with only a scenario and a text) run past the columns."""
    def is_note(row: Row) -> bool:
        return not (row.direct or row.gateway or row.verdict)

    header = Row(*columns)
    fields = list(Row.__dataclass_fields__)
    widths = [max(len(getattr(r, f)) for r in [header, *rows] if not is_note(r)) for f in fields]
    lines = [title, ""]
    for i, row in enumerate([header, *rows]):
        if is_note(row):
            bar = f"  ({row.bar})" if row.bar not in ("", "(information)") else ""
            lines.append(f"{row.scenario.ljust(widths[0])}  {row.compare}{bar}".rstrip())
            continue
        cells = [getattr(row, f) for f in fields]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def peer_rows(imagegate: dict[str, Any], peer: dict[str, Any], model: str = GPT) -> list[Row]:
    """imagegate's figures (one mode's scenarios) as multiples of the peer's, with the peer bars."""
    rows: list[Row] = []
    a_i, a_p = imagegate.get(f"a_latency_{model}"), peer.get(f"a_latency_{model}")
    if a_i and a_p:
        v = bars.peer_latency(a_i["added_p50_ms"], a_p["added_p50_ms"])
        fraction = bars.ratio(a_i["added_p50_ms"], a_p["added_p50_ms"])
        rows.append(Row(f"a. 1 in flight, {model}, p50 added", _added(a_p["added_p50_ms"]),
                        _added(a_i["added_p50_ms"]), f"{fraction:.2f}x LiteLLM's" if fraction is not None else "-",
                        v.bar, v.text))
    c_i, c_p = imagegate.get(f"c_throughput_{model}"), peer.get(f"c_throughput_{model}")
    if c_i and c_p:
        i_rps, p_rps = c_i["gateway"]["rps"], c_p["gateway"]["rps"]
        v = bars.peer_throughput(i_rps, p_rps)
        multiple = bars.ratio(i_rps, p_rps)
        rows.append(Row(f"c. 50 in flight, {model}", f"{p_rps:.1f} req/s", f"{i_rps:.1f} req/s",
                        f"{multiple:.2f}x LiteLLM's" if multiple is not None else "-", v.bar, v.text))
    d_i, d_p = imagegate.get(f"d_burst_{model}"), peer.get(f"d_burst_{model}")
    if d_i and d_p:
        rows.append(Row(f"d. 200 at once, upstream 2 s, {model}, last answer", f"{d_p['gateway_wall_s']:.2f} s",
                        f"{d_i['gateway_wall_s']:.2f} s",
                        f"over direct: +{d_i['gateway_wall_s'] - d_i['direct_wall_s']:.2f} s vs "
                        f"+{d_p['gateway_wall_s'] - d_p['direct_wall_s']:.2f} s", "(information)", ""))
        rows.append(Row("   upstream calls in flight at the peak", str(d_p["peak_in_flight"]),
                        str(d_i["peak_in_flight"]), "", "(information)", ""))
        rows.append(Row("   peak RSS of the gateway's processes", _gib(d_p["peak_rss_bytes"]),
                        _gib(d_i["peak_rss_bytes"]), "", "(information)", ""))
    return rows


def _git(*args: str) -> str:
    """Read-only git queries (the commit measured, and whether the tree had local changes)."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[1])
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# -- main ----------------------------------------------------------------------------------------

def _print_run(title: str, bench: Bench) -> float:
    """Print one target's table (and a warning if the machine was busy); the other processes' cores."""
    other_cores = bench.other_cpu_s / bench.wall_s if bench.wall_s else 0.0
    columns = ("scenario", "direct", bench.target.name, f"{bench.target.name} vs direct", "bar", "result")
    print("\n" + table(title, bench.rows, columns) + "\n", flush=True)
    if other_cores > 0.1:
        print(f"WARNING: processes outside the bench used {other_cores:.2f} of the {os.cpu_count()} cores "
              "while it measured; these figures understate the gateway.", flush=True)
    return other_cores


def run_mode(mode: str, upstream: FakeUpstreamProcess, args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    extra_env: dict[str, str] = {}
    profile_dir: Path | None = None
    trace_dir: Path | None = None
    site = Path(__file__).resolve().parent / "_profile_site"
    if args.profile:
        profile_dir = Path(tempfile.mkdtemp(prefix=f"imagegate-bench-profile-{mode}-"))
        extra_env["IMAGEGATE_BENCH_PROFILE"] = str(profile_dir)
    if args.trace:
        trace_dir = Path(tempfile.mkdtemp(prefix=f"imagegate-bench-trace-{mode}-"))
        extra_env["IMAGEGATE_BENCH_TRACE"] = str(trace_dir)
    if extra_env:
        extra_env["PYTHONPATH"] = f"{site}{os.pathsep}{site.parents[1]}"
    gateway = Gateway(mode=mode, upstream=upstream, api_workers=args.api_workers,
                      worker_processes=args.worker_processes, total_concurrency=args.concurrency,
                      log_level=args.log_level, db_connections=args.db_connections, extra_env=extra_env)
    print(f"\n== {mode}: starting imagegate ...", file=sys.stderr, flush=True)
    try:
        gateway.start()
        key = gateway.stack.create_key("bench")
        groups: dict[str, procstat.GroupSpec] = {
            "api": [gateway.stack.api.pid] if gateway.stack.api else [],
            "workers": [w.pid for w in gateway.stack.workers],
        }
        if gateway.database:
            groups["postgres"] = ("postgres", gateway.database)  # the backends serving our database
            groups["redis"] = ("redis-server", "")
        target = Target("imagegate", mode, gateway.stack.base_url, key, groups,
                        tuple(g for g in ("api", "workers", "postgres", "redis") if groups.get(g)),
                        gateway=gateway)
        bench = Bench(upstream, target, plan, profile_dir, trace_dir)
        started = time.monotonic()
        _run_async(bench.run(args.only))
        errors = gateway.log_findings()
        env = gateway.stack.env
        shape = (f"{args.api_workers} API processes, {args.worker_processes} worker processes x "
                 f"{env['IMAGEGATE_WORKER_CONCURRENCY']} tasks at once, DB pool "
                 f"{env['IMAGEGATE_DB_POOL_SIZE']}+{env['IMAGEGATE_DB_MAX_OVERFLOW']} per process"
                 if mode == "distributed"
                 else f"1 process, in-process worker x {env['IMAGEGATE_WORKER_CONCURRENCY']} tasks at once")
        title = (f"imagegate bench: {mode} mode ({shape}), {'quick' if args.quick else 'full'} run, "
                 f"commit {_git('rev-parse', '--short', 'HEAD') or '?'}")
        other_cores = _print_run(title, bench)
        if errors:
            print("gateway logs (exceptions, errors, warnings, task retries):\n  " + "\n  ".join(errors), flush=True)
        return {"mode": mode, "shape": shape, "duration_s": round(time.monotonic() - started, 1),
                "rows": [asdict(r) for r in bench.rows], "scenarios": bench.results, "log_findings": errors,
                "other_processes_cores": round(other_cores, 2),
                "env": {k: v for k, v in env.items() if k.startswith("IMAGEGATE_") and "KEY" not in k}}
    except Exception:
        print(gateway.stack.logs(tail=3000), file=sys.stderr)
        raise
    finally:
        gateway.stop(keep=args.keep)
        if profile_dir is not None:
            from bench import sampler

            print("\nprofile of the gateway's processes (the figures above are distorted by it):\n"
                  + sampler.report(profile_dir), flush=True)
            if args.keep:
                print(f"kept {profile_dir} (python -m bench.sampler {profile_dir} prints it again)", file=sys.stderr)
            else:
                shutil.rmtree(profile_dir, ignore_errors=True)
        if trace_dir is not None:
            shutil.rmtree(trace_dir, ignore_errors=True)


def run_peer(upstream: FakeUpstreamProcess, args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """The peer gateway (LiteLLM's proxy) through the same scenarios (a, c, d), GPT only."""
    workdir = Path(tempfile.mkdtemp(prefix="imagegate-bench-peer-"))
    peer = LiteLLMProcess(binary=Path(args.peer).absolute(), upstream_url=upstream.base_url, model=GPT, workdir=workdir)
    print("\n== peer: starting LiteLLM's proxy ...", file=sys.stderr, flush=True)
    try:
        peer.start()
        pid = peer.process.pid if peer.process else 0
        target = Target("LiteLLM", "peer", peer.base_url, peer.key, {"litellm": [pid]}, ("litellm",), models=(GPT,))
        bench = Bench(upstream, target, plan)
        started = time.monotonic()
        only = "".join(s for s in args.only if s in PEER_SCENARIOS)
        _run_async(bench.run(only))
        for row in bench.rows:  # imagegate's bars are not the peer's: its figures are for the comparison
            if row.verdict:
                row.bar, row.verdict = "(information)", ""
        version = peer.version()
        title = (f"peer: LiteLLM proxy {version}, 1 worker, no database, "
                 f"{'quick' if args.quick else 'full'} run")
        other_cores = _print_run(title, bench)
        return {"version": version, "duration_s": round(time.monotonic() - started, 1),
                "rows": [asdict(r) for r in bench.rows], "scenarios": bench.results,
                "other_processes_cores": round(other_cores, 2)}
    except Exception:
        if peer.process is not None:
            print(peer.process.output()[-3000:], file=sys.stderr)
        raise
    finally:
        peer.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _raise_file_limit(wanted: int = 16_384) -> None:
    """Scenario e holds over a thousand connections in the client, the fake and the gateway (which
    inherit this limit): raise the soft limit on open files towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def wait_for_quiet(max_wait_s: float, *, threshold_cores: float = 0.2, window_s: float = 2.0) -> float:
    """Wait (at most ``max_wait_s``) until the machine is nearly idle; returns the busy cores seen
    last. The bar assumes the 2 cores are the bench's: other load makes every figure worse."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = procstat.system_busy()
        time.sleep(window_s)
        busy = (procstat.system_busy() - before) / window_s
        if busy <= threshold_cores or time.monotonic() >= deadline:
            if busy > threshold_cores:
                print(f"WARNING: the machine is busy ({busy:.2f} cores used by other processes); "
                      "the figures will be low.", file=sys.stderr, flush=True)
            return round(busy, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["distributed", "embedded", "both"], default="distributed")
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario (smoke run)")
    parser.add_argument("--api-workers", type=int, default=2, help="imagegate serve --workers (distributed)")
    parser.add_argument("--worker-processes", type=int, default=2, help="imagegate worker processes (distributed)")
    parser.add_argument("--concurrency", type=int, default=Gateway.total_concurrency,
                        help="images all workers run at once (IMAGEGATE_WORKER_CONCURRENCY, split over processes; "
                             "enough for all of scenario e)")
    parser.add_argument("--log-level", default="INFO", help="IMAGEGATE_LOG_LEVEL of the gateway")
    parser.add_argument("--db-connections", type=int, default=80,
                        help="PostgreSQL connections shared out over the API and worker processes' pools "
                             "(IMAGEGATE_DB_POOL_SIZE + IMAGEGATE_DB_MAX_OVERFLOW per process)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the machine to be idle (other load skews results)")
    parser.add_argument("--keep", action="store_true", help="keep the gateway's temporary dir (logs, images)")
    parser.add_argument("--only", default=SCENARIOS, help=f"scenarios to run, e.g. 'a' or 'bc' (default: {SCENARIOS})")
    parser.add_argument("--peer", metavar="LITELLM", default=None,
                        help="also run a, c and d against LiteLLM's proxy (the path of its `litellm` command, "
                             "as `make bench-peer` installs it) and compare")
    parser.add_argument("--profile", action="store_true",
                        help="sample the gateway's Python stacks, weighted by thread CPU time, while measuring "
                             "(bench/sampler.py), and print where the CPU went")
    parser.add_argument("--trace", action="store_true",
                        help="time the gateway's main functions in every process (bench/spans.py) and place "
                             "them on scenario a's requests: when each starts and how long it takes (a line "
                             "written per call distorts the other scenarios: run it with --only a)")
    args = parser.parse_args(argv)
    if not args.only or set(args.only) - set(SCENARIOS):
        parser.error(f"--only takes letters of {SCENARIOS}")
    plan = QUICK if args.quick else FULL
    modes = ["distributed", "embedded"] if args.mode == "both" else [args.mode]
    _raise_file_limit()

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict[str, Any] = {
        "timestamp": stamp, "commit": _git("rev-parse", "--short", "HEAD") or None,
        "local_changes": [line[3:] for line in _git("status", "--porcelain", "--", "api", "core", "worker",
                                                     "imagegate", "migrations").splitlines()],
        "quick": args.quick, "plan": asdict(plan),
        "only": args.only, "profiled": args.profile, "traced": args.trace,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                 "loadavg_at_start": os.getloadavg()},
        "bars": {k: v for k, v in vars(bars).items() if k.isupper()},
        "modes": {},
    }
    report["host"]["busy_cores_at_start"] = wait_for_quiet(args.wait_quiet)
    log_dir = Path(tempfile.mkdtemp(prefix="imagegate-bench-fake-"))
    upstream = FakeUpstreamProcess(log_dir=log_dir)
    upstream.start()
    try:
        report["upstream"] = upstream.stats()
        if args.peer:
            report["peer"] = run_peer(upstream, args, plan)
        for mode in modes:
            report["modes"][mode] = run_mode(mode, upstream, args, plan)
    finally:
        upstream.stop()
        if not args.keep:
            shutil.rmtree(log_dir, ignore_errors=True)
    if args.peer:
        report["peer"]["comparison"] = {}
        for mode, result in report["modes"].items():
            rows = peer_rows(result["scenarios"], report["peer"]["scenarios"])
            report["peer"]["comparison"][mode] = [asdict(r) for r in rows]
            print("\n" + table(f"imagegate ({mode}) against LiteLLM's proxy, same run, same fake upstream", rows,
                               ("scenario", "LiteLLM", "imagegate", "imagegate vs LiteLLM", "bar", "result")) + "\n")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    misses = [f"{mode}: {r['scenario'].strip()}" for mode, m in report["modes"].items() for r in m["rows"]
              if r["verdict"] == "MISS"]
    misses += [f"vs LiteLLM ({mode}): {r['scenario'].strip()}"
               for mode, rows in report.get("peer", {}).get("comparison", {}).items() for r in rows
               if r["verdict"] == "MISS"]
    print(f"results: {path}")
    print(f"{len(misses)} bar(s) missed" + (":\n  " + "\n  ".join(misses) if misses else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
