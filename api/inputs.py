"""Images callers send (edits, references): located by the dialects, loaded here, stored once.

A dialect only *locates* the images of a request, as :class:`ImageRef` values: an http(s) or
``data:`` URL, base64 with a declared type, or the bytes of a multipart file, each with the field
that names it in errors. The shared flow (:mod:`api.flow`) checks everything that costs nothing
first (the key, the model's input limit, rate limits, the budget) and only then calls
:func:`load_images`, which decodes strictly, fetches URLs through the SSRF-safe fetcher and checks
every image by its magic bytes, within the request's caps: how many images, how many bytes in all,
how long all fetches may take.

Each loaded image is a :class:`PendingImage`: bytes in memory under a key derived from their
content. Submit writes them to the image store only once the request has been accepted (the same
image sent twice is stored once); the job references the key, so image bytes never enter a
database row or a queue message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from api.fetch import FetchPolicy, fetch_image
from core.config import Settings
from core.errors import InvalidRequestError
from core.generation import InputImage
from core.imaging import ImageInfo, ImageTooLargeError, NotAnImageError, declared_matches, probe
from core.storage import ImageStore

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*);base64,(?P<data>.*)$",
                       re.DOTALL | re.IGNORECASE)
_EXT = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}


@dataclass(frozen=True)
class ImageRef:
    """An image of a request, not loaded yet; exactly one of ``url``, ``data`` and ``raw`` is set."""

    param: str
    """The field that names the image in errors, as the caller wrote it (``images[0].image_url``)."""
    url: str | None = None
    """An http(s) URL (fetched) or a ``data:`` URL (decoded)."""
    data: str | None = None
    """Base64, standard or URL-safe, padded or not."""
    raw: bytes | None = None
    """The bytes of a multipart file."""
    mime_type: str | None = None
    """The type the caller declared, checked against the bytes."""

    def fingerprint(self) -> str:
        """What identifies the image as sent (a URL as written, else a digest of its bytes): the
        part of an idempotent request's hash that stands for this image."""
        if self.url is not None and not self.url.lstrip().lower().startswith("data:"):
            return "url:" + self.url.strip()
        payload = (self.url or self.data or "").encode() if self.raw is None else self.raw
        return "sha256:" + hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class PendingImage:
    data: bytes
    info: ImageInfo

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.data).hexdigest()
        return f"inputs/{digest[:2]}/{digest}.{_EXT[self.info.format]}"

    def as_input(self) -> InputImage:
        return InputImage(object_key=self.key, mime_type=self.info.mime_type,
                          width=self.info.width, height=self.info.height)


@dataclass(frozen=True)
class InputLimits:
    """What one request may make imagegate load."""

    max_images: int
    max_image_bytes: int
    max_total_bytes: int
    total_timeout_s: float
    fetch: FetchPolicy

    @property
    def max_pixels(self) -> int:
        return self.fetch.max_pixels

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        max_image = int(settings.fetch_max_mb * 1024 * 1024)
        return cls(max_images=settings.max_input_images, max_image_bytes=max_image,
                   max_total_bytes=int(settings.max_input_mb * 1024 * 1024),
                   total_timeout_s=settings.fetch_total_timeout_s,
                   fetch=FetchPolicy(max_bytes=max_image, timeout_s=settings.fetch_timeout_s,
                                     allow=tuple(settings.fetch_allow_hosts), max_pixels=settings.max_input_pixels))


def _invalid(param: str, message: str, code: str = "invalid_image") -> InvalidRequestError:
    return InvalidRequestError(f"Invalid image in '{param}': {message}", param=param, code=code)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def from_bytes(data: bytes, *, param: str, declared_mime: str | None = None, max_bytes: int,
               max_pixels: int) -> PendingImage:
    if not data:
        raise _invalid(param, "the image is empty.")
    if len(data) > max_bytes:
        raise _invalid(param, f"the image is larger than {_mib(max_bytes)}.")
    try:
        info = probe(data, max_pixels=max_pixels)
    except ImageTooLargeError as error:
        raise _invalid(param, f"{error}.", code="image_too_large") from None
    except NotAnImageError:
        raise _invalid(param, "the content is not a PNG, JPEG, WebP or GIF image.") from None
    if declared_mime and declared_mime != "application/octet-stream" and not declared_matches(declared_mime, info):
        raise _invalid(param, f"declared as {declared_mime} but the bytes are {info.mime_type}.")
    return PendingImage(data=data, info=info)


