"""Images callers send (edits, references): decoded strictly, checked, stored once.

Every form an image arrives in — a multipart file, a data URL, raw base64 with a declared type,
an http(s) URL — becomes a :class:`PendingImage`: bytes in memory, verified by their magic bytes.
Submit writes them to the image store only once the request has been accepted, under a key
derived from their content (the same image sent twice is stored once); the job references the
key, so image bytes never enter a database row or a queue message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from api.fetch import FetchPolicy, fetch_image
from core.config import Settings
from core.errors import InvalidRequestError
from core.generation import InputImage
from core.imaging import ImageInfo, NotAnImageError, declared_matches, probe
from core.storage import ImageStore

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*);base64,(?P<data>.*)$",
                       re.DOTALL | re.IGNORECASE)
_EXT = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}


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


def _invalid(param: str, message: str, code: str = "invalid_image") -> InvalidRequestError:
    return InvalidRequestError(f"Invalid image in '{param}': {message}", param=param, code=code)


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(max_bytes=int(settings.fetch_max_mb * 1024 * 1024), timeout_s=settings.fetch_timeout_s,
                       allow=tuple(settings.fetch_allow_hosts))


def from_bytes(data: bytes, *, param: str, declared_mime: str | None = None, max_bytes: int) -> PendingImage:
    if not data:
        raise _invalid(param, "the image is empty.")
    if len(data) > max_bytes:
        raise _invalid(param, f"the image is larger than {max_bytes // (1024 * 1024)} MiB.")
    try:
        info = probe(data)
    except NotAnImageError:
        raise _invalid(param, "the content is not a PNG, JPEG, WebP or GIF image.") from None
    if declared_mime and declared_mime != "application/octet-stream" and not declared_matches(declared_mime, info):
        raise _invalid(param, f"declared as {declared_mime} but the bytes are {info.mime_type}.")
    return PendingImage(data=data, info=info)


def from_base64(value: str, *, param: str, declared_mime: str | None = None, max_bytes: int) -> PendingImage:
    """Standard base64 (padding required, whitespace tolerated only as line breaks)."""
    compact = "".join(value.split())
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise _invalid(param, f"the image is larger than {max_bytes // (1024 * 1024)} MiB.")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(param, "the data is not valid base64.") from None
    return from_bytes(data, param=param, declared_mime=declared_mime, max_bytes=max_bytes)


def parse_data_url(value: str, *, param: str, max_bytes: int) -> PendingImage:
    match = _DATA_URL.match(value.strip())
    if match is None:
        raise _invalid(param, "a data URL must look like data:<mime>;base64,<data>.")
    return from_base64(match.group("data"), param=param, declared_mime=match.group("mime"), max_bytes=max_bytes)


async def from_url(value: str, *, param: str, settings: Settings) -> PendingImage:
    """A data URL, or an http(s) URL fetched by the SSRF-safe fetcher."""
    max_bytes = int(settings.fetch_max_mb * 1024 * 1024)
    if value.strip().lower().startswith("data:"):
        return parse_data_url(value, param=param, max_bytes=max_bytes)
    fetched = await fetch_image(value.strip(), param=param, policy=fetch_policy(settings))
    return PendingImage(data=fetched.data, info=fetched.info)


def store_pending(store: ImageStore, images: list[PendingImage]) -> None:
    """Write the images not stored yet (content-addressed: an existing key is the same bytes)."""
    for image in images:
        if not store.exists(image.key):
            store.put(image.key, image.data)
