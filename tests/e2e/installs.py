"""The real clients the client tests drive, installed as a fresh CI machine needs them, once.

Each installer is idempotent and cached: Debian's ``chromium`` package (``apt-get install``, as
root, only when ``/usr/bin/chromium`` is missing), npm packages into a directory of their own under
:data:`CACHE`, and Python packages too large for the project's lock (LiteLLM) into a virtualenv of
their own under it, as a benchmark peer would be. What cannot be installed here says why: each
returns the reason, and the test skips with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagegate-test-clients"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_TIMEOUT_S = 900


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str | None:
    """Run an install command; None when it worked, else why it did not (its output's tail)."""
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(argv[:3])}: {exc}"
    if done.returncode != 0:
        return f"{' '.join(argv[:3])} exited {done.returncode}: {(done.stdout + done.stderr)[-600:]}"
    return None


def chromium() -> tuple[Path | None, str]:
    """Debian's Chromium, installed with apt when missing: (its path, "") or (None, why not)."""
    if CHROMIUM.exists():
        return CHROMIUM, ""
    if shutil.which("apt-get") is None:
        return None, "no /usr/bin/chromium and no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return None, "no /usr/bin/chromium, and installing Debian's chromium package needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    failure = _run(["apt-get", "install", "-y", "-q", "chromium"], env=env)
    if failure is not None:  # an old or empty package list: update it once, then try again
        failure = _run(["apt-get", "update", "-q"], env=env) or _run(["apt-get", "install", "-y", "-q", "chromium"],
                                                                     env=env)
    if failure is not None or not CHROMIUM.exists():
        return None, f"apt-get could not install chromium: {failure}"
    return CHROMIUM, ""


def npm_package(name: str, spec: str) -> tuple[Path | None, str]:
    """``npm install spec`` into its own cached directory: (its node_modules, "") or (None, why not)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None, "node and npm are not installed"
    home = CACHE / "npm" / name.replace("/", "+")
    modules = home / "node_modules"
    if (modules / name / "package.json").exists():
        return modules, ""
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text(json.dumps({"name": "imagegate-test-client", "private": True}))
    failure = _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", spec], cwd=home)
    if failure is not None or not (modules / name / "package.json").exists():
        return None, f"npm could not install {spec} from the registry: {failure}"
    return modules, ""


def python_venv(name: str, *requirements: str) -> tuple[Path | None, str]:
    """A cached virtualenv with ``requirements`` (kept out of the project's lock): (its python, "")
    or (None, why not)."""
    home = CACHE / "venv" / name
    python = home / "bin" / "python"
    done = home / ".installed"
    wanted = "\n".join(requirements)
    if done.exists() and done.read_text() == wanted:
        return python, ""
    # uv, which `make install` puts beside the project's python: pip takes some forty seconds
    # over LiteLLM's dependencies, uv a few
    uv = str(Path(sys.executable).with_name("uv"))
    failure = _run([uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(home)])
    failure = failure or _run([uv, "pip", "install", "--quiet", "--python", str(python), *requirements])
    if failure is not None:
        return None, f"uv could not install {', '.join(requirements)}: {failure}"
    done.write_text(wanted)
    return python, ""
