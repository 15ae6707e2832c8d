"""CPU time per process group, read from /proc (Linux), to say where the time goes.

A group is one process alone (a pid), a process and its descendants (a list of pids:
``imagegate serve --workers 2`` forks its uvicorn workers), or the processes with a given command
name whose command line contains a given text (the PostgreSQL backends serving the bench's own
database). Every live process in no group counts as ``other_processes``: another test suite on
the same 2 cores shows up there. ``machine`` is the whole machine's busy time (/proc/stat);
what it has beyond the processes seen is ``kernel_and_exited`` (interrupts, loopback networking,
processes that ended during the measurement).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

GroupSpec = int | list[int] | tuple[str, str]


@dataclass
class Snapshot:
    groups: dict[str, float]
    outside: dict[int, float]  # pid -> CPU seconds, for live processes in no group
    machine: float


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds used) of one live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _all() -> dict[int, tuple[str, int, float]]:
    table: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    return table


def system_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _members(spec: GroupSpec, table: dict[int, tuple[str, int, float]],
             children: dict[int, list[int]]) -> set[int]:
    if isinstance(spec, int):
        return {spec} if spec in table else set()
    if isinstance(spec, tuple):
        name, text = spec
        return {pid for pid, (comm, _, _) in table.items() if comm == name and text in _cmdline(pid)}
    seen: set[int] = set()
    stack = [p for p in spec if p in table]
    while stack and len(seen) < 10_000:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, []))
    return seen


def snapshot(groups: dict[str, GroupSpec]) -> Snapshot:
    table = _all()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    result: dict[str, float] = {}
    grouped: set[int] = {os.getpid()}
    for label, spec in groups.items():
        members = _members(spec, table, children)
        grouped |= members
        result[label] = sum(table[p][2] for p in members)
    outside = {pid: cpu for pid, (_, _, cpu) in table.items() if pid not in grouped}
    return Snapshot(result, outside, system_busy())


def delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots, plus ``other_processes``, ``machine`` and
    ``kernel_and_exited`` (see the module docstring)."""
    result = {k: round(after.groups.get(k, 0.0) - v, 2) for k, v in before.groups.items()}
    # a process that started meanwhile counts in full; one that ended is lost (kernel_and_exited)
    result["other_processes"] = round(sum(cpu - before.outside.get(pid, 0.0)
                                          for pid, cpu in after.outside.items()), 2)
    result["machine"] = round(after.machine - before.machine, 2)
    seen = sum(v for k, v in result.items() if k != "machine")
    result["kernel_and_exited"] = round(result["machine"] - seen, 2)
    return result


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss(pid: int) -> int:
    """Resident set size of one live process, in bytes (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def rss(groups: dict[str, GroupSpec]) -> dict[str, int]:
    """Resident memory of each group now, in bytes: the sum of its processes' RSS (pages shared
    between a forking parent and its children count in each, so this errs on the high side)."""
    table = _all()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    return {label: sum(_rss(p) for p in _members(spec, table, children)) for label, spec in groups.items()}
