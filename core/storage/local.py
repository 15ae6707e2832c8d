"""Images as files under a directory: the data dir, or a volume every process mounts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

CHUNK = 1024 * 1024
"""How much of a file one read of :meth:`LocalImageStore.aopen` takes: an image of up to this
size is read in one go, a larger one in pieces of this size."""
FOLDERS_REMEMBERED = 4096


class LocalImageStore:
    """Files under ``root``, written then renamed so that a reader never sees half an image.

    A key is checked by its syntax (relative, no empty, ``.`` or ``..`` part), not by resolving
    its path on disk: every key is made by imagegate itself (``core/storage/__init__.py``), and a
    ``resolve()`` costs an ``lstat`` per path component on every read and write."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._folders: dict[str, None] = {}
        """Folders known to exist (made by this store, most recent last), so that a write does
        not ``mkdir`` its folder each time."""

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or "\x00" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"object key escapes the store: {key!r}")
        return self.root.joinpath(*parts)

    def _folder(self, path: Path) -> None:
        folder = str(path.parent)
        if folder in self._folders:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._folders[folder] = None
        if len(self._folders) > FOLDERS_REMEMBERED:
            del self._folders[next(iter(self._folders))]

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._folder(path)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except FileNotFoundError:  # the folder was removed since (its job's clean-up): made again
            self._folders.pop(str(path.parent), None)
            self._folder(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def aput(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self.put, key, data)

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
        # read on the event loop, see aopen
        return self.get(key)

    async def aopen(self, key: str) -> AsyncIterator[bytes]:
        # An image is read on the event loop, a megabyte at a time: from the page cache a
        # megabyte takes ~0.03 ms, a tenth of what handing each read to a thread and back costs
        # (bench/README.md), and the loop runs other work between two reads. Writes (aput) stay
        # on a thread: they can wait on the kernel's writeback. A store on a network file
        # system, where a read can stall, belongs on the S3 backend instead.
        path = self._path(key)
        handle = path.open("rb")  # a missing image raises here, before the answer starts
        first = handle.read(CHUNK)

        async def chunks() -> AsyncIterator[bytes]:
            with handle:
                chunk = first
                while chunk:
                    yield chunk
                    if len(chunk) < CHUNK:
                        return
                    chunk = handle.read(CHUNK)

        return chunks()

    def presign(self, key: str, *, ttl_s: int) -> str | None:
        return None
