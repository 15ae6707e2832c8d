"""How a gateway process's C allocator treats the megabyte buffers every image passes through.

An image is a few buffers of a megabyte or more in each process (the upstream's answer, its
decoded bytes, the chunks of the answer sent to the client). glibc's malloc gives an allocation
that large pages of its own and, once it is freed, hands them back to the system: either the
allocation had its own mapping (``mmap``, above ``M_MMAP_THRESHOLD``) or the freed space at the top
of the heap grew past ``M_TRIM_THRESHOLD``. The next image's buffer then takes those pages again,
one page fault per 4 KiB: about 340 faults and 0.5 ms of CPU for each 1.4 MB answer the worker
reads (measured with ``getrusage``'s minor faults on this project's upstream client; none once
the memory is kept). So each gateway process keeps up to ``IMAGEGATE_MALLOC_KEEP_MB`` of freed
memory for the next images, serves allocations up to :data:`MMAP_THRESHOLD_BYTES` from it, and uses
at most :data:`ARENAS` malloc arenas, so that what is kept is bounded by the setting times the
arenas (Python threads allocate holding the GIL: more arenas buy no parallelism).

mallopt(3): https://man7.org/linux/man-pages/man3/mallopt.3.html. On a C library other than
glibc (musl, macOS) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt's parameter numbers, from glibc's <malloc.h>."""

MMAP_THRESHOLD_BYTES = 16 * 1024 * 1024
"""Allocations up to this size come from the kept memory; larger ones get pages of their own."""

ARENAS = 2

_applied: int | None = None


def keep_freed_memory(keep_mb: int) -> bool:
    """Have glibc's malloc keep up to ``keep_mb`` MiB of freed memory in this process (0: leave
    its defaults). Whether the allocator was tuned; once per process (later calls change nothing)."""
    global _applied
    if keep_mb <= 0 or _applied is not None:
        return _applied is not None
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    tuned = all(libc.mallopt(option, value) == 1 for option, value in (
        (M_ARENA_MAX, ARENAS),
        (M_MMAP_THRESHOLD, min(MMAP_THRESHOLD_BYTES, keep_mb * 1024 * 1024)),
        (M_TRIM_THRESHOLD, keep_mb * 1024 * 1024),
    ))
    if not tuned:
        log.warning("glibc refused a malloc setting; its defaults stay in force")
        return False
    _applied = keep_mb
    return True
