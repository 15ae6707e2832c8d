"""Signed, expiring file URLs: ``/v1/files/{id}?expires=..&signature=..``.

OpenAI's own image URLs open without credentials for an hour; imagegate's do the same, signed
with a server secret so that only the gateway can mint them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path


def load_or_create_signing_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else one kept in the data dir (created on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = data_dir / "url-signing.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip().encode("utf-8")


def sign(key: bytes, file_id: str, expires: int) -> str:
    return hmac.new(key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(key: bytes, file_id: str, *, ttl_s: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    return f"expires={expires}&signature={sign(key, file_id, expires)}"


def verify(key: bytes, file_id: str, expires: str | None, signature: str | None) -> bool:
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses
    if not expires or not signature or not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
        return False
    if int(expires) < time.time():
        return False
    return hmac.compare_digest(sign(key, file_id, int(expires)), signature)
