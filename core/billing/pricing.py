"""Prices as data, costs as exact integers.

The price table (``core/billing/prices.toml``, extended by ``IMAGEGATE_PRICES_FILE``) gives each
catalogue model either token prices (USD per 1M tokens, which is micro-dollars per token) or
per-image prices. The functions below are pure; all arithmetic is :class:`~decimal.Decimal`, and an
amount becomes integer micro-dollars (1 USD = 1_000_000) once, at the end, rounded half up.

At submit, :func:`estimate_image_micros` is an upper bound of what one image of the request can cost
upstream (the budget hold); the :class:`ModelPrice` in force is snapshotted on the job. At settlement,
:func:`actual_image_micros` prices one delivered image from the upstream's usage with the
*snapshotted* price (:meth:`ModelPrice.from_snapshot`), so a price change never re-prices a running
job; :func:`billed_micros` applies the markup from :func:`markup_for`.

Estimate bounds, per image (each one a ``bounds`` field of the row, so operators can change them):

- output image tokens: the row's figure for the applied tier / size / quality; quality ``auto`` (or
  one the row does not list) takes the highest quality's, an unknown size (``auto``) the largest
  listed size's; sizes a free-size model makes but the row does not list are scaled by pixel area
  from ``scale_tokens_from`` (rounded up);
- input text: the UTF-8 byte count of prompt + system (no tokenizer makes a token shorter than a
  byte) plus ``text_in_overhead_tokens`` for role and template tokens;
- input images (the mask counts as one): ``input_image_tokens`` each, or
  ``input_image_tokens_high_fidelity`` when ``input_fidelity`` is ``high``; with
  ``input_image_tiles`` and a known input size, at least the tile count times the tile's tokens;
- all input tokens are priced at the dearer of the text and image input rates, because some
  upstreams (chat gateways) report image input as text;
- text / thinking output: ``text_out_tokens`` at the text output rate (0 for GPT image models).

What the bound cannot cover: an upstream that bills more than it documents (a Gemini call that
returns a second, discarded image; thinking beyond the allowance). Settlement charges what the
upstream reports either way.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, model_validator

from core.generation import AppliedParams, GenerationRequest, Usage

MICROS_PER_USD = 1_000_000
ANY = "*"
AUTO = "auto"

# Exact arithmetic: far more digits than any price has, so nothing rounds before the final step.
_EXACT = Context(prec=60, rounding=ROUND_HALF_UP)


class PriceTableError(ValueError):
    """The price table or the operator's prices file is not valid."""


