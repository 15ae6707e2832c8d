"""The secrets that must never appear in a log, and a scan for them.

``tests/conftest.py`` runs the scan over every log of the test run (each gateway process's log
file, and every record logged in the test process itself) and fails the run if one appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.harness import ADMIN_KEY

CONFIGURED_SECRETS = (
    "test-gemini-key",
    "test-openai-key",
    "test-chat-key",  # tests/fakes/upstream.py: the upstream keys
    "imagegate-test-secret",  # tests/conftest.py: the S3 server's secret key
    ADMIN_KEY,
)
"""Secrets the tests configure, found as they are."""

PATTERNS = {
    "API key": re.compile(r"\big-[A-Za-z0-9_-]{20,}"),  # core/keys.py: "ig-" + 43 characters; logs show 10
    "webhook secret": re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]{8,}"),
    "webhook signature": re.compile(r"\bv1,[A-Za-z0-9+/]{20,}={0,2}"),
    "URL signature": re.compile(r"[?&](?:signature|sig|X-Amz-Signature|key|token)=[^&\s\"']{8,}", re.IGNORECASE),
    "bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


@dataclass(frozen=True)
class Leak:
    where: str
    kind: str
    line: str


def leaks_in(lines: Iterable[str], *, where: str) -> list[Leak]:
    found = []
    for line in lines:
        for secret in CONFIGURED_SECRETS:
            if secret in line:
                found.append(Leak(where, f"configured secret {secret!r}", line))
        for kind, pattern in PATTERNS.items():
            if pattern.search(line):
                found.append(Leak(where, kind, line))
    return found


def scan_files(root: Path) -> list[Leak]:
    """Every ``*.log`` file under ``root`` (the gateways' process logs)."""
    found = []
    for path in sorted(root.rglob("*.log")):
        with path.open(errors="replace") as handle:
            found += leaks_in(handle, where=str(path))
    return found
