"""The local image store and the object keys images are stored under."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.storage import LocalImageStore, image_object_key


def test_put_get_exists_path_for(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    key = "ab/job_xyzab/0-1.png"
    assert store.exists(key) is False

    store.put(key, b"\x89PNG fake bytes")

    assert store.exists(key) is True
    assert store.get(key) == b"\x89PNG fake bytes"
    path = store.path_for(key)
    assert path == (tmp_path / "images" / "ab" / "job_xyzab" / "0-1.png").resolve()
    assert path is not None and path.read_bytes() == b"\x89PNG fake bytes"


def test_put_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    store.put("k/a.png", b"one")
    store.put("k/a.png", b"two")
    assert store.get("k/a.png") == b"two"
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["a.png"]


def test_root_is_created(tmp_path: Path) -> None:
    LocalImageStore(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_get_of_missing_key_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalImageStore(tmp_path).get("nope.png")


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


def test_each_attempt_has_its_own_key() -> None:
    first = image_object_key("job_0123abcd", 0, "png", attempt=1)
    second = image_object_key("job_0123abcd", 0, "png", attempt=2)
    assert first != second
