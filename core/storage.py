"""Where image bytes live. The database holds only object keys, never the bytes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol


class ImageStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def path_for(self, key: str) -> Path | None:
        """A local path to serve the object from without reading it into memory, if any."""
        ...
    def exists(self, key: str) -> bool: ...


class LocalImageStore:
    """Files under a directory (the data dir, or a volume shared by API and workers)."""

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
        # write-then-rename: a reader never sees a half-written image
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

    def path_for(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()


def image_object_key(job_id: str, index: int, output_format: str, *, attempt: int) -> str:
    """Where an image attempt is stored; each attempt has its own key, so a late writer whose
    lease expired can never overwrite the image that another attempt delivered."""
    ext = "jpg" if output_format == "jpeg" else output_format
    return f"{job_id[-2:]}/{job_id}/{index}-{attempt}.{ext}"
