"""Identifiers: time-ordered, so that listing by id is listing by creation."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """``<prefix>_<12 hex of ms since epoch><16 hex random>``: sortable, unguessable."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"
