"""Images as files under a directory: the data dir, or a volume every process mounts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

CHUNK = 256 * 1024


class LocalImageStore:
    """Files under ``root``, written then renamed so that a reader never sees half an image."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return 0
        files = [p for p in folder.iterdir() if p.is_file()]
        for path in files:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a writer's temporary file may still be there
            folder.rmdir()
        return len(files)

    def path_for(self, key: str) -> Path | None:
        return self._path(key)

    async def aget(self, key: str) -> bytes:
        return await anyio.to_thread.run_sync(self.get, key)

    async def aopen(self, key: str) -> AsyncIterator[bytes]:
        handle = await anyio.open_file(self._path(key), "rb")

        async def chunks() -> AsyncIterator[bytes]:
            async with handle:
                while chunk := await handle.read(CHUNK):
                    yield chunk

        return chunks()

    def presign(self, key: str, *, ttl_s: int) -> str | None:
        return None
