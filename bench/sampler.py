"""A small sampling profiler for the gateway's processes (py-spy is not in the venv).

``python -m bench.run --profile`` starts imagegate with ``bench/_profile_site`` on PYTHONPATH;
its ``sitecustomize`` calls :func:`start` in every imagegate process (API, uvicorn workers,
Celery workers). A daemon thread then, every few milliseconds and while ``<dir>/measuring``
exists (the bench creates it around its measurements), reads each thread's Python stack and
the CPU time the thread used since the last sample (its POSIX thread CPU clock, in ns), and adds
that CPU time to the stack. Counts are written to ``<dir>/<role>-<pid>.stacks.json``
every few seconds and at exit; :func:`report` (``python -m bench.sampler <dir>``) prints, per
process role, where the CPU time went.

Only Python frames are seen, and a stack is read when the sampler holds the GIL: CPU time spent
in C code (base64, JSON, hashing, the sqlite3 driver) lands on the Python line that called it,
which is what one wants here. Time is attributed to the stack seen at the end of each interval,
so it is an estimate; its totals match the CPU the process used. The sampler gets the GIL soonest
where a thread lets go of it (a SQLite or socket call, a file write), so those lines also collect
the Python work that ran before them in the interval (bench/README.md, "How to read it", has a
measured example): they are upper bounds.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

INTERVAL_S = 0.001
FLUSH_EVERY_S = 5.0
MAX_DEPTH = 60
MAX_RUN_S = 3600.0
ROOT = str(Path(__file__).resolve().parents[1]) + "/"


def _key(frame: FrameType) -> str:
    code = frame.f_code
    filename = code.co_filename
    short = filename[len(ROOT):] if filename.startswith(ROOT) else "/".join(filename.split("/")[-2:])
    return f"{short}:{code.co_name}:{frame.f_lineno}"


def _cpu_ns(ident: int) -> int:
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
    except (OSError, ValueError, OverflowError):
        return 0


class Sampler:
    def __init__(self, out_dir: Path, role: str) -> None:
        self.out = out_dir / f"{role}-{os.getpid()}.stacks.json"
        self.flag = out_dir / "measuring"
        self.role = role
        self.stacks: Counter[str] = Counter()  # stack -> CPU ns
        self.cpu_ns = 0
        self.samples = 0
        self._last: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def sample(self, me: int) -> None:
        frames = sys._current_frames()
        with self._lock:
            self.samples += 1
            for ident, frame in frames.items():
                if ident == me:
                    continue
                used = _cpu_ns(ident)
                spent = used - self._last.get(ident, used)
                self._last[ident] = used
                if spent <= 0:
                    continue
                stack: list[str] = []
                current: FrameType | None = frame
                while current is not None and len(stack) < MAX_DEPTH:
                    stack.append(_key(current))
                    current = current.f_back
                self.stacks[";".join(reversed(stack))] += spent
                self.cpu_ns += spent
        del frames

    def run(self) -> None:
        me = threading.get_ident()
        started = last_flush = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < MAX_RUN_S:
            time.sleep(INTERVAL_S)
            if self.flag.exists():
                self.sample(me)
            else:
                self._last.clear()  # the next measured interval starts from its first sample
            if time.monotonic() - last_flush > FLUSH_EVERY_S:
                self.flush()
                last_flush = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            data = {"role": self.role, "pid": os.getpid(), "samples": self.samples, "cpu_ns": self.cpu_ns,
                    "stacks": dict(self.stacks)}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.out)

    def stop(self) -> None:
        self._stop.set()
        self.flush()


def _at_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` once at exit, also when the process ends on SIGTERM (uvicorn re-raises the
    signal after its graceful shutdown, so the process dies of it and atexit never runs)."""
    done = threading.Event()

    def once() -> None:
        if not done.is_set():
            done.set()
            callback()

    atexit.register(once)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        once()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)


def _role() -> str | None:
    argv = sys.argv[1:2]
    if argv == ["worker"]:
        return "worker"
    if argv == ["serve"]:
        return "api"
    if sys.argv[:1] == ["-c"] or "--multiprocessing-fork" in sys.argv:
        return "api"  # a uvicorn worker process of `imagegate serve --workers N` (spawned)
    return None


def start(out_dir: str) -> None:
    role = _role()
    if role is None:
        return
    sys.setswitchinterval(0.0002)  # the sampler gets the GIL sooner: stacks closer to where CPU went
    sampler = Sampler(Path(out_dir), role)
    threading.Thread(target=sampler.run, name="bench-sampler", daemon=True).start()
    _at_exit(sampler.stop)


# -- report ----------------------------------------------------------------------------------------

# (category, substrings of a frame) — a stack belongs to the first category matched walking from
# its innermost frame outwards, so psycopg's wait counts as database, not as "other".
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("image bytes: base64 decode/encode", ("base64.py:",)),
    ("image bytes: file write/read", ("core/storage/",)),
    ("logging", ("logging/__init__.py:",)),
    ("database driver + SQLAlchemy", ("sqlalchemy/", "psycopg/", "aiosqlite/", "sqlite3/", "greenlet")),
    ("broker: Celery/kombu", ("celery/", "kombu/")),
    ("Redis (events, rate limits)", ("redis/",)),
    ("upstream HTTP client: httpx/httpcore", ("httpx/", "httpcore/")),
    ("JSON and pydantic", ("pydantic/", "json/", "pydantic_core")),
    ("HTTP server: uvicorn/starlette/fastapi", ("uvicorn/", "starlette/", "fastapi/", "anyio/")),
    ("image probe (Pillow)", ("PIL/",)),
    ("Python imports (start-up)", ("importlib",)),
    ("threads and locks", ("threading.py:", "futures/thread.py:", "queue.py:")),
    ("event loop, socket I/O in C (uvloop)", ("asyncio/", "uvloop")),
)


def categorize(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other (imagegate's own code, stdlib)"


def report(out_dir: Path, *, top: int = 25) -> str:
    """Per process role: CPU time by innermost function, and by imagegate function on the stack."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*.stacks.json")):
        data = json.loads(path.read_text())
        by_role.setdefault(str(data["role"]), []).append(data)
    lines: list[str] = []
    for role, datas in by_role.items():
        stacks: Counter[str] = Counter()
        for data in datas:
            stacks.update(data["stacks"])
        total = sum(stacks.values())
        lines.append(f"== {role} ({len(datas)} process(es)): {total / 1e9:.2f} CPU s sampled")
        if not total:
            continue
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for stack, ns in stacks.items():
            frames = stack.split(";")
            own[frames[-1]] += ns
            for func in {_func(f) for f in frames}:
                inclusive[func] += ns
        by_category: Counter[str] = Counter()
        for stack, ns in stacks.items():
            by_category[categorize(stack)] += ns
        lines.append("  by category, % of the role's CPU:")
        lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in by_category.most_common()]
        lines.append("  innermost line (self CPU), % of the role's CPU:")
        lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
        lines.append("  inclusive CPU of imagegate functions (on the stack), %:")
        ours = [(f, c) for f, c in inclusive.most_common() if f.split("/")[0] in ("api", "core", "worker")]
        lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in ours[:top]]
    return "\n".join(lines)


def _func(frame: str) -> str:
    return frame.rsplit(":", 1)[0]


if __name__ == "__main__":
    print(report(Path(sys.argv[1]), top=int(sys.argv[2]) if len(sys.argv) > 2 else 25))
