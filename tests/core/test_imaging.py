"""core.imaging: probing image bytes by their magic, checking a declared MIME type against them,
and transcoding to the format the caller asked for."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from core.imaging import (
    MAX_PIXELS,
    ImageInfo,
    ImageTooLargeError,
    NotAnImageError,
    declared_matches,
    open_checked,
    probe,
    transcode,
)
from tests.pngs import blank_png


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb(width: int = 40, height: int = 30, color: tuple[int, int, int] = (200, 20, 20)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


def half_transparent(width: int = 40, height: int = 30) -> Image.Image:
    """Left half opaque red, right half fully transparent (its colour channels black)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, width // 2, height))
    return image


def noisy(width: int = 128, height: int = 96) -> Image.Image:
    return Image.frombytes("RGB", (width, height), bytes((i * 7919) % 251 for i in range(width * height * 3)))


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk claiming ``width`` x ``height`` and an empty IDAT (no pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", b"")


# -- probe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "mime"),
    [("PNG", "png", "image/png"), ("JPEG", "jpeg", "image/jpeg"), ("WEBP", "webp", "image/webp"),
     ("GIF", "gif", "image/gif")],
)
def test_probe_reads_format_and_size(fmt: str, name: str, mime: str) -> None:
    info = probe(encode(rgb(37, 23), fmt))
    assert info == ImageInfo(format=name, width=37, height=23)
    assert info.mime_type == mime


def test_probe_reads_only_the_header() -> None:
    # a header without pixel data is enough to know format and size
    assert probe(png_header(800, 600)) == ImageInfo(format="png", width=800, height=600)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"%PDF-1.7\n"],
    ids=["empty", "text", "truncated-signature", "svg", "pdf"],
)
def test_probe_refuses_garbage(data: bytes) -> None:
    with pytest.raises(NotAnImageError):
        probe(data)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_probe_refuses_unsupported_formats(fmt: str) -> None:
    with pytest.raises(NotAnImageError):
        probe(encode(rgb(), fmt))


def test_probe_refuses_an_enormous_image() -> None:
    with pytest.raises(NotAnImageError):
        probe(png_header(20000, 20000))


def test_probe_refuses_more_pixels_than_the_limit_from_the_header() -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        probe(blank_png(12000, 12000))
    assert (caught.value.width, caught.value.height, caught.value.max_pixels) == (12000, 12000, MAX_PIXELS)
    assert "12000x12000 (144 megapixels), more than the limit of 40 megapixels" in str(caught.value)


def test_the_limit_is_inclusive_and_can_be_lowered() -> None:
    assert probe(png_header(8000, 5000), max_pixels=40_000_000).width == 8000
    with pytest.raises(ImageTooLargeError):
        probe(png_header(8000, 5000), max_pixels=39_999_999)
    with pytest.raises(ImageTooLargeError):
        probe(encode(rgb(40, 30), "JPEG"), max_pixels=40 * 30 - 1)


def test_pillows_own_bomb_bound_is_reported_as_too_large() -> None:
    # past twice Image.MAX_IMAGE_PIXELS Pillow refuses to open the image at all
    with pytest.raises(ImageTooLargeError, match="more pixels than the limit of 40 megapixels"):
        probe(png_header(20000, 20000))


def test_open_checked_refuses_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError), open_checked(blank_png(12000, 12000)):
        pass
    with open_checked(blank_png(30, 20)) as image:
        assert image.size == (30, 20) and image.mode == "1"


def test_not_an_image_is_a_value_error() -> None:
    assert issubclass(NotAnImageError, ValueError)


# -- declared_matches ------------------------------------------------------------------------


PNG, JPEG, WEBP = (ImageInfo(format=f, width=1, height=1) for f in ("png", "jpeg", "webp"))


