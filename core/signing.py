"""Signed, expiring file URLs: ``/v1/files/{id}?expires=..&signature=..``.

OpenAI's own image URLs open without credentials for an hour; imagegate's do the same, signed
with a server secret so that only the gateway can mint them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from core.config import Settings
from core.storage import ImageStore
from core.text import ascii_int

KEY_FILE = "url-signing.key"


def load_or_create_signing_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else the one kept in the data dir, created on first use.

    Several processes may start at once on one data dir (``imagegate serve --workers N``), so the
    key is created without a check-then-write race: each process writes a candidate to a file of
    its own and hard-links it to the key's name, which succeeds for exactly one of them; every
    process then reads back the key that is on disk, so all of them sign with the same key."""
    if configured:
        return configured.encode("utf-8")
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        candidate = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(8)}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process's key is there: it is the key
                os.link(candidate, path)
        finally:
            candidate.unlink(missing_ok=True)
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"the URL-signing key file {path} is empty; delete it to have a new one made")
    return key.encode("utf-8")


def sign(key: bytes, file_id: str, expires: int) -> str:
    return hmac.new(key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(key: bytes, file_id: str, *, ttl_s: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    return f"expires={expires}&signature={sign(key, file_id, expires)}"


def verify(key: bytes, file_id: str, expires: str | None, signature: str | None) -> bool:
    """Whether ``signature`` is this server's signature of the file until ``expires`` (not past).
    Anything else a query string may hold is ``False``, never an error."""
    until = ascii_int(expires or "", max_digits=12)
    # hmac.compare_digest raises TypeError on str that are not ASCII
    if until is None or not signature or not signature.isascii() or until < time.time():
        return False
    return hmac.compare_digest(sign(key, file_id, until), signature)


def file_url(settings: Settings, key: bytes, store: ImageStore, image_id: str, object_key: str | None = None) -> str:
    """Where a stored image can be fetched: the gateway's signed ``/v1/files`` URL, or a presigned
    object-store URL when the operator enables them (``IMAGEGATE_S3_PRESIGNED_URLS``)."""
    if object_key is not None and settings.s3_presigned_urls:
        presigned = store.presign(object_key, ttl_s=settings.file_url_ttl_s)
        if presigned is not None:
            return presigned
    query = signed_query(key, image_id, ttl_s=settings.file_url_ttl_s)
    return f"{settings.resolved_public_url}/v1/files/{image_id}?{query}"
