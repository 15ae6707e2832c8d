"""Checking and converting image bytes with Pillow: what arrives from an upstream (or a caller)
is verified to be the image it claims to be, and converted when the caller asked for another
format than the upstream can make.

Nothing here decodes an image before its size is checked: :func:`open_checked` opens an image by
its header only (Pillow's ``Image.open`` is lazy) and refuses one of more pixels than allowed, so
a small file that claims a huge canvas (a 17 KB PNG of 12000x12000) never costs its pixels' worth
of memory."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from core.config import DEFAULT_MAX_INPUT_PIXELS
from core.generation import FORMAT_BY_MIME, MIME_BY_FORMAT

_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
MAX_PIXELS = DEFAULT_MAX_INPUT_PIXELS
"""The most pixels imagegate decodes of an image it is not told a limit for (an upstream's answer
before transcoding); a caller's images are held to ``IMAGEGATE_MAX_INPUT_PIXELS``."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png, jpeg, webp, gif
    width: int
    height: int

    @property
    def mime_type(self) -> str:
        return MIME_BY_FORMAT.get(self.format, f"image/{self.format}")


def load_codecs() -> None:
    """Import Pillow's format plugins now (it imports them on the first image otherwise): a
    serving process calls this as it starts, so that its first image pays no import."""
    Image.init()


class NotAnImageError(ValueError):
    """The bytes are not a decodable image of a supported format."""


class ImageTooLargeError(NotAnImageError):
    """The bytes are an image with more pixels than allowed; refused before any pixel is decoded."""

    def __init__(self, *, width: int | None, height: int | None, max_pixels: int) -> None:
        self.width, self.height, self.max_pixels = width, height, max_pixels
        limit = f"{max_pixels / 1e6:g} megapixels"
        if width is None or height is None:
            super().__init__(f"the image has more pixels than the limit of {limit}")
        else:
            super().__init__(f"the image is {width}x{height} ({width * height / 1e6:g} megapixels), "
                             f"more than the limit of {limit}")


@contextmanager
def open_checked(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """The image, opened lazily: ``Image.open`` reads its header (format and size), not its pixels,
    and an image of more than ``max_pixels`` pixels is refused before anything decodes it."""
    try:
        opened = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own bound: twice Image.MAX_IMAGE_PIXELS
        raise ImageTooLargeError(width=None, height=None, max_pixels=max_pixels) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise NotAnImageError("the bytes are not a PNG, JPEG, WebP or GIF image") from exc
    with opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise ImageTooLargeError(width=width, height=height, max_pixels=max_pixels)
        yield opened


def probe(data: bytes, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Format and size from the image's own header (magic bytes), without decoding the pixels;
    :class:`ImageTooLargeError` past ``max_pixels``."""
    with open_checked(data, max_pixels=max_pixels) as image:
        fmt = _PILLOW_FORMATS.get(image.format or "")
        width, height = image.size
    if fmt is None:
        raise NotAnImageError("unsupported image format")
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
    with open_checked(data) as opened:
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
