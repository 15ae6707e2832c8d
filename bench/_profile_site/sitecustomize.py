"""Loaded by every Python process started with ``bench/_profile_site`` on PYTHONPATH (only
``python -m bench.run --profile`` does that): starts :mod:`bench.sampler` when
IMAGEGATE_BENCH_PROFILE names an output directory."""

import os

if os.environ.get("IMAGEGATE_BENCH_PROFILE"):
    try:
        from bench.sampler import start

        start(os.environ["IMAGEGATE_BENCH_PROFILE"])
    except Exception as exc:  # a profiler must never break the process it watches
        import sys

        print(f"bench sampler not started: {exc}", file=sys.stderr)
