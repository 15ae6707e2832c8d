"""The ``demo`` model: draws real images locally with Pillow. No network, no cost.

The picture is the prompt's text on a background seeded by the prompt and the image's index, so
the same request gives the same images and the n images of a job differ. It honours the applied
size, output format, compression and background, and can be slowed down
(``IMAGEGATE_DEMO_LATENCY_S``, a sleep on the event loop) to stand in for a real upstream. Drawing
is CPU work: it runs on a thread, off the worker's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import textwrap

from PIL import Image, ImageDraw, ImageFont

from core.errors import InvalidRequestError
from core.generation import MIME_BY_FORMAT, ProviderImage
from core.imaging import MAX_PIXELS, ImageTooLargeError, open_checked
from worker.providers.base import ProviderCall


class DemoProvider:
    name = "demo"

    def __init__(self, *, latency_s: float = 0.0, max_input_pixels: int = MAX_PIXELS) -> None:
        self.latency_s = latency_s
        self.max_input_pixels = max_input_pixels

    async def generate(self, call: ProviderCall) -> list[ProviderImage]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return await asyncio.to_thread(self.draw_all, call)

    def draw_all(self, call: ProviderCall) -> list[ProviderImage]:
        """The call's images, drawn and encoded (blocking: CPU work)."""
        applied, request = call.applied, call.request
        width, height = applied.width or 1024, applied.height or 1024
        images = []
        edits = call.edit_inputs
        try:
            base = (_input_background(edits[0].data, width, height, max_pixels=self.max_input_pixels)
                    if edits else None)
        except ImageTooLargeError as error:  # checked at submit too, under the same setting
            raise InvalidRequestError(f"Invalid input image: {error}.", code="image_too_large") from None
        for index in call.indices:
            image = draw(request.prompt, index=index, width=width, height=height,
                         transparent=applied.background == "transparent", base=base)
            images.append(ProviderImage(
                data=encode(image, applied.output_format, applied.output_compression),
                mime_type=MIME_BY_FORMAT[applied.output_format],
                width=width,
                height=height,
                text=f"{request.prompt} (demo image {index + 1} of {request.n})",
            ))
        return images


def _seed(prompt: str, index: int) -> int:
    digest = hashlib.sha256(f"{index}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _input_background(data: bytes, width: int, height: int, *, max_pixels: int) -> Image.Image:
    """An edit: the first input image, scaled to cover the output and centre-cropped. Its size is
    checked before it is decoded (a JPEG decodes straight at a reduced scale when it can)."""
    with open_checked(data, max_pixels=max_pixels) as opened:
        opened.draft("RGB", (width, height))  # JPEG only; other formats ignore it
        source = opened.convert("RGBA")
    scale = max(width / source.width, height / source.height)
    resized = source.resize((max(1, round(source.width * scale)), max(1, round(source.height * scale))))
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def draw(prompt: str, *, index: int, width: int, height: int, transparent: bool = False,
         base: Image.Image | None = None) -> Image.Image:
    """The prompt's text over seeded shapes, on a seeded gradient (or on ``base`` for an edit)."""
    rng = random.Random(_seed(prompt, index))
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))

    if base is not None:
        image = base.copy()
    else:
        # vertical gradient between two seeded colours, scaled from a 1-pixel-wide strip (fast)
        mask = Image.linear_gradient("L").resize((width, height))
        image = Image.composite(Image.new("RGB", (width, height), bottom),
                                Image.new("RGB", (width, height), top), mask).convert("RGBA")
        if transparent:
            image.putalpha(0)

    # shapes and text go on an overlay composited over the background, so that their alpha
    # blends (drawing RGBA straight onto an RGBA image would replace pixels, alpha included)
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    shapes = ImageDraw.Draw(overlay)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(max(8, min(width, height) // 10), max(9, min(width, height) // 3))
        fill = (*[rng.randrange(256) for _ in range(3)], 150)
        shapes.ellipse((x0 - radius, y0 - radius, x0 + radius, y0 + radius), fill=fill)

    font_size = max(10, min(width, height) // 18)
    font = ImageFont.load_default(size=font_size)
    chars_per_line = max(8, int(width / (font_size * 0.55)))
    lines = textwrap.wrap(prompt, width=chars_per_line)[:12] or [" "]
    text = "\n".join(lines)
    box = shapes.multiline_textbbox((0, 0), text, font=font, align="center")
    text_w, text_h = box[2] - box[0], box[3] - box[1]
    x, y = (width - text_w) / 2, (height - text_h) / 2
    pad = font_size // 2
    shapes.rectangle((x - pad, y - pad, x + text_w + pad, y + text_h + pad), fill=(0, 0, 0, 140))
    shapes.multiline_text((x - box[0], y - box[1]), text, font=font, fill=(255, 255, 255, 255),
                          align="center")
    return Image.alpha_composite(image, overlay)


def encode(image: Image.Image, output_format: str, compression: int | None) -> bytes:
    """Bytes in the requested format; ``compression`` is the 0-100 quality of jpeg and webp."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=3)
    elif output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=_quality(compression))
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=_quality(compression))
    else:
        raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()


def _quality(compression: int | None) -> int:
    return 90 if compression is None else max(1, min(100, compression))
