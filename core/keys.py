"""API key secrets: made, hashed and checked here; only the hash is ever stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from core.ids import new_id

SECRET_PREFIX = "ig-"
VISIBLE_CHARS = 10


@dataclass(frozen=True)
class NewKey:
    id: str
    secret: str
    prefix: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    """SHA-256 hex of the secret. Keys carry 256 random bits, so a fast hash is the right one."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_key() -> NewKey:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return NewKey(
        id=new_id("key"),
        secret=secret,
        prefix=secret[:VISIBLE_CHARS],
        secret_hash=hash_secret(secret),
    )


def extract_key(
    *,
    authorization: str | None,
    x_api_key: str | None,
    x_goog_api_key: str | None,
    query_key: str | None,
) -> str | None:
    """The key a request carries, from the first of the places clients put it."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for candidate in (x_api_key, x_goog_api_key, query_key):
        if candidate and candidate.strip():
            return candidate.strip()
    return None
