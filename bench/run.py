"""imagegate benchmark: the gateway against a direct call to a fake upstream, same client, same
~1 MiB images. See bench/README.md for what is measured and how to read it.

    .venv/bin/python -m bench.run [--mode distributed|embedded|both] [--quick] [--keep]

Scenarios (each: direct first, then through imagegate):

a. latency at one request in flight (p50, p95) -> added ms          bar: p50 added <= 10 ms
b. throughput at 50 concurrent (closed loop)   -> requests/s        bar: >= 150 requests/s
c. 200 requests at once against a 2 s upstream -> wall time         bar: <= direct + 0.5 s (ideal 2 s)
d. n=10 vs n=1 against a slow upstream         -> wall-time ratio   bar: n=10 <= 1.25 x n=1

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
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import load, procstat, timeline
from bench.stack import FakeUpstreamProcess, Gateway

RESULTS = Path(__file__).resolve().parent / "results"
GPT = "gpt-image-2"
GEMINI = "gemini-3-pro-image"

BAR_ADDED_MS = 10.0
BAR_RPS = 150.0
BAR_BURST_SLACK = 0.25  # "about 2 s": at most 25 % of the upstream's delay over the direct run
BAR_N10_RATIO = 1.25  # "about as fast": n=10 at most 25 % slower than n=1


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
    nx_reps: int
    nx_delay_s: float


FULL = Plan(latency_count=50, latency_warmup=5, throughput_s=10.0, throughput_warmup_s=2.0, concurrency=50,
            burst_count=200, burst_delay_s=2.0, burst_reps=3, nx_reps=5, nx_delay_s=1.0)
QUICK = Plan(latency_count=10, latency_warmup=2, throughput_s=3.0, throughput_warmup_s=1.0, concurrency=50,
             burst_count=200, burst_delay_s=2.0, burst_reps=1, nx_reps=2, nx_delay_s=0.5)


@dataclass
class Row:
    scenario: str
    direct: str
    gateway: str
    compare: str
    bar: str
    verdict: str  # PASS, MISS or "" (information only)


class Bench:
    """One mode's run: the stack, the client, the CPU probes, the rows and the raw results."""

    def __init__(self, upstream: FakeUpstreamProcess, gateway: Gateway, key: str, plan: Plan,
                 profile_dir: Path | None = None) -> None:
        self.profile_flag = profile_dir / "measuring" if profile_dir else None
        self.upstream = upstream
        self.gateway = gateway
        self.key = key
        self.plan = plan
        self.rows: list[Row] = []
        self.wall_s = 0.0  # time spent measuring, and CPU used meanwhile by processes not in the bench
        self.other_cpu_s = 0.0
        self.results: dict[str, Any] = {}
        self.groups: dict[str, procstat.GroupSpec] = {
            "api": [gateway.stack.api.pid] if gateway.stack.api else [],
            "workers": [w.pid for w in gateway.stack.workers],
            "fake_upstream": [upstream.process.pid] if upstream.process else [],
            "bench_client": os.getpid(),  # this process alone, not the processes it started
        }
        if gateway.database:
            self.groups["postgres"] = ("postgres", gateway.database)  # the backends serving our database
            self.groups["redis"] = ("redis-server", "")

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

    # -- a. latency at one in flight ---------------------------------------------------------------
    async def latency(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        direct_work = [load.direct_gemini(self.upstream.base_url, model) if model == GEMINI
                       else load.direct_openai(self.upstream.base_url, model)]
        gateway_work = [load.gateway_call(self.gateway.stack.base_url, self.key, model)]
        await load.sequential(client, direct_work, count=0, warmup=p.latency_warmup)
        direct, direct_cpu = await self.measured(
            lambda: load.sequential(client, direct_work, count=p.latency_count, warmup=0))
        await load.sequential(client, gateway_work, count=0, warmup=p.latency_warmup)
        gateway, gateway_cpu = await self.measured(
            lambda: load.sequential(client, gateway_work, count=p.latency_count, warmup=0))
        d, g = direct.summary(), gateway.summary()
        segments = timeline.breakdown(self.gateway.stack.database_url, gateway.marks)
        added50 = _sub(g["p50_ms"], d["p50_ms"])
        added95 = _sub(g["p95_ms"], d["p95_ms"])
        self.results[f"a_latency_{model}"] = {"direct": d, "gateway": g, "added_p50_ms": added50,
                                              "added_p95_ms": added95, "cpu_s": {"direct": direct_cpu,
                                                                                 "gateway": gateway_cpu},
                                              "gateway_cpu_ms_per_request": _per(gateway_cpu, gateway),
                                              "timeline_ms": segments}
        self.rows.append(Row(f"a. latency, 1 in flight, {model}, p50", _ms(d["p50_ms"]), _ms(g["p50_ms"]),
                             _added(added50), f"<= +{BAR_ADDED_MS:g} ms",
                             _verdict(added50 is not None and added50 <= BAR_ADDED_MS and not gateway.errors)))
        self.rows.append(Row(f"   {' ' * len('latency, 1 in flight, ')}{model}, p95", _ms(d["p95_ms"]),
                             _ms(g["p95_ms"]), _added(added95), "(information)", ""))
        _errors(self.rows, "a", direct, gateway)
        cpu = _per(gateway_cpu, gateway)
        self.rows.append(Row(f"   where it goes, {model}: in | queue | worker | out", "", "", " | ".join(
            f"{v:g} ms" for k, v in segments.items() if k != "requests"), "(information)", ""))
        self.rows.append(Row(f"   gateway CPU per request, {model}", "", "", " | ".join(
            f"{k} {cpu.get(k, 0):.1f} ms" for k in ("api", "workers", "postgres", "redis")), "(information)", ""))

    # -- b. throughput at 50 concurrent ------------------------------------------------------------
    async def throughput(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        direct_work = [load.direct_gemini(self.upstream.base_url, model) if model == GEMINI
                       else load.direct_openai(self.upstream.base_url, model)]
        gateway_work = [load.gateway_call(self.gateway.stack.base_url, self.key, model)]

        def phase(work: load.Work) -> Callable[[], Awaitable[load.Sample]]:
            return lambda: load.closed_loop(client, work, concurrency=p.concurrency, duration_s=p.throughput_s,
                                            warmup_s=p.throughput_warmup_s)

        direct, direct_cpu = await self.measured(phase(direct_work))
        await asyncio.sleep(0.5)
        gateway, gateway_cpu = await self.measured(phase(gateway_work))
        d_rps, g_rps = len(direct.seconds) / p.throughput_s, len(gateway.seconds) / p.throughput_s
        self.results[f"b_throughput_{model}"] = {
            "concurrency": p.concurrency, "window_s": p.throughput_s,
            "direct": direct.summary() | {"rps": round(d_rps, 1)},
            "gateway": gateway.summary() | {"rps": round(g_rps, 1)},
            "ratio": round(g_rps / d_rps, 3) if d_rps else None,
            "cpu_s": {"direct": direct_cpu, "gateway": gateway_cpu},
            "gateway_cpu_ms_per_request": _per(gateway_cpu, gateway),
        }
        self.rows.append(Row(f"b. throughput, {p.concurrency} concurrent, {model}", f"{d_rps:.1f} req/s",
                             f"{g_rps:.1f} req/s", f"{g_rps / d_rps:.2f}x direct" if d_rps else "-",
                             f">= {BAR_RPS:g} req/s", _verdict(g_rps >= BAR_RPS and not gateway.errors)))
        self.rows.append(Row(f"   latency under load, {model}, p50 / p95",
                             f"{_ms(direct.summary()['p50_ms'])} / {_ms(direct.summary()['p95_ms'])}",
                             f"{_ms(gateway.summary()['p50_ms'])} / {_ms(gateway.summary()['p95_ms'])}",
                             "", "(information)", ""))
        _errors(self.rows, "b", direct, gateway)

    # -- c. 200 in flight against a slow upstream --------------------------------------------------
    async def burst(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        delay = p.burst_delay_s
        direct_work = [load.direct_openai(self.upstream.base_url, model, delay_s=delay)]
        gateway_work = [load.gateway_call(self.gateway.stack.base_url, self.key, model, delay_s=delay)]
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
        failures: dict[str, load.Sample] = {}
        for _ in range(p.burst_reps):
            for side, work in (("direct", direct_work), ("gateway", gateway_work)):
                self.upstream.reset()
                sample, cpu = await self.measured(functools.partial(load.burst, client, work, count=p.burst_count))
                stats = self.upstream.stats()
                runs[side].append(sample.summary() | {"cpu_s": cpu, "upstream_peak_in_flight": stats["peak_in_flight"],
                                                      "upstream_calls": stats["calls"]})
                if sample.errors:
                    failures.setdefault(side, sample)
                await asyncio.sleep(0.5)
        d_wall = _median([r["wall_s"] for r in runs["direct"]])
        g_wall = _median([r["wall_s"] for r in runs["gateway"]])
        bar = d_wall + delay * BAR_BURST_SLACK
        errors = sum(r["errors"] for r in runs["gateway"])
        self.results[f"c_burst_{model}"] = {"count": p.burst_count, "upstream_delay_s": delay, "runs": runs,
                                            "direct_wall_s": d_wall, "gateway_wall_s": g_wall, "bar_s": round(bar, 3)}
        peak = max(r["upstream_peak_in_flight"] for r in runs["gateway"])
        self.rows.append(Row(f"c. {p.burst_count} at once, upstream {delay:g} s, {model}", f"{d_wall:.2f} s",
                             f"{g_wall:.2f} s", f"+{(g_wall - d_wall) * 1000:.0f} ms",
                             f"<= direct + {delay * BAR_BURST_SLACK:g} s", _verdict(g_wall <= bar and not errors)))
        self.rows.append(Row("   peak upstream calls in flight (gateway runs)", "", str(peak), "",
                             f"{p.burst_count}", ""))
        for side, sample in failures.items():
            self.rows.append(Row(f"   ! {side} errors: {sample.errors}", "", "", "", (sample.first_error or "")[:60],
                                 ""))

    # -- d. n=10 vs n=1 ----------------------------------------------------------------------------
    async def n10(self, client: load.ClientPool, model: str) -> None:
        p = self.plan
        delay = p.nx_delay_s
        up = self.upstream.base_url
        if model == GEMINI:
            direct1 = [load.direct_gemini(up, model, delay_s=delay)]
            direct10 = [load.direct_gemini(up, model, delay_s=delay)] * 10  # what a client would do: 10 calls
        else:
            direct1 = [load.direct_openai(up, model, n=1, delay_s=delay)]
            direct10 = [load.direct_openai(up, model, n=10, delay_s=delay)]
        gateway1 = [load.gateway_call(self.gateway.stack.base_url, self.key, model, n=1, delay_s=delay)]
        gateway10 = [load.gateway_call(self.gateway.stack.base_url, self.key, model, n=10, delay_s=delay)]
        medians: dict[str, float | None] = {}
        raw: dict[str, Any] = {}
        failed: list[str] = []
        for name, work in (("direct_n1", direct1), ("direct_n10", direct10), ("gateway_n1", gateway1),
                           ("gateway_n10", gateway10)):
            sample, cpu = await self.measured(
                functools.partial(load.sequential, client, work, count=p.nx_reps, warmup=1))
            raw[name] = sample.summary() | {"cpu_s": cpu}
            medians[name] = (sample.summary()["p50_ms"] or 0) / 1000 or None
            if sample.errors:
                failed.append(f"{name}: {sample.errors} errors, {sample.first_error}")
        d_ratio = _ratio(medians["direct_n10"], medians["direct_n1"])
        g_ratio = _ratio(medians["gateway_n10"], medians["gateway_n1"])
        self.results[f"d_n10_{model}"] = {"upstream_delay_s": delay, "reps": p.nx_reps, "runs": raw,
                                          "direct_ratio": d_ratio, "gateway_ratio": g_ratio}
        how = "10 parallel calls" if model == GEMINI else "one call"
        self.rows.append(Row(f"d. n=10 / n=1, upstream {delay:g} s, {model} ({how})",
                             f"{d_ratio:.2f}x" if d_ratio else "-", f"{g_ratio:.2f}x" if g_ratio else "-",
                             f"n1 {_s(medians['gateway_n1'])}, n10 {_s(medians['gateway_n10'])}",
                             f"<= {BAR_N10_RATIO:g}x", _verdict(g_ratio is not None and g_ratio <= BAR_N10_RATIO
                                                                and not failed)))
        for line in failed:
            self.rows.append(Row(f"   ! {line}"[:120], "", "", "", "", ""))

    async def run(self, only: str = "abcd") -> None:
        client = load.new_client(connections=max(300, self.plan.burst_count + 50))
        try:
            if "a" in only:
                for model in (GPT, GEMINI):
                    await self.latency(client, model)
            if "b" in only:
                for model in (GPT, GEMINI):
                    await self.throughput(client, model)
                    await asyncio.sleep(1.0)
            if "c" in only:
                await self.burst(client, GPT)
            if "d" in only:
                for model in (GEMINI, GPT):
                    await self.n10(client, model)
        finally:
            await client.aclose()


# -- formatting ----------------------------------------------------------------------------------

def _sub(a: float | None, b: float | None) -> float | None:
    return round(a - b, 2) if a is not None and b is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1]
                                                                 + ordered[len(ordered) // 2]) / 2


def _per(cpu: dict[str, float], sample: load.Sample) -> dict[str, float]:
    done = sample.units or len(sample.seconds) + sample.errors
    return {k: round(v * 1000 / done, 2) for k, v in cpu.items()} if done else {}


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"


def _added(value: float | None) -> str:
    return f"{value:+.1f} ms" if value is not None else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _errors(rows: list[Row], tag: str, direct: load.Sample, gateway: load.Sample) -> None:
    for side, sample in (("direct", direct), ("gateway", gateway)):
        if sample.errors:
            rows.append(Row(f"   ! {tag}: {side} errors: {sample.errors}", "", "", "",
                            (sample.first_error or "")[:60], ""))


def table(title: str, rows: list[Row]) -> str:
    """The rows as a text table; notes (rows with only a scenario and a text) run past the columns."""
    def is_note(row: Row) -> bool:
        return not (row.direct or row.gateway or row.verdict)

    header = Row("scenario", "direct", "imagegate", "imagegate vs direct", "bar", "result")
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


def _git(*args: str) -> str:
    """Read-only git queries (the commit measured, and whether the tree had local changes)."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[1])
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# -- main ----------------------------------------------------------------------------------------

def run_mode(mode: str, upstream: FakeUpstreamProcess, args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    extra_env: dict[str, str] = {}
    profile_dir: Path | None = None
    if args.profile:
        profile_dir = Path(tempfile.mkdtemp(prefix=f"imagegate-bench-profile-{mode}-"))
        site = Path(__file__).resolve().parent / "_profile_site"
        extra_env = {"IMAGEGATE_BENCH_PROFILE": str(profile_dir),
                     "PYTHONPATH": f"{site}{os.pathsep}{site.parents[1]}"}
    gateway = Gateway(mode=mode, upstream=upstream, api_workers=args.api_workers,
                      worker_processes=args.worker_processes, total_concurrency=args.concurrency,
                      log_level=args.log_level, db_connections=args.db_connections, extra_env=extra_env)
    print(f"\n== {mode}: starting imagegate ...", file=sys.stderr, flush=True)
    try:
        gateway.start()
        key = gateway.stack.create_key("bench")
        bench = Bench(upstream, gateway, key, plan, profile_dir)
        started = time.monotonic()
        _run_async(bench.run(args.only))
        errors = gateway.log_findings()
        other_cores = bench.other_cpu_s / bench.wall_s if bench.wall_s else 0.0
        env = gateway.stack.env
        shape = (f"{args.api_workers} API processes, {args.worker_processes} worker processes x "
                 f"{env['IMAGEGATE_WORKER_CONCURRENCY']} threads, DB pool "
                 f"{env['IMAGEGATE_DB_POOL_SIZE']}+{env['IMAGEGATE_DB_MAX_OVERFLOW']} per process"
                 if mode == "distributed"
                 else f"1 process, in-process worker x {env['IMAGEGATE_WORKER_CONCURRENCY']} threads")
        title = (f"imagegate bench: {mode} mode ({shape}), {'quick' if args.quick else 'full'} run, "
                 f"commit {_git('rev-parse', '--short', 'HEAD') or '?'}")
        print("\n" + table(title, bench.rows) + "\n", flush=True)
        if other_cores > 0.1:
            print(f"WARNING: processes outside the bench used {other_cores:.2f} of the {os.cpu_count()} cores "
                  "while it measured; these figures understate the gateway.", flush=True)
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


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


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
    parser.add_argument("--concurrency", type=int, default=256,
                        help="total worker threads (IMAGEGATE_WORKER_CONCURRENCY, split over worker processes)")
    parser.add_argument("--log-level", default="INFO", help="IMAGEGATE_LOG_LEVEL of the gateway")
    parser.add_argument("--db-connections", type=int, default=80,
                        help="PostgreSQL connections shared out over the API and worker processes' pools "
                             "(IMAGEGATE_DB_POOL_SIZE + IMAGEGATE_DB_MAX_OVERFLOW per process)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the machine to be idle (other load skews results)")
    parser.add_argument("--keep", action="store_true", help="keep the gateway's temporary dir (logs, images)")
    parser.add_argument("--only", default="abcd", help="scenarios to run, e.g. 'a' or 'bc' (default: abcd)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the gateway's Python stacks, weighted by thread CPU time, while measuring "
                             "(bench/sampler.py), and print where the CPU went")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    modes = ["distributed", "embedded"] if args.mode == "both" else [args.mode]

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict[str, Any] = {
        "timestamp": stamp, "commit": _git("rev-parse", "--short", "HEAD") or None,
        "local_changes": [line[3:] for line in _git("status", "--porcelain", "--", "api", "core", "worker",
                                                     "imagegate", "migrations").splitlines()],
        "quick": args.quick, "plan": asdict(plan),
        "only": args.only, "profiled": args.profile,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                 "loadavg_at_start": os.getloadavg()},
        "bars": {"added_p50_ms": BAR_ADDED_MS, "rps": BAR_RPS,
                 "burst_wall_over_direct_s": plan.burst_delay_s * BAR_BURST_SLACK,
                 "n10_ratio": BAR_N10_RATIO},
        "modes": {},
    }
    report["host"]["busy_cores_at_start"] = wait_for_quiet(args.wait_quiet)
    log_dir = Path(tempfile.mkdtemp(prefix="imagegate-bench-fake-"))
    upstream = FakeUpstreamProcess(log_dir=log_dir)
    upstream.start()
    try:
        report["upstream"] = upstream.stats()
        for mode in modes:
            report["modes"][mode] = run_mode(mode, upstream, args, plan)
    finally:
        upstream.stop()
        if not args.keep:
            shutil.rmtree(log_dir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    misses = [r["scenario"].strip() for m in report["modes"].values() for r in m["rows"] if r["verdict"] == "MISS"]
    print(f"results: {path}")
    print(f"{len(misses)} bar(s) missed" + (": " + "; ".join(misses) if misses else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
