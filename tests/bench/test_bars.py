"""The benchmark's arithmetic (bench/bars.py): each bar as a ratio to the direct upstream's figure
of the same run, turned into PASS or MISS. No timing is asserted here; the bench measures."""

from __future__ import annotations

from bench import bars


def test_latency_bar_is_five_times_direct_capped_at_ten_ms() -> None:
    assert bars.latency(1.5, 7.5).ok  # 5 x 1.5 ms
    assert not bars.latency(1.5, 7.6).ok
    assert bars.latency(4.0, 10.0).ok  # 5 x 4 ms = 20 ms, but never more than 10 ms
    assert not bars.latency(4.0, 10.1).ok
    assert "7.5 ms" in bars.latency(1.5, 1.0).bar


def test_latency_bar_misses_on_errors_or_missing_figures() -> None:
    assert not bars.latency(2.0, 1.0, errors=1).ok
    assert not bars.latency(None, 1.0).ok
    assert not bars.latency(2.0, None).ok


def test_cpu_bar_is_ten_times_the_fake_upstreams_cpu_per_answer() -> None:
    assert bars.cpu_per_image(9.9, 1.0).ok
    assert not bars.cpu_per_image(10.1, 1.0).ok
    assert bars.cpu_per_image(14.0, 1.5).ok
    assert not bars.cpu_per_image(None, 1.0).ok
    assert not bars.cpu_per_image(5.0, None).ok


def test_throughput_bar_depends_on_the_mode() -> None:
    assert bars.throughput("distributed", 500, 150).ok
    assert not bars.throughput("distributed", 500, 149).ok
    assert bars.throughput("embedded", 500, 80).ok
    assert not bars.throughput("embedded", 500, 79).ok
    assert not bars.throughput("embedded", 500, 400, errors=2).ok
    assert not bars.throughput("distributed", 0, 0).ok


def test_burst_bar_needs_the_time_and_every_call_in_flight() -> None:
    assert bars.burst(2.4, 2.9, 200, 200).ok
    assert not bars.burst(2.4, 2.91, 200, 200).ok
    assert not bars.burst(2.4, 2.5, 199, 200).ok
    assert not bars.burst(2.4, 2.5, 200, 200, errors=1).ok


def test_big_burst_bar_needs_no_failure_the_time_and_the_memory() -> None:
    gib = 1 << 30
    assert bars.big_burst(20.5, 22.5, gib, errors=0).ok
    assert not bars.big_burst(20.5, 22.6, gib, errors=0).ok
    assert not bars.big_burst(20.5, 21.0, gib + 1, errors=0).ok
    assert not bars.big_burst(20.5, 21.0, gib // 2, errors=1).ok


def test_n10_and_history_bars() -> None:
    assert bars.nx(1.2).ok and not bars.nx(1.21).ok and not bars.nx(None).ok
    assert not bars.nx(1.0, failed=True).ok
    assert bars.history_latency(20.0, 22.0).ok and not bars.history_latency(20.0, 22.1).ok
    assert bars.history_throughput(100.0, 90.0).ok and not bars.history_throughput(100.0, 89.9).ok
    assert not bars.history_latency(None, 10.0).ok


def test_peer_bars_are_multiples_of_the_peers_figures() -> None:
    assert bars.peer_throughput(100.0, 20.0).ok and not bars.peer_throughput(99.0, 20.0).ok
    assert bars.peer_latency(18.0, 90.0).ok and not bars.peer_latency(18.1, 90.0).ok
    assert bars.peer_latency(-0.5, 90.0).ok  # no added latency at all
    assert not bars.peer_latency(5.0, None).ok


def test_ratio_and_median() -> None:
    assert bars.ratio(3.0, 2.0) == 1.5
    assert bars.ratio(1.0, 0.0) is None and bars.ratio(None, 2.0) is None
    assert bars.median([3.0, 1.0, 2.0]) == 2.0
    assert bars.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert bars.median([]) is None