def standard_base64(data: str) -> str:
    """Standard, padded base64 from standard or URL-safe, padded or not (proto3 JSON allows all
    four; google-genai sends URL-safe), line breaks removed."""
    compact = "".join(data.split()).replace("-", "+").replace("_", "/")
    return compact + "=" * (-len(compact) % 4)


def from_base64(value: str, *, param: str, declared_mime: str | None = None, max_bytes: int,
                max_pixels: int) -> PendingImage:
    compact = standard_base64(value)
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise _invalid(param, f"the image is larger than {_mib(max_bytes)}.")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(param, "the data is not valid base64.") from None
    return from_bytes(data, param=param, declared_mime=declared_mime, max_bytes=max_bytes, max_pixels=max_pixels)


def parse_data_url(value: str, *, param: str, max_bytes: int, max_pixels: int) -> PendingImage:
    match = _DATA_URL.match(value.strip())
    if match is None:
        raise _invalid(param, "a data URL must look like data:<mime>;base64,<data>.")
    return from_base64(match.group("data"), param=param, declared_mime=match.group("mime"), max_bytes=max_bytes,
                       max_pixels=max_pixels)


async def load_image(ref: ImageRef, *, limits: InputLimits) -> PendingImage:
    """One image: decoded, or fetched by the SSRF-safe fetcher; checked by its magic bytes and,
    from its header, its number of pixels."""
    caps = {"max_bytes": limits.max_image_bytes, "max_pixels": limits.max_pixels}
    if ref.raw is not None:
        return from_bytes(ref.raw, param=ref.param, declared_mime=ref.mime_type, **caps)
    if ref.data is not None:
        return from_base64(ref.data, param=ref.param, declared_mime=ref.mime_type, **caps)
    url = (ref.url or "").strip()
    if url.lower().startswith("data:"):
        return parse_data_url(url, param=ref.param, **caps)
    fetched = await fetch_image(url, param=ref.param, policy=limits.fetch)
    pending = PendingImage(data=fetched.data, info=fetched.info)
    if ref.mime_type and not declared_matches(ref.mime_type, pending.info):
        raise _invalid(ref.param, f"declared as {ref.mime_type} but the bytes are {pending.info.mime_type}.")
    return pending


async def load_images(refs: Sequence[ImageRef], *, limits: InputLimits) -> list[PendingImage]:
    """Every image of a request, in order, within the request's caps (count, total bytes, total
    time). URLs are fetched one after the other, so that one request never holds more than one
    fetch open."""
    if len(refs) > limits.max_images:
        raise InvalidRequestError(f"Invalid value for '{refs[limits.max_images].param}': a request takes at most "
                                  f"{limits.max_images} input images.", param=refs[limits.max_images].param,
                                  code="too_many_images")
    loaded: list[PendingImage] = []
    total = 0
    try:
        async with asyncio.timeout(limits.total_timeout_s):
            for ref in refs:
                image = await load_image(ref, limits=limits)
                total += len(image.data)
                if total > limits.max_total_bytes:
                    raise _invalid(ref.param, f"the request's images are larger than {_mib(limits.max_total_bytes)} "
                                              "in all.", code="images_too_large")
                loaded.append(image)
    except TimeoutError:
        raise InvalidRequestError(
            f"Could not fetch the request's images within {limits.total_timeout_s:g} s in all.",
            param=refs[len(loaded)].param if len(loaded) < len(refs) else None, code="invalid_image_url") from None
    return loaded


def store_pending(store: ImageStore, images: Sequence[PendingImage]) -> None:
    """Write the images not stored yet (content-addressed: an existing key is the same bytes)."""
    for image in images:
        if not store.exists(image.key):
            store.put(image.key, image.data)
