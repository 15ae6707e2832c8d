"""A gateway process keeps freed megabyte buffers for the next image (core/memory.py) instead of
handing them back and faulting their pages in again: counted as minor page faults in a process of
its own (the setting is process-wide), doing what a worker does with each answer."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]

ANSWERS = """
import os, resource, sys
from core.memory import keep_freed_memory
print(keep_freed_memory(int(sys.argv[1])))

def answer():  # an upstream answer read in 64 KiB pieces, joined, then its image copied out
    pieces = [os.urandom(65536) for _ in range(22)]
    body = b"".join(pieces)
    return len(bytes(bytearray(body)))

for _ in range(20):
    answer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    answer()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def _faults_per_answer(keep_mb: int) -> tuple[bool, float]:
    run = subprocess.run([sys.executable, "-c", ANSWERS, str(keep_mb)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    tuned, faults = run.stdout.split()
    return tuned == "True", float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's malloc's")
def test_freed_buffers_are_kept_for_the_next_answer() -> None:
    untuned, faults_by_default = _faults_per_answer(0)
    tuned, faults_kept = _faults_per_answer(Settings().malloc_keep_mb)
    assert (untuned, tuned) == (False, True)
    # glibc's defaults fault in every page of the buffers (~4 MB) each time; kept: none
    assert faults_by_default > 500
    assert faults_kept < 5
