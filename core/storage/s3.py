"""Images in an S3-compatible object store (AWS S3, MinIO, Cloudflare R2, GCS's S3 API).

The client is obstore (https://developmentseed.org/obstore), Python bindings of the Rust
``object_store`` crate: a small surface (put, get, head, delete, sign — all this needs), a native
connection pool with retries, blocking calls that release the GIL and native asyncio calls, and
bytes handed over without extra copies — where boto3 would bring a large API, per-call Python
overhead and threads for every request.

``IMAGEGATE_STORAGE_URL=s3://bucket/prefix`` names the bucket and the key prefix; the endpoint,
region and credentials come from ``IMAGEGATE_S3_*`` (or the standard ``AWS_*`` variables).
Credentials are secrets: never logged, never in an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.store import S3Store

from core.config import Settings


class S3ImageStore:
    def __init__(self, store: S3Store) -> None:
        self._store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ImageStore:
        if settings.storage_url is None:
            raise ValueError("IMAGEGATE_STORAGE_URL is not an s3:// URL")
        parts = urlsplit(settings.storage_url)
        if not parts.netloc:
            raise ValueError("IMAGEGATE_STORAGE_URL names no bucket: use s3://bucket/prefix")
        config: dict[str, Any] = {"region": settings.s3_region}
        client: dict[str, Any] = {}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
            # a custom endpoint (MinIO, a local server) is addressed by path, not by bucket host
            config["virtual_hosted_style_request"] = False
            if settings.s3_endpoint_url.startswith("http://"):
                client["allow_http"] = True
        if settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None:
            config["access_key_id"] = settings.s3_access_key_id.get_secret_value()
            config["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
        prefix = parts.path.strip("/") or None
        store = S3Store(parts.netloc, prefix=prefix, config=config,  # type: ignore[arg-type]
                        client_options=client)  # type: ignore[arg-type]
        return cls(store)

    def put(self, key: str, data: bytes) -> None:
        obstore.put(self._store, key, data)

    def get(self, key: str) -> bytes:
        return bytes(obstore.get(self._store, key).bytes())

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self._store, key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            obstore.delete(self._store, list(keys))

    def delete_prefix(self, prefix: str) -> int:
        keys = [meta["path"] for page in obstore.list(self._store, prefix=prefix) for meta in page]
        for start in range(0, len(keys), 1000):  # S3's DeleteObjects takes up to 1000 keys
            obstore.delete(self._store, keys[start:start + 1000])
        return len(keys)

    def path_for(self, key: str) -> Path | None:
        return None

    async def aget(self, key: str) -> bytes:
        result = await obstore.get_async(self._store, key)
        return bytes(await result.bytes_async())

    async def aopen(self, key: str) -> AsyncIterator[bytes]:
        result = await obstore.get_async(self._store, key)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=256 * 1024):
                yield bytes(chunk)

        return chunks()

    def presign(self, key: str, *, ttl_s: int) -> str | None:
        return str(obstore.sign(self._store, "GET", key, timedelta(seconds=ttl_s)))