@pytest.mark.parametrize(
    ("declared", "info", "matches"),
    [
        (None, PNG, True),
        ("", JPEG, True),
        ("image/png", PNG, True),
        ("image/jpeg", JPEG, True),
        ("image/jpg", JPEG, True),
        ("IMAGE/JPG", JPEG, True),
        ("image/webp", WEBP, True),
        ("image/png; charset=binary", PNG, True),
        (" image/png ", PNG, True),
        ("image/png", JPEG, False),
        ("image/jpeg", PNG, False),
        ("image/jpg", WEBP, False),
        ("image/webp", PNG, False),
        ("application/octet-stream", PNG, False),
        ("image/*", PNG, False),
    ],
)
def test_declared_matches(declared: str | None, info: ImageInfo, matches: bool) -> None:
    assert declared_matches(declared, info) is matches


def test_declared_gif_matches_a_gif() -> None:
    info = probe(encode(rgb(), "GIF"))
    assert declared_matches(info.mime_type, info) is True


# -- transcode -------------------------------------------------------------------------------


def test_png_with_alpha_to_jpeg_is_flattened_on_white() -> None:
    out = transcode(encode(half_transparent(), "PNG"), "jpeg", 95)
    image = decoded(out)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (40, 30))
    red = image.getpixel((5, 15))
    white = image.getpixel((35, 15))
    assert isinstance(red, tuple) and isinstance(white, tuple)
    assert red[0] > 230 and red[1] < 30 and red[2] < 30
    assert min(white) > 240  # the transparent half is white, not the black of its colour channels


def test_palette_png_with_transparency_to_jpeg_is_flattened_on_white() -> None:
    palette = half_transparent().convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = palette.getpixel((35, 15))
    out = transcode(encode(palette, "PNG", transparency=palette.info["transparency"]), "jpeg", 95)
    corner = decoded(out).getpixel((35, 15))
    assert isinstance(corner, tuple) and min(corner) > 240


def test_png_to_webp_keeps_alpha() -> None:
    out = transcode(encode(half_transparent(), "PNG"), "webp", 80)
    image = decoded(out)
    assert (image.format, image.size) == ("WEBP", (40, 30))
    assert image.mode == "RGBA"
    assert image.getchannel("A").getpixel((35, 15)) == 0
    assert image.getchannel("A").getpixel((5, 15)) == 255


def test_webp_quality_follows_the_compression() -> None:
    source = encode(noisy(), "PNG")
    low, high = transcode(source, "webp", 5), transcode(source, "webp", 95)
    assert decoded(low).format == decoded(high).format == "WEBP"
    assert len(low) < len(high)


def test_jpeg_quality_follows_the_compression() -> None:
    source = encode(noisy(), "PNG")
    assert len(transcode(source, "jpeg", 10)) < len(transcode(source, "jpeg", 90))


def test_no_compression_is_quality_90() -> None:
    source = encode(noisy(), "PNG")
    assert transcode(source, "jpeg", None) == transcode(source, "jpeg", 90)


@pytest.mark.parametrize(("given", "clamped"), [(0, 1), (-5, 1), (150, 100)])
def test_compression_is_clamped(given: int, clamped: int) -> None:
    source = encode(noisy(), "PNG")
    assert transcode(source, "jpeg", given) == transcode(source, "jpeg", clamped)


@pytest.mark.parametrize("source_fmt", ["JPEG", "WEBP", "GIF"])
def test_other_formats_to_png(source_fmt: str) -> None:
    out = transcode(encode(rgb(21, 13), source_fmt), "png", None)
    image = decoded(out)
    assert (image.format, image.size) == ("PNG", (21, 13))


def test_transcoded_bytes_probe_as_the_target_format() -> None:
    source = encode(rgb(64, 48), "PNG")
    for fmt in ("png", "jpeg", "webp"):
        assert probe(transcode(source, fmt, 70)) == ImageInfo(format=fmt, width=64, height=48)


def test_unsupported_target_format_is_refused() -> None:
    with pytest.raises(ValueError, match="gif"):
        transcode(encode(rgb(), "PNG"), "gif", None)


def test_transcoding_refuses_an_image_past_the_limit_before_decoding_it() -> None:
    with pytest.raises(ImageTooLargeError):
        transcode(blank_png(12000, 12000), "jpeg", None)


def test_transcoding_garbage_fails() -> None:
    with pytest.raises(Exception):  # noqa: B017 - Pillow's own error: callers only transcode probed bytes
        transcode(b"garbage", "jpeg", None)
