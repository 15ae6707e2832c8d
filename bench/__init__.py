"""Benchmarks of imagegate against a direct call to a fake upstream (see bench/README.md)."""
