"""Loaded by every Python process started with ``bench/_profile_site`` on PYTHONPATH (only
``python -m bench.run --profile`` or ``--trace`` does that): starts :mod:`bench.sampler` when
IMAGEGATE_BENCH_PROFILE names an output directory, and :mod:`bench.spans` when
IMAGEGATE_BENCH_TRACE does."""

import os

if os.environ.get("IMAGEGATE_BENCH_PROFILE"):
    try:
        from bench.sampler import start

        start(os.environ["IMAGEGATE_BENCH_PROFILE"])
    except Exception as exc:  # a profiler must never break the process it watches
        import sys

        print(f"bench sampler not started: {exc}", file=sys.stderr)

if os.environ.get("IMAGEGATE_BENCH_TRACE"):
    try:
        from bench.spans import install

        install(os.environ["IMAGEGATE_BENCH_TRACE"])
    except Exception as exc:  # nor a tracer
        import sys

        print(f"bench trace not started: {exc}", file=sys.stderr)
