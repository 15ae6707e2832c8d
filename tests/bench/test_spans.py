"""bench/spans.py: the functions it times exist, its wrappers time calls that return and raise in
a real process started as the bench starts the gateway's, and its breakdown places spans on the
requests they began in."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import spans

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module_name", sorted(spans.SPANS))
def test_every_traced_function_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for target in spans.SPANS[module_name]:
        _, _, found = spans.lookup(module, target)
        assert callable(found), f"{module_name}.{target} is gone: update bench/spans.py"


def test_a_process_started_with_the_trace_writes_its_spans(tmp_path: Path) -> None:
    package = tmp_path / "tracedpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "work.py").write_text(textwrap.dedent("""
        import asyncio

        def add(a, b):
            return a + b

        class Box:
            async def fill(self):
                await asyncio.sleep(0.01)
                return "full"

            @staticmethod
            def fail():
                raise ValueError("no")
    """))
    script = textwrap.dedent("""
        import asyncio, sys
        from bench import spans
        spans.install(sys.argv[1], {"tracedpkg.work": ("add", "Box.fill", "Box.fail", "gone")})
        from tracedpkg.work import Box, add   # imported by name after the wrapping
        assert add(1, 2) == 3
        assert asyncio.run(Box().fill()) == "full"
        try:
            Box.fail()
        except ValueError:
            pass
    """)
    out = tmp_path / "spans"
    out.mkdir()
    run = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert run.returncode == 0, run.stderr
    assert "tracedpkg.work.gone not found" in run.stderr
    recorded = {name: end - start for name, start, end in spans.read(out)}
    assert set(recorded) == {"tracedpkg.work.add", "tracedpkg.work.Box.fill", "tracedpkg.work.Box.fail"}
    assert recorded["tracedpkg.work.Box.fill"] >= 0.009  # the coroutine's whole time, not its first step


def test_breakdown_places_spans_on_their_requests() -> None:
    marks = [("job_a", 100.0, 100.050), ("job_b", 200.0, 200.040)]
    recorded = [
        ("submit", 100.002, 100.004), ("statement", 100.003, 100.004), ("statement", 100.020, 100.023),
        ("submit", 200.004, 200.008), ("statement", 200.005, 200.006),
        ("statement", 150.0, 150.010),  # between the requests: nobody's
    ]
    rows = {row["name"]: row for row in spans.breakdown(recorded, marks)}
    assert rows["submit"] == {"name": "submit", "requests": 2, "start_ms": 3.0, "took_ms": 3.0}
    # first start after the request's, time summed over the request's calls: 4 ms and 1 ms
    assert rows["statement"] == {"name": "statement", "requests": 2, "start_ms": 4.0, "took_ms": 2.5}
    assert [row["name"] for row in spans.breakdown(recorded, marks)] == ["submit", "statement"]
