"""Costs: what an image of a request may cost (the hold) and what a delivered one does cost.

The functions below are pure; all arithmetic is :class:`~decimal.Decimal`, and an
amount becomes integer micro-dollars (1 USD = 1_000_000) once, at the end, rounded half up.

At submit, :func:`estimate_image_micros` is an upper bound of what one image of the request can cost
upstream (the budget hold); the :class:`ModelPrice` in force is snapshotted on the job. At settlement,
:func:`actual_image_micros` prices one delivered image from the upstream's usage with the
*snapshotted* price (:class:`core.billing.ledger.PricingSnapshot`), so a price change never re-prices a running
job; :func:`billed_micros` applies the markup from :func:`markup_for`.

Estimate bounds, per image (each one a ``bounds`` field of the row, so operators can change them):

- output image tokens: the row's figure for the applied tier / size / quality; quality ``auto`` (or
  one the row does not list) takes the highest quality's, an unknown size (``auto``) the largest
  listed size's; sizes a free-size model makes but the row does not list are scaled by pixel area
  from ``scale_tokens_from`` (rounded up);
- input text: the UTF-8 byte count of prompt + system (+ the earlier turns' text, for a route
  that sends them) (no tokenizer makes a token shorter than a byte) plus
  ``text_in_overhead_tokens`` for role and template tokens;
- input images, those the route sends (:meth:`GenerationRequest.images_for`; the mask counts as
  one): ``input_image_tokens`` each, or
  ``input_image_tokens_high_fidelity`` when ``input_fidelity`` is ``high``; with
  ``input_image_tiles`` and a known input size, at least the tile count times the tile's tokens;
- all input tokens are priced at the dearer of the text and image input rates, because some
  upstreams (chat gateways) report image input as text;
- text / thinking output: ``text_out_tokens`` at the text output rate (0 for GPT image models);
- streamed partial images (``partial_images``): :data:`PARTIAL_IMAGE_TOKENS` output image tokens
  each, which GPT image upstreams bill on top of the final image (an upstream that draws no
  drafts bills none, and settlement releases the difference).

What the bound cannot cover: an upstream that bills more than it documents (a Gemini call that
returns a second, discarded image; thinking beyond the allowance). Settlement charges what the
upstream reports either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, localcontext
from typing import TypeVar

from core.billing.money import EXACT, MICROS_PER_USD, to_micros, usd_to_micros
from core.billing.prices import ANY, EstimateBounds, ModelPrice, PriceTable, parse_size
from core.generation import AppliedParams, GenerationRequest, Usage

AUTO = "auto"
PARTIAL_IMAGE_TOKENS = 100
"""Output image tokens a streamed partial image adds ("each partial image adds 100 image output
tokens", https://platform.openai.com/docs/guides/image-generation#streaming)."""

V = TypeVar("V", int, Decimal)


def _quality_rows(table: Mapping[str, Mapping[str, V]], applied: AppliedParams) -> list[Mapping[str, V]]:
    """The rows the applied quality may use: its own, else "*"; for auto (or an unknown quality
    and no "*") all of them, since the upstream may pick any."""
    quality = (applied.upstream_quality or applied.quality or AUTO).lower()
    if quality == AUTO:
        return list(table.values())
    if quality in table:
        return [table[quality]]
    return [table[ANY]] if ANY in table else list(table.values())


def _size_value(row: Mapping[str, V], applied: AppliedParams) -> V | None:
    """The row's value for the applied tier or size, or its "*" value; None if it has neither."""
    for key in (applied.image_size, applied.size, applied.upstream_size):
        if key and key in row:
            return row[key]
    return row.get(ANY)


def output_image_tokens(price: ModelPrice, applied: AppliedParams) -> int:
    """Output tokens of one image at the applied tier / size / quality, at most (per-token rows).

    A size the row does not list is scaled by pixel area from ``scale_tokens_from`` (rounded up)
    when the row has one and the size is known; otherwise the largest listed size counts.
    """
    found: list[int] = []
    for row in _quality_rows(price.output_image_tokens, applied):
        tokens = _size_value(row, applied)
        if tokens is None and price.scale_tokens_from is not None and applied.width and applied.height:
            ref_w, ref_h = parse_size(price.scale_tokens_from) or (1, 1)
            area = row[price.scale_tokens_from] * applied.width * applied.height
            tokens = -(-area // (ref_w * ref_h))
        found.append(max(row.values()) if tokens is None else tokens)
    return max(found)


def _per_image_usd(price: ModelPrice, applied: AppliedParams) -> Decimal:
    """The per-image price at the applied quality and size; the dearest one that may apply."""
    assert price.per_image is not None
    found: list[Decimal] = []
    for row in _quality_rows(price.per_image, applied):
        value = _size_value(row, applied)
        found.append(max(row.values()) if value is None else value)
    return max(found)


def _input_image_bound(bounds: EstimateBounds, request: GenerationRequest, applied: AppliedParams) -> int:
    per_image = bounds.input_image_tokens
    if applied.input_fidelity == "high" and bounds.input_image_tokens_high_fidelity is not None:
        per_image = bounds.input_image_tokens_high_fidelity
    sent = [request.input_images[i] for i in request.images_for(multi_turn=applied.multi_turn)]
    images = [*sent, *([request.mask] if request.mask is not None else [])]
    total = 0
    for image in images:
        tokens = per_image
        tiles = bounds.input_image_tiles
        if tiles is not None and image.width and image.height:
            tokens = max(tokens, math.ceil(image.width / tiles.px) * math.ceil(image.height / tiles.px) * tiles.tokens)
        total += tokens
    return total


def estimate_image_micros(price: ModelPrice, applied: AppliedParams, request: GenerationRequest) -> int:
    """An upper bound of the upstream cost of one image of ``request`` (see the module docstring)."""
    if price.per_image is not None:
        with localcontext(EXACT):
            return to_micros(_per_image_usd(price, applied) * MICROS_PER_USD)
    assert price.per_token is not None and price.bounds is not None
    unit, bounds = price.per_token, price.bounds
    text = request.prompt + (request.system or "") + (request.history_text() if applied.multi_turn else "")
    text_bytes = len(text.encode("utf-8"))
    input_tokens = text_bytes + bounds.text_in_overhead_tokens + _input_image_bound(bounds, request, applied)
    with localcontext(EXACT):
        cost = (input_tokens * max(unit.text_in, unit.image_in)
                + bounds.text_out_tokens * unit.text_out
                + (output_image_tokens(price, applied) + (request.partial_images or 0) * PARTIAL_IMAGE_TOKENS)
                * unit.image_out)
        return to_micros(cost)


def actual_image_micros(price: ModelPrice, applied: AppliedParams, usage: Usage) -> int:
    """The upstream cost of one delivered image, from the usage the upstream reported for it.

    Per-token: input text x text_in + input image x image_in + output text x text_out + output
    image x image_out. Input tokens reported without a split (``input_tokens`` beyond text + image)
    are priced at the dearer input rate; output tokens beyond text + image count as text/thinking.
    A delivered image always has image tokens: when the upstream reports none (no usage at all, or
    no modality breakdown), the row's output tokens for the applied tier are billed at the image
    rate and taken out of the text output reported. Per-image: the table price.
    """
    if price.per_image is not None:
        with localcontext(EXACT):
            return to_micros(_per_image_usd(price, applied) * MICROS_PER_USD)
    assert price.per_token is not None
    unit = price.per_token
    in_text, in_image = usage.input_text_tokens, usage.input_image_tokens
    in_other = max(0, usage.input_tokens - in_text - in_image)
    out_image = usage.output_image_tokens
    out_text = max(usage.output_text_tokens, usage.output_tokens - out_image)
    if out_image == 0:
        out_image = output_image_tokens(price, applied)
        out_text = max(0, out_text - out_image)
    with localcontext(EXACT):
        cost = (in_text * unit.text_in + in_image * unit.image_in + in_other * max(unit.text_in, unit.image_in)
                + out_text * unit.text_out + out_image * unit.image_out)
        return to_micros(cost)


def billed_micros(upstream_micros: int, markup: Decimal) -> int:
    """What the caller pays for an upstream cost: times the markup, rounded half up."""
    with localcontext(EXACT):
        return to_micros(Decimal(upstream_micros) * markup)


def markup_for(*, key_markup: Decimal | None, table: PriceTable, spend_90d_micros: int) -> Decimal:
    """The markup in force: the key's own, else the highest spend tier reached, else the default."""
    if key_markup is not None:
        return key_markup
    with localcontext(EXACT):
        reached = [tier for tier in table.markup.tiers
                   if usd_to_micros(tier.min_spend_usd) <= spend_90d_micros]
    if reached:
        return max(reached, key=lambda tier: tier.min_spend_usd).markup
    return table.markup.default
