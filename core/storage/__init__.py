"""Where image bytes live. The database holds only object keys, never the bytes.

One interface, :class:`ImageStore`, and two backends chosen by ``IMAGEGATE_STORAGE_URL``:

- ``file:///path`` (the default: ``images/`` under the data dir): files on a local disk, or a
  volume every API and worker process mounts (:mod:`core.storage.local`);
- ``s3://bucket/prefix``: any S3-compatible object store — AWS S3, MinIO, Cloudflare R2, GCS's S3
  API — so that API and workers on different hosts share no filesystem (:mod:`core.storage.s3`).

Writes are whole objects (an image is written once, under a key of its own); reads return the
bytes, or stream them, or hand out a URL the caller fetches without the gateway (a presigned
object-store URL) when the backend and the operator allow it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from core.config import Settings


class ImageStore(Protocol):
    """Blocking methods are for worker threads (and the API, off its event loop); ``a``-prefixed
    ones are for the API's event loop."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove objects; keys that are already gone are no error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` (a job's folder, see
        :func:`job_prefix`); returns how many there were."""
        ...

    def path_for(self, key: str) -> Path | None:
        """A local path to serve the object from without reading it into memory, if any."""
        ...

    async def aget(self, key: str) -> bytes: ...

    async def aopen(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, as they arrive; FileNotFoundError here, before any
        chunk, when there is no such object."""
        ...

    def presign(self, key: str, *, ttl_s: int) -> str | None:
        """A URL that fetches the object directly for ``ttl_s`` seconds, or None when the backend
        has no such URLs."""
        ...


def open_store(settings: Settings) -> ImageStore:
    """The store ``IMAGEGATE_STORAGE_URL`` names."""
    url = settings.storage_url
    if url is None:
        from core.storage.local import LocalImageStore

        return LocalImageStore(settings.images_dir)
    parts = urlsplit(url)
    if parts.scheme == "file":
        from core.storage.local import LocalImageStore

        return LocalImageStore(Path(parts.path))
    if parts.scheme == "s3":
        from core.storage.s3 import S3ImageStore

        return S3ImageStore.from_settings(settings)
    raise ValueError(f"IMAGEGATE_STORAGE_URL must be file:///path or s3://bucket/prefix, got {url!r}")


def job_prefix(job_id: str) -> str:
    """The folder of a job's generated images (every attempt's): retention deletes it whole."""
    return f"{job_id[-2:]}/{job_id}/"


def image_object_key(job_id: str, index: int, output_format: str, *, attempt: int) -> str:
    """Where an image attempt is stored; each attempt has its own key, so a late writer whose
    lease expired can never overwrite the image that another attempt delivered."""
    ext = "jpg" if output_format == "jpeg" else output_format
    return f"{job_prefix(job_id)}{index}-{attempt}.{ext}"


def partial_object_key(job_id: str, index: int, output_format: str, *, attempt: int, partial_index: int) -> str:
    """Where a draft of an image attempt (a streamed partial image) is stored: beside the job's
    images, so whatever removes a job's objects removes its drafts too."""
    ext = "jpg" if output_format == "jpeg" else output_format
    return f"{job_prefix(job_id)}{index}-{attempt}-partial-{partial_index}.{ext}"
