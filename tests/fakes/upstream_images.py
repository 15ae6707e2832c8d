"""Images for the fake upstream: output sizes per model
(https://ai.google.dev/gemini-api/docs/image-generation,
https://platform.openai.com/docs/guides/image-generation), quick rendering with Pillow, and
magic-byte sniffing of images the gateway sends."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import math

from PIL import Image

# --- Gemini image models ---------------------------------------------------------------

GEMINI_MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-image")
GEMINI_SHUT_DOWN = ("gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview")

BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTREME_RATIOS = ("1:4", "4:1", "1:8", "8:1")

GEMINI_RATIOS = {
    "gemini-2.5-flash-image": BASE_RATIOS,
    "gemini-3-pro-image": BASE_RATIOS,
    "gemini-3.1-flash-image": BASE_RATIOS + EXTREME_RATIOS,
}
GEMINI_IMAGE_SIZES: dict[str, tuple[str, ...]] = {
    "gemini-2.5-flash-image": (),  # imageSize not accepted
    "gemini-3-pro-image": ("1K", "2K", "4K"),
    "gemini-3.1-flash-image": ("512", "1K", "2K", "4K"),
}
GEMINI_IMAGE_TOKENS = {
    "gemini-2.5-flash-image": {"1K": 1290},
    "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000},
    "gemini-3.1-flash-image": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
}

FLASH_25_SIZES = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}

# ratio -> (512, 1K, 2K, 4K) as (width, height)
GEMINI3_GRID: dict[str, tuple[tuple[int, int], ...]] = {
    "1:1": ((512, 512), (1024, 1024), (2048, 2048), (4096, 4096)),
    "2:3": ((424, 632), (848, 1264), (1696, 2528), (3392, 5056)),
    "3:2": ((632, 424), (1264, 848), (2528, 1696), (5056, 3392)),
    "3:4": ((448, 600), (896, 1200), (1792, 2400), (3584, 4800)),
    "4:3": ((600, 448), (1200, 896), (2400, 1792), (4800, 3584)),
    "4:5": ((464, 576), (928, 1152), (1856, 2304), (3712, 4608)),
    "5:4": ((576, 464), (1152, 928), (2304, 1856), (4608, 3712)),
    "9:16": ((384, 688), (768, 1376), (1536, 2752), (3072, 5504)),
    "16:9": ((688, 384), (1376, 768), (2752, 1536), (5504, 3072)),
    "21:9": ((792, 336), (1584, 672), (3168, 1344), (6336, 2688)),
    "1:4": ((256, 1024), (512, 2048), (1024, 4096), (2048, 8192)),
    "4:1": ((1024, 256), (2048, 512), (4096, 1024), (8192, 2048)),
    "1:8": ((192, 1536), (384, 3072), (768, 6144), (1536, 12288)),
    "8:1": ((1536, 192), (3072, 384), (6144, 768), (12288, 1536)),
}
_TIER_INDEX = {"512": 0, "1K": 1, "2K": 2, "4K": 3}


def gemini_size(model: str, ratio: str, image_size: str) -> tuple[int, int]:
    """Pixel size of a Gemini image model's output (the resolution tables of https://ai.google.dev/gemini-api/docs/image-generation)."""
    if model == "gemini-2.5-flash-image":
        return FLASH_25_SIZES[ratio]
    return GEMINI3_GRID[ratio][_TIER_INDEX[image_size]]


def nearest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    """The supported aspect ratio closest (in log scale) to width:height."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ratios, key=distance)


# --- Imagen ----------------------------------------------------------------------

IMAGEN_MODELS = ("imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001")
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
IMAGEN_1K = {
    "1:1": (1024, 1024),
    "3:4": (896, 1280),
    "4:3": (1280, 896),
    "9:16": (768, 1408),
    "16:9": (1408, 768),
}


def imagen_size(ratio: str, image_size: str) -> tuple[int, int]:
    w, h = IMAGEN_1K[ratio]
    return (w * 2, h * 2) if image_size == "2K" else (w, h)


# --- Rendering ---------------------------------------------------------------------------------

MIME_BY_FORMAT = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
_PALETTE = (
    (231, 76, 60),
    (46, 204, 113),
    (52, 152, 219),
    (241, 196, 15),
    (155, 89, 182),
    (26, 188, 156),
    (230, 126, 34),
    (52, 73, 94),
)


def colour_for(seed: str) -> int:
    """A palette index derived from a prompt, so different prompts give different images."""
    return hashlib.sha256(seed.encode()).digest()[0] % len(_PALETTE)


@functools.lru_cache(maxsize=48)
def render(
    width: int,
    height: int,
    fmt: str = "png",
    colour: int = 0,
    transparent: bool = False,
    quality: int | None = None,
) -> bytes:
    """A solid-colour image with a darker top band, encoded quickly (PNG compress_level=1)."""
    rgb = _PALETTE[colour % len(_PALETTE)]
    if transparent and fmt in ("png", "webp"):
        image = Image.new("RGBA", (width, height), (*rgb, 255))
        image.paste((0, 0, 0, 0), (0, 0, width, max(1, height // 8)))
    else:
        image = Image.new("RGB", (width, height), rgb)
        image.paste(tuple(c // 2 for c in rgb), (0, 0, width, max(1, height // 8)))
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, "PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(out, "JPEG", quality=quality if quality is not None else 90)
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality if quality is not None else 90, method=0)
    elif fmt == "gif":
        image.convert("P").save(out, "GIF")
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def gif_bytes() -> bytes:
    """A real GIF, used by the ``wrong_mime`` fault (declared image/png)."""
    return render(64, 64, "gif", 3)


NOT_AN_IMAGE = b"this is plain text, not an image\n"


# --- Sniffing input images ----------------------------------------------------------------------


def sniff(data: bytes) -> str | None:
    """The image MIME type the magic bytes say, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis"):
        return "image/heic"
    if data[4:8] == b"ftyp" and data[8:12] in (b"mif1", b"msf1"):
        return "image/heif"
    return None


def strict_b64decode(text: str) -> bytes | None:
    """Standard base64 with padding and no whitespace (how every API imagegate speaks puts bytes in
    JSON), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def dimensions(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


def check_image(
    data_b64: str,
    declared_mime: str | None,
    what: str,
    allowed: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"),
) -> tuple[bytes | None, str | None]:
    """Decode and check an input image; returns (bytes, None) or (None, violation message)."""
    data = strict_b64decode(data_b64)
    if data is None:
        return None, f"{what}: data is not valid standard base64"
    actual = sniff(data)
    if actual is None:
        return None, f"{what}: the bytes are not an image (no known magic bytes)"
    if actual not in allowed:
        return None, f"{what}: {actual} is not an accepted input type ({', '.join(allowed)})"
    if declared_mime is not None and declared_mime.lower() != actual:
        return None, f"{what}: mimeType says {declared_mime} but the bytes are {actual}"
    return data, None


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<b64>`` -> (mime, b64), else None."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, _, payload = url[5:].partition(";base64,")
    return head, payload
