"""The API keys repository."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, insert, or_, select, update
from sqlalchemy.sql.dml import Update

from core.models import ApiKey


def by_secret_hash(secret_hash: str) -> Select[ApiKey]:
    return select(ApiKey).where(ApiKey.secret_hash == secret_hash)


def by_id_or_name(ident: str) -> Select[ApiKey]:
    return select(ApiKey).where(or_(ApiKey.id == ident, ApiKey.name == ident))


def by_id(key_id: str) -> Select[ApiKey]:
    return select(ApiKey).where(ApiKey.id == key_id)


def name_taken(name: str) -> Select[str]:
    return select(ApiKey.id).where(ApiKey.name == name)


def listing() -> Select[ApiKey]:
    """Every key, oldest first."""
    return select(ApiKey).order_by(ApiKey.created_at)


def any_key() -> Select[str]:
    return select(ApiKey.id).limit(1)


def insert_key(values: dict[str, Any]) -> Insert:
    return insert(ApiKey).values(values)


def set_limits(key_id: str, values: dict[str, Any]) -> Update:
    return update(ApiKey).where(ApiKey.id == key_id).values(values)


def revoke(key_id: str, *, now: datetime) -> Update:
    """Revoke a key (once: a revoked key keeps its first revocation time)."""
    return update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
