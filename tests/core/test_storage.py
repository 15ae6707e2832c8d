"""The image stores, local and S3 (against a real S3-protocol server), and the object keys images
are stored under."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Settings
from core.storage import ImageStore, image_object_key, open_store
from core.storage.local import LocalImageStore
from core.storage.s3 import S3ImageStore
from tests.conftest import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImageStore]:
    if request.param == "local":
        yield LocalImageStore(tmp_path / "images")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    settings = Settings(_env_file=None, data_dir=tmp_path, **server.settings(server.bucket()))  # type: ignore[arg-type]
    yield open_store(settings)


def test_put_get_exists_delete(store: ImageStore) -> None:
    key = "ab/job_xyzab/0-1.png"
    assert store.exists(key) is False
    store.put(key, b"\x89PNG fake bytes")
    assert store.exists(key) is True
    assert store.get(key) == b"\x89PNG fake bytes"
    assert asyncio.run(store.aget(key)) == b"\x89PNG fake bytes"
    store.delete([key, "ab/never/was.png"])
    assert store.exists(key) is False
    with pytest.raises(FileNotFoundError):
        store.get(key)


def test_a_large_object_streams_in_chunks(store: ImageStore) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    store.put("big/one.png", data)

    async def read() -> list[bytes]:
        return [chunk async for chunk in await store.aopen("big/one.png")]

    chunks = asyncio.run(read())
    assert b"".join(chunks) == data and len(chunks) > 1


def test_a_local_image_is_read_on_the_event_loop(tmp_path: Path) -> None:
    """Each read of a local image is a page-cache copy: no thread hop per chunk (the answer of
    a 1 MiB image is sent by the request's own loop)."""
    store = LocalImageStore(tmp_path / "images")
    data = bytes(range(256)) * 12288  # 3 MiB: three chunks
    store.put("big/one.png", data)
    loop_thread: list[int] = []
    reads: list[int] = []

    class Watched(io.FileIO):
        def read(self, size: int | None = -1, /) -> bytes:
            reads.append(threading.get_ident())
            return super().read(size)

    async def read() -> bytes:
        loop_thread.append(threading.get_ident())
        return b"".join([chunk async for chunk in await store.aopen("big/one.png")])

    opened = Path.open

    def watched_open(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return Watched(path, "rb") if path.name == "one.png" and mode == "rb" else opened(path, mode, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", watched_open)
        assert asyncio.run(read()) == data
    assert len(reads) >= 3 and set(reads) == set(loop_thread)


def test_a_missing_object_is_refused_before_any_chunk(store: ImageStore) -> None:
    with pytest.raises(FileNotFoundError):
        asyncio.run(store.aopen("not/there.png"))  # type: ignore[arg-type]


def test_only_s3_presigns(store: ImageStore) -> None:
    store.put("p/q.png", b"presigned bytes")
    url = store.presign("p/q.png", ttl_s=60)
    if isinstance(store, LocalImageStore):
        assert url is None
        return
    assert isinstance(store, S3ImageStore) and url is not None
    response = httpx.get(url)  # no credentials: the URL carries its signature
    assert (response.status_code, response.content) == (200, b"presigned bytes")


def test_s3_keys_live_under_the_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    settings = Settings(_env_file=None, data_dir=tmp_path, **s3_server.settings(bucket, prefix="gw/images"))  # type: ignore[arg-type]
    open_store(settings).put("cd/job_1/0-1.png", b"x")
    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["gw/images/cd/job_1/0-1.png"]


def test_the_storage_url_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(Settings(_env_file=None, data_dir=tmp_path)), LocalImageStore)  # type: ignore[call-arg]
    local = open_store(Settings(_env_file=None, storage_url=f"file://{tmp_path}/elsewhere"))  # type: ignore[call-arg]
    assert isinstance(local, LocalImageStore) and local.root == (tmp_path / "elsewhere").resolve()
    with pytest.raises(ValueError, match="file:///path or s3://bucket/prefix"):
        open_store(Settings(_env_file=None, storage_url="ftp://x/y"))  # type: ignore[call-arg]


def test_local_path_for_and_atomic_replace(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    store.put("k/a.png", b"one")
    store.put("k/a.png", b"two")
    assert store.get("k/a.png") == b"two"
    assert sorted(p.name for p in (tmp_path / "images" / "k").iterdir()) == ["a.png"]
    assert store.path_for("k/a.png") == (tmp_path / "images" / "k" / "a.png").resolve()


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "."])
def test_key_escaping_the_root_is_refused(tmp_path: Path, key: str) -> None:
    store = LocalImageStore(tmp_path / "images")
    for operation in (store.exists, store.get, store.path_for):
        with pytest.raises(ValueError, match="escapes the store"):
            operation(key)
    with pytest.raises(ValueError, match="escapes the store"):
        store.put(key, b"data")
    assert not (tmp_path / "x").exists()


def test_image_object_key() -> None:
    assert image_object_key("job_0123abcd", 0, "png", attempt=1) == "cd/job_0123abcd/0-1.png"
    assert image_object_key("job_0123abcd", 3, "jpeg", attempt=2) == "cd/job_0123abcd/3-2.jpg"
    assert image_object_key("job_0123abcd", 3, "webp", attempt=7) == "cd/job_0123abcd/3-7.webp"
    assert image_object_key("job_0123abcd", 0, "png", attempt=1) != image_object_key(
        "job_0123abcd", 0, "png", attempt=2)
