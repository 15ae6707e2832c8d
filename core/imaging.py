"""Checking and converting image bytes with Pillow: what arrives from an upstream (or a caller)
is verified to be the image it claims to be, and converted when the caller asked for another
format than the upstream can make."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from core.generation import FORMAT_BY_MIME, MIME_BY_FORMAT

_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
MAX_PIXELS = 16384 * 16384


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png, jpeg, webp, gif
    width: int
    height: int

    @property
    def mime_type(self) -> str:
        return MIME_BY_FORMAT.get(self.format, f"image/{self.format}")


class NotAnImageError(ValueError):
    """The bytes are not a decodable image of a supported format."""


def probe(data: bytes) -> ImageInfo:
    """Format and size from the image's own header (magic bytes), without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = _PILLOW_FORMATS.get(image.format or "")
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise NotAnImageError("the bytes are not a PNG, JPEG, WebP or GIF image") from exc
    if fmt is None:
        raise NotAnImageError("unsupported image format")
    if width * height > MAX_PIXELS:
        raise NotAnImageError(f"image too large ({width}x{height})")
    return ImageInfo(format=fmt, width=width, height=height)


def declared_matches(declared_mime: str | None, info: ImageInfo) -> bool:
    """Whether a declared MIME type agrees with the bytes (jpg/jpeg spellings alike)."""
    if not declared_mime:
        return True
    declared = declared_mime.split(";")[0].strip().lower().replace("image/jpg", "image/jpeg")
    return declared == info.mime_type or FORMAT_BY_MIME.get(declared) == info.format


def transcode(data: bytes, output_format: str, compression: int | None) -> bytes:
    """The image re-encoded as ``output_format`` (``compression``: jpeg/webp quality 0-100)."""
    quality = 90 if compression is None else max(1, min(100, compression))
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image: Image.Image = opened
        buffer = io.BytesIO()
        if output_format == "jpeg":
            if image.mode in ("RGBA", "LA", "P"):
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                image = flat
            image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        elif output_format == "webp":
            image.save(buffer, format="WEBP", quality=quality)
        elif output_format == "png":
            image.save(buffer, format="PNG", compress_level=3)
        else:
            raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()
