"""The readiness probe's statement."""

from __future__ import annotations

from sqlalchemy import Select, literal, select


def ping() -> Select[int]:
    return select(literal(1))
