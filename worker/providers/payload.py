"""Reading images out of upstream answers: strict base64, bytes checked against their declared
type. Shared by every adapter, so a broken answer is the same clear error everywhere. Base64 is
pybase64's (SIMD; the same alphabet and strictness as the standard library's, several times
faster on megabytes)."""

from __future__ import annotations

import binascii

import pybase64

from core.errors import UpstreamError
from core.generation import ProviderImage, Usage
from core.imaging import NotAnImageError, declared_matches, probe


def decode_image(b64: str, *, declared_mime: str | None, label: str, text: str | None = None,
                 usage: Usage | None = None) -> ProviderImage:
    """One upstream image from base64, or a (retryable) UpstreamError naming what is wrong."""
    try:
        data = pybase64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamError(f"The {label} returned an image that is not valid base64.",
                            code="upstream_bad_image", retryable=True) from None
    return image_from_bytes(data, declared_mime=declared_mime, label=label, text=text, usage=usage)


def image_from_bytes(data: bytes, *, declared_mime: str | None, label: str, text: str | None = None,
                     usage: Usage | None = None) -> ProviderImage:
    try:
        info = probe(data)
    except NotAnImageError:
        raise UpstreamError(f"The {label} returned bytes that are not an image.",
                            code="upstream_bad_image", retryable=True) from None
    if not declared_matches(declared_mime, info):
        raise UpstreamError(
            f"The {label} declared {declared_mime} but sent {info.mime_type} bytes.",
            code="upstream_bad_image", retryable=True)
    return ProviderImage(data=data, mime_type=info.mime_type, width=info.width, height=info.height,
                         text=text, usage=usage or Usage())


def data_url(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{b64_text(data)}"


def b64_text(data: bytes) -> str:
    """Standard base64 of ``data``, as text (for a JSON body)."""
    return pybase64.b64encode_as_string(data)


def split_usage(total: Usage, count: int) -> list[Usage]:
    """A call's usage shared out over ``count`` images, in whole tokens (remainders first)."""
    if count <= 1:
        return [total] * max(count, 1)
    fields = total.model_dump()
    shares: list[dict[str, int]] = [{} for _ in range(count)]
    for name, value in fields.items():
        base, extra = divmod(int(value), count)
        for i in range(count):
            shares[i][name] = base + (1 if i < extra else 0)
    return [Usage(**share) for share in shares]
