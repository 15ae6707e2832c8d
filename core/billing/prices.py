"""The price table: its file format, its validation and its loading.

The table (``core/billing/prices.toml``, extended by ``IMAGEGATE_PRICES_FILE``) gives each
catalogue model either token prices (USD per 1M tokens, which is micro-dollars per token) with the
output tokens of one image, or per-image prices; and the markup rules (a default and spend tiers).
Every amount is a :class:`~decimal.Decimal` read exactly; :mod:`core.billing.costs` does the
arithmetic. A :class:`ModelPrice` is also what a job snapshots at submit (see
:class:`core.billing.ledger.PricingSnapshot`), so a price change never re-prices a running job.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, model_validator

from core.billing.money import parse_decimal

ANY = "*"
"""A row key matching any quality or size."""


class PriceTableError(ValueError):
    """The price table or the operator's prices file is not valid."""


def _to_decimal(value: object) -> Decimal:
    return parse_decimal(value, what="a price")


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


def parse_size(value: str) -> tuple[int, int] | None:
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
                if parse_size(self.scale_tokens_from) is None:
                    raise ValueError("scale_tokens_from must be WIDTHxHEIGHT")
                if any(self.scale_tokens_from not in row for row in self.output_image_tokens.values()):
                    raise ValueError(f"every quality of output_image_tokens must list {self.scale_tokens_from}")
        else:
            if self.output_image_tokens or self.bounds or self.scale_tokens_from:
                raise ValueError("a per_image price takes no output_image_tokens, scale_tokens_from or bounds")
            if not self.per_image or not all(self.per_image.values()):
                raise ValueError("per_image needs a price for every quality it lists")
        return self


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