def _to_decimal(value: object) -> Decimal:
    """A price from TOML or a snapshot: strings exactly, floats through their shortest repr."""
    if isinstance(value, bool):
        raise ValueError("a price must be a decimal string or a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except ArithmeticError:
            raise ValueError(f"{value!r} is not a decimal number") from None
    elif isinstance(value, float):
        result = Decimal(repr(value))  # 0.3 -> Decimal("0.3"), not 0.29999999999999998889...
    else:
        raise ValueError(f"{value!r} is not a decimal number")
    if not result.is_finite() or result < 0:
        raise ValueError(f"{value!r} must be a finite, non-negative decimal")
    return result


Amount = Annotated[Decimal, BeforeValidator(_to_decimal), PlainSerializer(str, return_type=str, when_used="json")]
"""A non-negative Decimal read from a string or a number; serialised as a string."""
Tokens = Annotated[int, Field(ge=0, strict=True)]


class TokenPrices(BaseModel):
    """USD per 1M tokens, which is micro-dollars per token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_in: Amount
    image_in: Amount
    text_out: Amount
    image_out: Amount
    cached_in: Amount | None = None
    cached_image_in: Amount | None = None


class InputImageTiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    px: Annotated[int, Field(gt=0, strict=True)]
    tokens: Tokens


class EstimateBounds(BaseModel):
    """What the estimate assumes about input and text output (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_in_overhead_tokens: Tokens
    input_image_tokens: Tokens
    input_image_tokens_high_fidelity: Tokens | None = None
    input_image_tiles: InputImageTiles | None = None
    text_out_tokens: Tokens


def _parse_size(value: str) -> tuple[int, int] | None:
    width, sep, height = value.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) == 0 or int(height) == 0:
        return None
    return int(width), int(height)


class ModelPrice(BaseModel):
    """One model's price: per token (with the output tokens of an image) or per image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    effective: date
    per_token: TokenPrices | None = None
    output_image_tokens: dict[str, dict[str, Tokens]] = Field(default_factory=dict)
    """quality ("*" any) -> size: tier, WIDTHxHEIGHT or "*" -> tokens of one output image."""
    scale_tokens_from: str | None = None
    bounds: EstimateBounds | None = None
    per_image: dict[str, dict[str, Amount]] | None = None
    """quality ("*" any) -> size ("*" any) -> USD per image."""

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if (self.per_token is None) == (self.per_image is None):
            raise ValueError("give exactly one of per_token and per_image")
        if self.per_token is not None:
            if self.bounds is None:
                raise ValueError("a per_token price needs bounds (what the estimate assumes)")
            if not self.output_image_tokens or not all(self.output_image_tokens.values()):
                raise ValueError("a per_token price needs output_image_tokens for every quality it lists")
            if self.scale_tokens_from is not None:
                if _parse_size(self.scale_tokens_from) is None:
                    raise ValueError("scale_tokens_from must be WIDTHxHEIGHT")
                if any(self.scale_tokens_from not in row for row in self.output_image_tokens.values()):
                    raise ValueError(f"every quality of output_image_tokens must list {self.scale_tokens_from}")
        else:
            if self.output_image_tokens or self.bounds or self.scale_tokens_from:
                raise ValueError("a per_image price takes no output_image_tokens, scale_tokens_from or bounds")
            if not self.per_image or not all(self.per_image.values()):
                raise ValueError("per_image needs a price for every quality it lists")
        return self

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable (Decimals as strings): stored on the job, read back by from_snapshot."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> ModelPrice:
        return cls.model_validate(dict(data))


class MarkupTier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_spend_usd: Amount
    markup: Amount


class MarkupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Amount = Decimal(1)
    tiers: list[MarkupTier] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_thresholds(self) -> Self:
        thresholds = [tier.min_spend_usd for tier in self.tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError("two markup tiers have the same min_spend_usd")
        return self


class PriceMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshot: date
    note: str = ""


class PriceFile(BaseModel):
    """One prices TOML file, shipped or the operator's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replace: bool = False
    meta: PriceMeta | None = None
    markup: MarkupConfig | None = None
    models: list[ModelPrice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        for row in self.models:
            if row.id.lower() in seen:
                raise ValueError(f"model {row.id!r} is priced twice")
            seen.add(row.id.lower())
        return self


def _read(text: str, origin: str) -> PriceFile:
    try:
        return PriceFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"{origin}: not valid TOML ({exc})") from None
    except ValidationError as exc:
        raise PriceTableError(f"{origin}: {exc}") from None


class PriceTable:
    """Every model's price (by id, case-insensitive), the markup rules and the snapshot date."""

    def __init__(self, models: Iterable[ModelPrice], *, markup: MarkupConfig | None = None,
                 meta: PriceMeta | None = None) -> None:
        self.models: dict[str, ModelPrice] = {m.id.lower(): m for m in models}
        self.markup = markup or MarkupConfig()
        self.meta = meta

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The shipped table merged with the operator's file (``IMAGEGATE_PRICES_FILE``).

        Rows of ``path`` replace shipped rows with the same id; ``replace = true`` drops every
        shipped row; a ``[markup]`` or ``[meta]`` section there replaces the shipped one.
        """
        shipped = _read(resources.files("core.billing").joinpath("prices.toml").read_text("utf-8"),
                        "core/billing/prices.toml")
        rows = {m.id.lower(): m for m in shipped.models}
        markup, meta = shipped.markup, shipped.meta
        if path is not None:
            try:
                text = Path(path).read_text("utf-8")
            except OSError as exc:
                raise PriceTableError(f"{path}: cannot read the prices file ({exc.strerror})") from None
            extra = _read(text, str(path))
            if extra.replace:
                rows = {}
            rows.update({m.id.lower(): m for m in extra.models})
            markup = extra.markup or markup
            meta = extra.meta or meta
        return cls(rows.values(), markup=markup, meta=meta)

    def get(self, model_id: str) -> ModelPrice | None:
        return self.models.get(model_id.lower())

    def missing(self, catalogue_model_ids: Iterable[str]) -> list[str]:
        """The model ids with no price, in the order given (the app refuses to start or warns)."""
        return [model_id for model_id in catalogue_model_ids if model_id.lower() not in self.models]


# ---------------------------------------------------------------- lookups

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
            ref_w, ref_h = _parse_size(price.scale_tokens_from) or (1, 1)
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


# ---------------------------------------------------------------- costs


def _micros(usd_micros: Decimal) -> int:
    """An exact amount in micro-dollars, rounded half up to a whole micro-dollar (the one rounding)."""
    return int(usd_micros.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))


def _input_image_bound(bounds: EstimateBounds, request: GenerationRequest, applied: AppliedParams) -> int:
    per_image = bounds.input_image_tokens
    if applied.input_fidelity == "high" and bounds.input_image_tokens_high_fidelity is not None:
        per_image = bounds.input_image_tokens_high_fidelity
    images = [*request.input_images, *([request.mask] if request.mask is not None else [])]
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
        with localcontext(_EXACT):
            return _micros(_per_image_usd(price, applied) * MICROS_PER_USD)
    assert price.per_token is not None and price.bounds is not None
    unit, bounds = price.per_token, price.bounds
    text_bytes = len(request.prompt.encode("utf-8")) + len((request.system or "").encode("utf-8"))
    input_tokens = text_bytes + bounds.text_in_overhead_tokens + _input_image_bound(bounds, request, applied)
    with localcontext(_EXACT):
        cost = (input_tokens * max(unit.text_in, unit.image_in)
                + bounds.text_out_tokens * unit.text_out
                + output_image_tokens(price, applied) * unit.image_out)
        return _micros(cost)


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
        with localcontext(_EXACT):
            return _micros(_per_image_usd(price, applied) * MICROS_PER_USD)
    assert price.per_token is not None
    unit = price.per_token
    in_text, in_image = usage.input_text_tokens, usage.input_image_tokens
    in_other = max(0, usage.input_tokens - in_text - in_image)
    out_image = usage.output_image_tokens
    out_text = max(usage.output_text_tokens, usage.output_tokens - out_image)
    if out_image == 0:
        out_image = output_image_tokens(price, applied)
        out_text = max(0, out_text - out_image)
    with localcontext(_EXACT):
        cost = (in_text * unit.text_in + in_image * unit.image_in + in_other * max(unit.text_in, unit.image_in)
                + out_text * unit.text_out + out_image * unit.image_out)
        return _micros(cost)


def billed_micros(upstream_micros: int, markup: Decimal) -> int:
    """What the caller pays for an upstream cost: times the markup, rounded half up."""
    with localcontext(_EXACT):
        return _micros(Decimal(upstream_micros) * markup)


def markup_for(*, key_markup: Decimal | None, table: PriceTable, spend_90d_micros: int) -> Decimal:
    """The markup in force: the key's own, else the highest spend tier reached, else the default."""
    if key_markup is not None:
        return key_markup
    with localcontext(_EXACT):
        reached = [tier for tier in table.markup.tiers
                   if tier.min_spend_usd * MICROS_PER_USD <= spend_90d_micros]
    if reached:
        return max(reached, key=lambda tier: tier.min_spend_usd).markup
    return table.markup.default


def usd(micros: int) -> str:
    """Micro-dollars as an exact decimal string with 6 places: 38700 -> "0.038700"."""
    return f"{Decimal(micros).scaleb(-6, context=_EXACT):.6f}"
