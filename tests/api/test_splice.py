"""The splice of images' base64 into an answer (api/splice.py): the bytes sent equal the JSON of
the fully rendered body, the Content-Length is exact, and an image's base64 equals its one-shot
encoding however the store cuts it into chunks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from api.splice import Aligner, Splice, SplicedResponse, b64_length
from core.storage.local import LocalImageStore


class ChunkedStore(LocalImageStore):
    """The local store, reading in chunks of a chosen size (not a multiple of 3)."""

    def __init__(self, root: Path, chunk: int) -> None:
        super().__init__(root)
        self.chunk = chunk
        self.opened = 0

    async def aopen(self, key: str) -> AsyncIterator[bytes]:
        data = self.get(key)
        self.opened += 1

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), self.chunk):
                yield data[start : start + self.chunk]

        return chunks()


async def send_through(response: Response) -> tuple[dict[str, str], list[bytes]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await response({"type": "http"}, receive, send)
    start = messages[0]
    assert start["type"] == "http.response.start"
    assert messages[-1]["more_body"] is False
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return headers, [m["body"] for m in messages[1:]]


# every chunk size against every data size, but the few where tiny chunks of a large image would
# take long to prove nothing more
SIZES_AND_CHUNKS = [(size, chunk) for size in [0, 1, 2, 3, 4, 5, 100, 262_144, 1_050_015]
                    for chunk in [1, 2, 4, 5, 7, 65_536, 262_144, 10**7] if size <= 10_000 * chunk]


@pytest.mark.parametrize(("size", "chunk"), SIZES_AND_CHUNKS)
def test_aligned_chunks_equal_the_one_shot_base64(size: int, chunk: int) -> None:
    data = os.urandom(size)
    aligner = Aligner()
    pieces = [encoded for start in range(0, size, chunk) for encoded in aligner.feed(data[start : start + chunk])]
    pieces += list(aligner.close())
    assert b"".join(pieces) == base64.b64encode(data)
    assert aligner.consumed == size
    assert b64_length(size) == len(base64.b64encode(data))


def render(store: LocalImageStore, images: dict[str, bytes], splice: Splice | None) -> dict[str, Any]:
    """A body shaped like the dialects' (bare base64 and data URLs, several images, text
    around them), with placeholders (``splice``) or the real base64."""

    def b64(key: str) -> str:
        if splice is not None:
            return splice.placeholder(key, len(images[key]))
        return base64.b64encode(images[key]).decode()

    keys = list(images)
    return {
        "created": 1,
        "data": [{"b64_json": b64(k), "revised_prompt": f'é "{k}" \u2028'} for k in keys],
        "choices": [
            {
                "message": {
                    "images": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(keys[0])}"}}]
                }
            }
        ],
        "usage": {"total_tokens": 3},
    }


@pytest.mark.parametrize("chunk", [1_001, 65_536, 262_144])
def test_spliced_answer_is_the_json_of_the_rendered_body(tmp_path: Path, chunk: int) -> None:
    store = ChunkedStore(tmp_path, chunk)
    images = {f"ab/job_ab/{k}-1.png": os.urandom(size) for k, size in enumerate([1_050_015, 1, 2, 3, 300_001])}
    for key, data in images.items():
        store.put(key, data)

    async def scenario() -> tuple[dict[str, str], list[bytes], Response]:
        splice = Splice(store)
        rendered = JSONResponse(render(store, images, splice), headers={"x-extra": "1"})
        assert len(rendered.body) < 2000  # the placeholders are small
        response = await splice.response(rendered)
        return (*await send_through(response), response)

    headers, bodies, response = asyncio.run(scenario())
    expected = JSONResponse(render(store, images, None)).body  # what JSONResponse renders in full
    assert expected == json.dumps(render(store, images, None), ensure_ascii=False, separators=(",", ":")).encode()
    assert isinstance(response, SplicedResponse)
    assert b"".join(bodies) == expected
    assert int(headers["content-length"]) == len(expected) == response.content_length
    assert headers["content-type"] == "application/json"
    assert headers["x-extra"] == "1"
    assert "content-encoding" not in headers
    assert len(bodies) > len(images)  # streamed, not built in memory
    assert max(map(len, bodies)) <= max(chunk // 3 * 4 + 8, 2000)  # never a whole image at once
    assert store.opened == len(images) + 1  # the first image appears twice


def test_an_answer_without_placeholders_is_left_as_it_is(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)

    async def scenario() -> Response:
        splice = Splice(store)
        other = Splice(store)  # someone else's placeholder (a prompt quoting one) is only text
        text = other.placeholder("x", 1) + "imagegate-b64-" + splice.nonce + "-7"
        return await splice.response(JSONResponse({"text": text}))

    response = asyncio.run(scenario())
    assert not isinstance(response, SplicedResponse)
    assert b"imagegate-b64-" in bytes(response.body)


def test_a_missing_image_raises_before_anything_is_sent(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)

    async def scenario() -> None:
        splice = Splice(store)
        await splice.response(JSONResponse({"b64_json": splice.placeholder("ab/gone.png", 10)}))

    with pytest.raises(FileNotFoundError):
        asyncio.run(scenario())


def test_an_image_of_another_size_than_recorded_ends_the_answer(tmp_path: Path) -> None:
    """The length was announced: a stored object that disagrees must not pass for the answer."""
    store = LocalImageStore(tmp_path)
    store.put("ab/img.png", b"12345")

    async def scenario() -> None:
        splice = Splice(store)
        response = await splice.response(JSONResponse({"b64_json": splice.placeholder("ab/img.png", 6)}))
        await send_through(response)

    with pytest.raises(RuntimeError, match="5 bytes, 6 were recorded"):
        asyncio.run(scenario())


def test_an_image_of_unknown_size_is_read_before_the_answer(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    store.put("ab/img.png", b"1234567")

    async def scenario() -> tuple[dict[str, str], list[bytes]]:
        splice = Splice(store)
        return await send_through(await splice.response(JSONResponse({"b": splice.placeholder("ab/img.png", None)})))

    headers, bodies = asyncio.run(scenario())
    expected = json.dumps({"b": base64.b64encode(b"1234567").decode()}, separators=(",", ":")).encode()
    assert (b"".join(bodies), int(headers["content-length"])) == (expected, len(expected))


def test_a_streamed_event_is_expanded(tmp_path: Path) -> None:
    store = ChunkedStore(tmp_path, 1000)
    data = os.urandom(10_000)
    store.put("ab/img.png", data)

    async def scenario() -> list[bytes]:
        splice = Splice(store)
        event = b"data: " + json.dumps({"inlineData": {"data": splice.placeholder("ab/img.png", len(data))}}).encode()
        return [piece async for piece in splice.expand(event + b"\n\n")]

    pieces = asyncio.run(scenario())
    expected = b"data: " + json.dumps({"inlineData": {"data": base64.b64encode(data).decode()}}).encode() + b"\n\n"
    assert b"".join(pieces) == expected
    assert len(pieces) > 3
