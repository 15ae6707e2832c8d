"""Answers with images in base64, whose bytes are touched once: read from the store and encoded
as the answer is sent, never held as one megabyte string nor serialised through pydantic or json.

A renderer builds its dialect's body as usual, but with a short placeholder where each image's
base64 goes (:meth:`Splice.placeholder`: ``imagegate-b64-<nonce>-<k>``, the nonce random for each
answer, so no other text of the body can hold it by chance, and made of characters JSON never
escapes). :meth:`Splice.response` then turns the rendered answer into a :class:`SplicedResponse`,
which writes the JSON around the placeholders and, in their place, streams each image's base64
from the store, encoding chunks of a multiple of 3 bytes with pybase64 so that the text equals
the one-shot encoding. Base64 needs no JSON escaping (it is ``A-Z a-z 0-9 + / =``), so the answer
is byte for byte the one ``json.dumps`` of the fully rendered body would give, and its
``Content-Length`` is exact: the JSON's length plus ``4 * ceil(size / 3)`` per image, from the
stored sizes. An image payload is never gzipped.

A streamed answer (server-sent events) expands the placeholders of each event the same way
(:meth:`Splice.expand`), without a length.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pybase64
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.storage import ImageStore

log = logging.getLogger(__name__)

MARKER_PREFIX = b"imagegate-b64-"


def b64_length(size: int) -> int:
    """The length of the padded base64 of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


class Aligner:
    """Base64 of a byte stream that arrives in chunks of any size, equal to the one-shot
    encoding: each chunk's first bytes complete the previous chunk's last 1 or 2, the rest is
    encoded in place (a memoryview, no copy) up to a multiple of 3, the remainder carried on."""

    def __init__(self) -> None:
        self._carry = b""
        self.consumed = 0

    def feed(self, chunk: bytes | memoryview) -> Iterator[bytes]:
        view = memoryview(chunk)
        self.consumed += len(view)
        if self._carry:
            need = 3 - len(self._carry)
            if len(view) < need:
                self._carry += bytes(view)
                return
            yield pybase64.b64encode(self._carry + bytes(view[:need]))
            self._carry, view = b"", view[need:]
        aligned = len(view) - len(view) % 3
        if aligned:
            yield pybase64.b64encode(view[:aligned])
        self._carry = bytes(view[aligned:])

    def close(self) -> Iterator[bytes]:
        if self._carry:
            yield pybase64.b64encode(self._carry)
            self._carry = b""


@dataclass
class Part:
    """One image to splice: its object key and its stored size (None when unknown: it is then
    read whole before the answer starts)."""

    key: str
    size: int | None
    data: bytes | None = None

    @property
    def length(self) -> int:
        size = self.size if self.size is not None else len(self.data or b"")
        return b64_length(size)


class Splice:
    """The placeholders of one answer and the images they stand for."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.nonce = secrets.token_hex(12)
        self.parts: dict[bytes, Part] = {}
        self._pattern = re.compile(re.escape(MARKER_PREFIX + self.nonce.encode()) + rb"-\d+")

    def placeholder(self, key: str, size: int | None) -> str:
        """The text to render where the base64 of the object ``key`` (``size`` bytes) goes."""
        marker = MARKER_PREFIX + f"{self.nonce}-{len(self.parts)}".encode()
        self.parts[marker] = Part(key, size)
        return marker.decode("ascii")

    def __bool__(self) -> bool:
        return bool(self.parts)

    def segments(self, body: bytes) -> list[bytes | Part]:
        """The body cut at its placeholders: text, then the part in its place, and so on."""
        out: list[bytes | Part] = []
        position = 0
        for found in self._pattern.finditer(body):
            part = self.parts.get(found.group())
            if part is None:
                continue  # looks like one of ours, is not: left as it is
            out.append(body[position : found.start()])
            out.append(part)
            position = found.end()
        out.append(body[position:])
        return out

    async def _load_unsized(self) -> None:
        for part in self.parts.values():
            if part.size is None and part.data is None:
                part.data = await self.store.aget(part.key)

    async def response(self, rendered: Response) -> Response:
        """The rendered answer, its placeholders to be replaced by the images as it is sent. An
        image missing from the store raises here, before anything is sent."""
        segments = self.segments(bytes(rendered.body))
        used = [s for s in segments if isinstance(s, Part)]
        if not used:
            return rendered
        await self._load_unsized()
        opened = [await self._open(part) for part in used]
        headers = [(k, v) for k, v in rendered.raw_headers if k.lower() != b"content-length"]
        length = sum(len(s) if isinstance(s, bytes) else s.length for s in segments)
        return SplicedResponse(
            segments, opened, status_code=rendered.status_code, raw_headers=headers, content_length=length
        )

    async def _open(self, part: Part) -> AsyncIterator[bytes]:
        if part.data is not None:
            return _single(part.data)
        return await self.store.aopen(part.key)

    async def expand(self, chunk: bytes) -> AsyncIterator[bytes]:
        """A chunk of a streamed answer with its placeholders replaced (for server-sent events,
        whose length is not announced)."""
        for segment in self.segments(chunk):
            if isinstance(segment, bytes):
                if segment:
                    yield segment
                continue
            await self._load_unsized()
            async for encoded in _encode(await self._open(segment), segment):
                yield encoded


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _encode(chunks: AsyncIterator[bytes], part: Part) -> AsyncIterator[bytes]:
    aligner = Aligner()
    async for chunk in chunks:
        for encoded in aligner.feed(chunk):
            yield encoded
    for encoded in aligner.close():
        yield encoded
    expected = part.size if part.size is not None else len(part.data or b"")
    if aligner.consumed != expected:
        # the length is announced: a short or long image would corrupt the answer, so it ends here
        raise RuntimeError(f"stored image {part.key} has {aligner.consumed} bytes, {expected} were recorded")


class SplicedResponse(Response):
    """An answer sent as JSON text and images' base64 streamed from the store, in order, with an
    exact Content-Length (see the module docstring)."""

    def __init__(
        self,
        segments: list[bytes | Part],
        opened: list[AsyncIterator[bytes]],
        *,
        status_code: int,
        raw_headers: list[tuple[bytes, bytes]],
        content_length: int,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = b""
        self._segments = segments
        self._opened = opened
        self.content_length = content_length
        self.raw_headers = [*raw_headers, (b"content-length", str(content_length).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        opened = iter(self._opened)
        pending = b""
        for segment in self._segments:
            if isinstance(segment, bytes):
                pending += segment
                continue
            async for encoded in _encode(next(opened), segment):
                if pending:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                    pending = b""
                await send({"type": "http.response.body", "body": encoded, "more_body": True})
        await send({"type": "http.response.body", "body": pending, "more_body": False})
