"""The bars the benchmark holds imagegate to, each as a ratio to what the direct upstream (or the
peer gateway) did in the same run, and the arithmetic that turns two figures into PASS or MISS.

Pure functions, no I/O: ``tests/test_bench_bars.py`` checks them. The absolute figures in the
comments are what each ratio stands for on the 2-core machine the bars were set on (bench/README.md):
the machines differ by up to half from day to day, the ratios do not.
"""

from __future__ import annotations

from dataclasses import dataclass

# a. one request in flight: the added p50 at most 5x the direct p50 (~2 ms there: 10 ms), and never
# more than 10 ms, whatever the direct figure
LATENCY_RATIO = 5.0
LATENCY_CAP_MS = 10.0
# b. gateway CPU (API + worker + PostgreSQL + Redis) per image at most 10x the fake upstream's own
# CPU per answer (~1 ms there: 10 ms), distributed mode, under load
CPU_RATIO = 10.0
# c. 50 in flight, closed loop: this share of the direct throughput at the same concurrency
# (direct ~500/s there: 150/s distributed, 80/s embedded)
THROUGHPUT_SHARE = {"distributed": 0.30, "embedded": 0.16}
# d. 200 at once against a 2 s upstream: the last answer at most this long after the direct run's,
# and every call in flight at the upstream at once
BURST_SLACK_S = 0.5
# e. 1,000 at once (embedded 500) against a 20 s upstream: every request answered, the last at most
# this long after the direct run's, and all the gateway's processes within this much memory
BIG_BURST_COUNT = {"distributed": 1000, "embedded": 500}
BIG_BURST_SLACK_S = 2.0
BIG_BURST_RSS_BYTES = 1 << 30
# f. n=10 at most this many times n=1's wall time against a 1 s upstream
NX_RATIO = 1.2
# g. a key with a long history against a fresh key: latency and throughput within 10 %
HISTORY_TOLERANCE = 0.10
# bench-peer: at least 5x the peer gateway's throughput and at most a fifth of its added latency
PEER_THROUGHPUT_MULTIPLE = 5.0
PEER_LATENCY_FRACTION = 0.2


@dataclass(frozen=True)
class Verdict:
    ok: bool
    bar: str  # the bar as printed, with the limit it works out to in this run

    @property
    def text(self) -> str:
        return verdict(self.ok)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    return round(a / b, 3) if a is not None and b else None


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def latency(direct_p50_ms: float | None, added_p50_ms: float | None, *, errors: int = 0) -> Verdict:
    """a: added p50 <= min(5 x direct p50, 10 ms)."""
    if direct_p50_ms is None:
        return Verdict(False, f"<= {LATENCY_RATIO:g}x direct, <= +{LATENCY_CAP_MS:g} ms")
    limit = min(LATENCY_RATIO * direct_p50_ms, LATENCY_CAP_MS)
    ok = added_p50_ms is not None and added_p50_ms <= limit and not errors
    return Verdict(ok, f"<= +{limit:.1f} ms (min of {LATENCY_RATIO:g}x direct, {LATENCY_CAP_MS:g} ms)")


def cpu_per_image(gateway_ms: float | None, fake_ms: float | None) -> Verdict:
    """b: gateway CPU per image <= 10 x the fake upstream's CPU per answer."""
    if fake_ms is None or gateway_ms is None:
        return Verdict(False, f"<= {CPU_RATIO:g}x fake upstream")
    limit = CPU_RATIO * fake_ms
    return Verdict(gateway_ms <= limit, f"<= {limit:.1f} ms ({CPU_RATIO:g}x fake's {fake_ms:.2f} ms)")


def throughput(mode: str, direct_rps: float, gateway_rps: float, *, errors: int = 0) -> Verdict:
    """c: gateway requests/s >= the mode's share of the direct requests/s."""
    share = THROUGHPUT_SHARE[mode]
    limit = share * direct_rps
    ok = direct_rps > 0 and gateway_rps >= limit and not errors
    return Verdict(ok, f">= {limit:.1f} req/s ({share:.0%} of direct)")


def burst(direct_wall_s: float, gateway_wall_s: float, peak_in_flight: int, count: int, *,
          errors: int = 0) -> Verdict:
    """d: last answer <= direct + 0.5 s, and every call in flight at the upstream at once."""
    limit = direct_wall_s + BURST_SLACK_S
    ok = gateway_wall_s <= limit and peak_in_flight >= count and not errors
    return Verdict(ok, f"<= {limit:.2f} s and {count} in flight")


def big_burst(direct_wall_s: float, gateway_wall_s: float, peak_rss_bytes: int, *, errors: int) -> Verdict:
    """e: no failure, last answer <= direct + 2 s, peak RSS of the gateway's processes <= 1 GiB."""
    limit = direct_wall_s + BIG_BURST_SLACK_S
    ok = not errors and gateway_wall_s <= limit and peak_rss_bytes <= BIG_BURST_RSS_BYTES
    return Verdict(ok, f"0 errors, <= {limit:.2f} s, RSS <= {BIG_BURST_RSS_BYTES / (1 << 30):g} GiB")


def nx(n10_over_n1: float | None, *, failed: bool = False) -> Verdict:
    """f: n=10 wall time <= 1.2 x n=1's."""
    ok = n10_over_n1 is not None and n10_over_n1 <= NX_RATIO and not failed
    return Verdict(ok, f"<= {NX_RATIO:g}x")


def history_latency(fresh_p50_ms: float | None, heavy_p50_ms: float | None) -> Verdict:
    """g (a): the long-history key's p50 latency at most 10 % above the fresh key's."""
    r = ratio(heavy_p50_ms, fresh_p50_ms)
    return Verdict(r is not None and r <= 1 + HISTORY_TOLERANCE, f"<= {1 + HISTORY_TOLERANCE:.2f}x fresh key")


def history_throughput(fresh_rps: float, heavy_rps: float) -> Verdict:
    """g (c): the long-history key's requests/s at least 90 % of the fresh key's."""
    r = ratio(heavy_rps, fresh_rps)
    return Verdict(r is not None and r >= 1 - HISTORY_TOLERANCE, f">= {1 - HISTORY_TOLERANCE:.2f}x fresh key")


def peer_throughput(imagegate_rps: float, peer_rps: float) -> Verdict:
    """bench-peer: imagegate's requests/s at least 5 x the peer's."""
    r = ratio(imagegate_rps, peer_rps)
    return Verdict(r is not None and r >= PEER_THROUGHPUT_MULTIPLE, f">= {PEER_THROUGHPUT_MULTIPLE:g}x")


def peer_latency(imagegate_added_ms: float | None, peer_added_ms: float | None) -> Verdict:
    """bench-peer: imagegate's added p50 at most a fifth of the peer's (a non-positive added latency
    passes whatever the peer's)."""
    if imagegate_added_ms is not None and imagegate_added_ms <= 0:
        return Verdict(True, f"<= {PEER_LATENCY_FRACTION:g}x")
    r = ratio(imagegate_added_ms, peer_added_ms) if peer_added_ms and peer_added_ms > 0 else None
    return Verdict(r is not None and r <= PEER_LATENCY_FRACTION, f"<= {PEER_LATENCY_FRACTION:g}x")
