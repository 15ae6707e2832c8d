"""Prices and costs: the shipped table prices every catalogue model; the per-image list prices of
the providers' pricing pages come out exactly from their documented token counts; the estimate is an upper
bound of the settled cost; settlement from usage by hand; markup and spend tiers; rounding half up,
once, at the micro-dollar; price snapshots; the operator's prices file; no float anywhere."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import pytest

from core.billing.costs import (
    actual_image_micros,
    billed_micros,
    estimate_image_micros,
    markup_for,
    output_image_tokens,
)
from core.billing.ledger import PricingSnapshot, quote
from core.billing.money import format_usd as usd
from core.billing.prices import PriceTable, PriceTableError
from core.errors import ServiceUnavailableError
from core.generation import AppliedParams, GenerationRequest, InputImage, Usage
from core.planning import plan, plan_routes
from core.routing import Catalogue, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
IMAGEN_FILE = ROOT / "core" / "catalogue" / "imagen.toml"
ALL_PROVIDERS = frozenset({"demo", "gemini", "imagen", "openai_images", "vertex_gemini", "vertex_imagen",
                           "openai_chat"})


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def full() -> Catalogue:
    return Catalogue.load(configured=ALL_PROVIDERS)


@pytest.fixture(scope="module")
def with_imagen() -> Catalogue:
    return Catalogue.load(IMAGEN_FILE)


def every_model_id() -> list[str]:
    ids = [m.id for m in Catalogue.load(configured=ALL_PROVIDERS).all_models]
    return ids + [m.id for m in Catalogue.load(IMAGEN_FILE).all_models if m.id not in ids]


def applied_for(catalogue: Catalogue, model_id: str, **fields: object) -> tuple[AppliedParams, GenerationRequest]:
    fields.setdefault("prompt", "a red fox in the snow")
    request = GenerationRequest(**fields)
    return plan(request, catalogue.get(model_id), grids=catalogue.grids), request


def catalogue_for(model_id: str, full: Catalogue, with_imagen: Catalogue) -> Catalogue:
    return with_imagen if model_id.startswith("imagen-") or model_id.startswith("vertex/imagen") else full


# -- the table covers the catalogue ------------------------------------------------------------


@pytest.mark.parametrize("catalogue_name", ["full", "with_imagen"])
def test_every_catalogue_model_has_a_price(table: PriceTable, catalogue_name: str,
                                           request: pytest.FixtureRequest) -> None:
    catalogue: Catalogue = request.getfixturevalue(catalogue_name)
    ids = [m.id for m in catalogue.all_models]
    assert table.missing(ids) == []
    assert all(table.get(model_id) is not None for model_id in ids)


def test_every_price_row_names_a_catalogue_model(table: PriceTable) -> None:
    known = {model_id.lower() for model_id in every_model_id()}
    assert set(table.models) == known


def test_missing_lists_unpriced_ids_in_order(table: PriceTable) -> None:
    assert table.missing(["gpt-image-2", "flux-9", "DEMO-IMAGE", "sd-4"]) == ["flux-9", "sd-4"]


def test_every_row_cites_a_source_and_date_within_the_snapshot(table: PriceTable) -> None:
    assert table.meta is not None
    for price in table.models.values():
        assert price.source.strip()
        assert price.effective <= table.meta.snapshot


def test_models_without_a_public_price_say_what_was_assumed(table: PriceTable) -> None:
    for model_id in ("gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst",
                     "gpt-image-2.6-flare"):
        price = table.get(model_id)
        assert price is not None and price.per_token is not None
        assert "assumed equal to gpt-image-2" in price.source and "no public price" in price.source
        assert price.per_token == table.models["gpt-image-2"].per_token
    for model_id, twin in (("gateway/gemini-3-pro-image", "gemini-3-pro-image"),
                           ("gateway/gemini-3.1-flash-image", "gemini-3.1-flash-image"),
                           ("vertex/gemini-3-pro-image", "gemini-3-pro-image"),
                           ("vertex/gemini-3.1-flash-image", "gemini-3.1-flash-image"),
                           ("vertex/gemini-2.5-flash-image", "gemini-2.5-flash-image")):
        price, reference = table.models[model_id], table.models[twin]
        assert price.per_token == reference.per_token
        assert price.output_image_tokens == reference.output_image_tokens
    assert "assumed equal to gpt-image-1.5" in table.models["chatgpt-image-latest"].source
    assert "Vertex lists the same" in table.models["vertex/gemini-3-pro-image"].source


def test_no_floats_in_the_table(table: PriceTable) -> None:
    for price in table.models.values():
        if price.per_token is not None:
            assert all(isinstance(v, Decimal) for v in price.per_token.model_dump().values() if v is not None)
            assert all(type(t) is int for row in price.output_image_tokens.values() for t in row.values())
        else:
            assert price.per_image is not None
            assert all(isinstance(v, Decimal) for row in price.per_image.values() for v in row.values())
    assert isinstance(table.markup.default, Decimal)


# -- per-image list prices from tokens -------------------------------------------------------

# (model, request fields, output tokens, micro-dollars): tokens x $/1M = the published per-image figure, exactly.
LIST_PRICES = [
    ("gemini-2.5-flash-image", {"aspect_ratio": "1:1"}, 1290, 38_700),  # $0.0387 (~$0.039)
    ("gemini-2.5-flash-image", {"aspect_ratio": "21:9"}, 1290, 38_700),
    ("gemini-2.5-flash-image", {}, 1290, 38_700),
    ("vertex/gemini-2.5-flash-image", {"aspect_ratio": "9:16"}, 1290, 38_700),
    ("gemini-3-pro-image", {"image_size": "1K"}, 1120, 134_400),  # $0.1344 (~$0.134)
    ("gemini-3-pro-image", {"image_size": "2K", "aspect_ratio": "16:9"}, 1120, 134_400),
    ("gemini-3-pro-image", {"image_size": "4K"}, 2000, 240_000),  # $0.24
    ("vertex/gemini-3-pro-image", {"image_size": "4K"}, 2000, 240_000),
    ("gateway/gemini-3-pro-image", {"image_size": "1K"}, 1120, 134_400),
    ("gemini-3.1-flash-image", {"image_size": "512"}, 747, 44_820),  # $0.04482 (~$0.045)
    ("gemini-3.1-flash-image", {"image_size": "1K", "aspect_ratio": "8:1"}, 1120, 67_200),  # $0.0672
    ("gemini-3.1-flash-image", {"image_size": "2K"}, 1680, 100_800),  # $0.1008
    ("gemini-3.1-flash-image", {"image_size": "4K"}, 2520, 151_200),  # $0.1512
    ("vertex/gemini-3.1-flash-image", {"image_size": "2K"}, 1680, 100_800),
    ("gateway/gemini-3.1-flash-image", {"image_size": "512"}, 747, 44_820),
    ("gpt-image-1.5", {"size": "1024x1024", "quality": "low"}, 272, 8_704),  # $0.0087 (~$0.009)
    ("gpt-image-1.5", {"size": "1024x1024", "quality": "medium"}, 1056, 33_792),  # ~$0.034
    ("gpt-image-1.5", {"size": "1024x1024", "quality": "high"}, 4160, 133_120),  # ~$0.133
    ("gpt-image-1.5", {"size": "1024x1536", "quality": "low"}, 408, 13_056),  # ~$0.013
    ("gpt-image-1.5", {"size": "1024x1536", "quality": "medium"}, 1584, 50_688),  # ~$0.050
    ("gpt-image-1.5", {"size": "1024x1536", "quality": "high"}, 6240, 199_680),  # ~$0.200
    ("gpt-image-1.5", {"size": "1536x1024", "quality": "high"}, 6208, 198_656),
    ("gpt-image-1.5", {"size": "1024x1024", "quality": "hd"}, 4160, 133_120),  # hd -> high upstream
    ("chatgpt-image-latest", {"size": "1024x1024", "quality": "low"}, 272, 8_704),
    ("gpt-image-1-mini", {"size": "1024x1536", "quality": "high"}, 6240, 49_920),  # ~$0.050
    ("gpt-image-2", {"size": "1024x1024", "quality": "low"}, 200, 6_000),  # ~$0.006
    ("gpt-image-2", {"size": "1024x1024", "quality": "medium"}, 1770, 53_100),  # ~$0.053
    ("gpt-image-2", {"size": "1024x1024", "quality": "high"}, 7030, 210_900),  # ~$0.211
]


@pytest.mark.parametrize(("model_id", "fields", "tokens", "micros"), LIST_PRICES)
def test_list_price_per_image_from_tokens(table: PriceTable, full: Catalogue, model_id: str,
                                          fields: dict[str, object], tokens: int, micros: int) -> None:
    price = table.models[model_id]
    applied, _ = applied_for(full, model_id, **fields)
    assert output_image_tokens(price, applied) == tokens
    usage = Usage(output_tokens=tokens, output_image_tokens=tokens)
    assert actual_image_micros(price, applied, usage) == micros
    # with no usage reported at all, settlement falls back to the same figure
    assert actual_image_micros(price, applied, Usage()) == micros


@pytest.mark.parametrize(("model_id", "micros"), [
    ("imagen-4.0-fast-generate-001", 20_000), ("imagen-4.0-generate-001", 40_000),
    ("imagen-4.0-ultra-generate-001", 60_000), ("vertex/imagen-4.0-generate-001", 40_000), ("demo-image", 0),
])
def test_per_image_prices(table: PriceTable, full: Catalogue, with_imagen: Catalogue, model_id: str,
                          micros: int) -> None:
    catalogue = catalogue_for(model_id, full, with_imagen)
    price = table.models[model_id]
    for fields in ({}, {"aspect_ratio": "16:9", "quality": "hd"}, {"size": "2048x2048"}):
        applied, request = applied_for(catalogue, model_id, **fields)
        assert estimate_image_micros(price, applied, request) == micros
        assert actual_image_micros(price, applied, Usage(input_tokens=99, output_tokens=1000)) == micros


# -- estimates -------------------------------------------------------------------------------


def test_estimate_of_a_gemini_image_by_hand(table: PriceTable, full: Catalogue) -> None:
    """3 Pro at 4K, 2 input images of unknown size, a 23-byte prompt and a 7-byte system prompt."""
    images = [InputImage(object_key=f"in/{i}", mime_type="image/png") for i in range(2)]
    applied, request = applied_for(full, "gemini-3-pro-image", prompt="a red fox in the snow 🦊",
                                   system="be bold", image_size="4K", input_images=images)
    assert len(request.prompt.encode()) == 26
    input_tokens = 26 + 7 + 100 + 2 * 1290  # bytes + template overhead + 2 x the per-image bound
    expected = input_tokens * 2 + 2000 * 12 + 2000 * 120  # $2/M in, $12/M thinking, $120/M image
    assert estimate_image_micros(table.models["gemini-3-pro-image"], applied, request) == expected


def test_estimate_counts_utf8_bytes_not_characters(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gpt-image-1.5"]
    ascii_applied, ascii_request = applied_for(full, "gpt-image-1.5", prompt="x" * 10, size="1024x1024",
                                               quality="low")
    wide_applied, wide_request = applied_for(full, "gpt-image-1.5", prompt="狐" * 10, size="1024x1024",
                                             quality="low")
    # 20 more bytes (3 per CJK character), priced at the dearer input rate ($8/M)
    assert (estimate_image_micros(price, wide_applied, wide_request)
            - estimate_image_micros(price, ascii_applied, ascii_request)) == 20 * 8


def test_estimate_holds_the_tokens_of_streamed_partial_images(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gpt-image-1.5"]
    plain_applied, plain = applied_for(full, "gpt-image-1.5", prompt="x", size="1024x1024", quality="low")
    drafts_applied, drafts = applied_for(full, "gpt-image-1.5", prompt="x", size="1024x1024", quality="low",
                                         partial_images=3)
    # 3 drafts x 100 output image tokens at $32/M
    assert (estimate_image_micros(price, drafts_applied, drafts)
            - estimate_image_micros(price, plain_applied, plain)) == 3 * 100 * 32


def test_estimate_of_a_gpt_image_edit_by_hand(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gpt-image-1.5"]
    images = [InputImage(object_key="a", mime_type="image/png", width=1024, height=1024)]
    mask = InputImage(object_key="m", mime_type="image/png", width=1024, height=1024)
    low, request = applied_for(full, "gpt-image-1.5", prompt="add a hat", size="1024x1536", quality="medium",
                               input_images=images, mask=mask)
    # 9 bytes + 100 overhead + (image + mask) x 4160, all at $8/M; 1584 output tokens at $32/M
    assert estimate_image_micros(price, low, request) == (9 + 100 + 2 * 4160) * 8 + 1584 * 32
    high, request = applied_for(full, "gpt-image-1.5", prompt="add a hat", size="1024x1536", quality="medium",
                                input_images=images, mask=mask, input_fidelity="high")
    assert estimate_image_micros(price, high, request) == (9 + 100 + 2 * 10400) * 8 + 1584 * 32


def test_estimate_takes_the_highest_quality_and_largest_size_when_auto(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gpt-image-1.5"]
    applied, request = applied_for(full, "gpt-image-1.5", prompt="fox")
    assert applied.quality == "auto" and applied.upstream_size == "auto"
    assert output_image_tokens(price, applied) == 6240  # high, 1024x1536
    assert estimate_image_micros(price, applied, request) == (3 + 100) * 8 + 6240 * 32
    applied, _ = applied_for(full, "gpt-image-1.5", size="1024x1024")
    assert output_image_tokens(price, applied) == 4160
    applied, _ = applied_for(full, "gpt-image-2.5-flare", size="1024x1024")
    assert output_image_tokens(table.models["gpt-image-2.5-flare"], applied) == 28120  # max quality (assumed)


def test_gpt_image_2_tokens_scale_with_pixel_area(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gpt-image-2"]
    applied, _ = applied_for(full, "gpt-image-2", size="3840x2160", quality="high")
    assert output_image_tokens(price, applied) == math.ceil(7030 * 3840 * 2160 / (1024 * 1024)) == 55_609
    applied, _ = applied_for(full, "gpt-image-2", size="512x512", quality="low")
    assert output_image_tokens(price, applied) == 50
    applied, _ = applied_for(full, "gpt-image-2", size="1536x1024", quality="medium")
    assert output_image_tokens(price, applied) == 2655
    applied, _ = applied_for(full, "gpt-image-2", quality="medium")  # size auto: the largest standard size
    assert output_image_tokens(price, applied) == 2655


def test_gemini_2_5_input_bound_grows_with_known_input_size(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gemini-2.5-flash-image"]
    small = [InputImage(object_key="a", mime_type="image/png", width=1024, height=1024)]
    large = [InputImage(object_key="a", mime_type="image/png", width=4000, height=3000)]
    applied, small_request = applied_for(full, "gemini-2.5-flash-image", prompt="fox", input_images=small)
    _, large_request = applied_for(full, "gemini-2.5-flash-image", prompt="fox", input_images=large)
    # (3 + 100 + 1290) x $0.30 + 1000 x $2.50 + 1290 x $30 = 417.9 + 2500 + 38700 -> 41618
    assert estimate_image_micros(price, applied, small_request) == 41_618
    # 6 x 4 tiles of 768 px x 258 tokens = 6192 > 1290: 1888.5 + 2500 + 38700 = 43088.5 -> 43089
    assert estimate_image_micros(price, applied, large_request) == 43_089


GEMINI_TOKENS: dict[str, dict[str | None, int]] = {
    "gemini-2.5-flash-image": {None: 1290},
    "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000},
    "gemini-3.1-flash-image": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
}
GPT1_TOKENS = {  # https://platform.openai.com/docs/guides/image-generation (cost and latency)
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
GPT2_TOKENS_1024 = {"low": 200, "medium": 1770, "high": 7030, "xhigh": 14060, "max": 28120}
STANDARD_SIZES = ("1024x1024", "1024x1536", "1536x1024")


def documented_output_tokens(spec: ModelSpec, applied: AppliedParams) -> list[int]:
    """Every output-token count the upstream may bill for this image, from the docs' tables."""
    family = spec.upstream_model.removeprefix("google/")
    if family in GEMINI_TOKENS:
        return [GEMINI_TOKENS[family][applied.image_size]]
    qualities = [q for q in spec.capabilities.qualities.values() if q != "auto"]
    quality = applied.upstream_quality or "auto"
    chosen = qualities if quality == "auto" else [quality]
    sizes = [applied.size] if applied.size else list(STANDARD_SIZES)
    if spec.capabilities.planner == "size_list":
        return [GPT1_TOKENS[q][s] for q in chosen for s in sizes]
    counts = []
    for q in chosen:
        for size in sizes:
            w, h = (int(v) for v in size.split("x"))
            counts.append(math.ceil(GPT2_TOKENS_1024[q] * w * h / (1024 * 1024)))
    return counts


def realistic_usages(spec: ModelSpec, applied: AppliedParams, request: GenerationRequest) -> list[Usage]:
    """Heavy but realistic usage for one image: every token count the tokenizer or upstream may report."""
    text_in = len(request.prompt.encode()) + len((request.system or "").encode()) + 40
    inputs = [*request.input_images, *([request.mask] if request.mask else [])]
    if spec.provider in ("gemini", "vertex_gemini", "openai_chat"):
        if spec.upstream_model.endswith("2.5-flash-image"):  # 258 per 768 px tile
            image_in = sum(258 * math.ceil((i.width or 1024) / 768) * math.ceil((i.height or 1024) / 768)
                           for i in inputs)
        else:
            image_in = 1120 * len(inputs)  # Gemini 3 at its default (high) media resolution
        text_out = 300 if "2.5" in spec.upstream_model else 1500  # caption; thinking
    else:
        high = applied.input_fidelity == "high" or spec.upstream_model.startswith("gpt-image-2")
        image_in = (581 + (6240 if high else 0)) * len(inputs)  # 65 + 4 x 129 per 512 px tile, + fidelity
        text_out = 0
    usages = [Usage()]
    for image_out in documented_output_tokens(spec, applied):
        usages.append(Usage(input_tokens=text_in + image_in, input_text_tokens=text_in, input_image_tokens=image_in,
                            output_tokens=text_out + image_out, output_text_tokens=text_out,
                            output_image_tokens=image_out))
        # no modality split reported (a chat gateway; a Gemini answer without token details)
        usages.append(Usage(input_tokens=text_in + image_in, input_text_tokens=text_in + image_in,
                            output_tokens=text_out + image_out, output_text_tokens=text_out + image_out))
        usages.append(Usage(input_tokens=text_in + image_in, output_tokens=text_out + image_out))
    return usages


def request_grid(spec: ModelSpec) -> list[dict[str, object]]:
    caps = spec.capabilities
    images: list[list[InputImage]] = [[]]
    if caps.edit:
        images.append([InputImage(object_key="a", mime_type="image/png", width=1024, height=1536)])
        images.append([InputImage(object_key=f"i{k}", mime_type="image/jpeg", width=3000, height=2000)
                       for k in range(min(3, caps.max_input_images))])
    shapes: list[dict[str, object]] = [{}]
    if caps.planner == "ratio_grid":
        tiers: list[str | None] = [*caps.image_sizes] or [None]
        shapes += [{"image_size": tier, "aspect_ratio": ratio} for tier in tiers for ratio in caps.aspect_ratios[::3]]
        shapes += [{"quality": "hd"}, {"size": "1792x1024"}]
    elif caps.planner == "size_list":
        shapes += [{"size": size, "quality": q} for size in ["auto", *caps.sizes] for q in caps.qualities]
    else:
        sizes = ["auto", "1024x1024", "1536x1024", "1024x1536", "3840x2160", "512x512", "2048x1152"]
        shapes += [{"size": size, "quality": q} for size in sizes for q in caps.qualities or ["auto"]]
        shapes += [{"aspect_ratio": "21:9", "quality": q} for q in caps.qualities or ["auto"]]
    prompts: list[dict[str, object]] = [
        {"prompt": "a red fox"},
        {"prompt": "un renard roux dans la neige, 雪の中の赤い狐 🦊 " * 20, "system": "Sois précis."},
    ]
    grid = []
    for shape in shapes:
        for prompt in prompts:
            for inputs in images:
                fields: dict[str, object] = {**shape, **prompt, "input_images": inputs}
                if inputs and caps.mask:
                    fields["mask"] = InputImage(object_key="m", mime_type="image/png", width=1024, height=1536)
                if inputs and caps.input_fidelity:
                    grid.append({**fields, "input_fidelity": "high"})
                grid.append(fields)
    return grid


@pytest.mark.parametrize("model_id", every_model_id())
def test_estimate_bounds_the_actual_cost(table: PriceTable, full: Catalogue, with_imagen: Catalogue,
                                         model_id: str) -> None:
    catalogue = catalogue_for(model_id, full, with_imagen)
    spec = catalogue.get(model_id)
    price = table.models[model_id]
    checked = 0
    for fields in request_grid(spec):
        applied, request = applied_for(catalogue, model_id, **fields)
        estimate = estimate_image_micros(price, applied, request)
        assert type(estimate) is int
        assert estimate > 0 or model_id == "demo-image"
        usages = realistic_usages(spec, applied, request) if price.per_token else [Usage(), Usage(output_tokens=9)]
        for usage in usages:
            actual = actual_image_micros(price, applied, usage)
            assert type(actual) is int
            assert 0 <= actual <= estimate, (fields, usage, actual, estimate)
            checked += 1
    assert checked > 0


# -- settlement from usage ---------------------------------------------------------------------


def test_settlement_of_a_gemini_3_pro_image_by_hand(table: PriceTable, full: Catalogue) -> None:
    applied, _ = applied_for(full, "gemini-3-pro-image", image_size="2K")
    usage = Usage(input_tokens=597, input_text_tokens=37, input_image_tokens=560,
                  output_tokens=1532, output_text_tokens=412, output_image_tokens=1120)
    # 37 x $2 + 560 x $2 + 412 x $12 + 1120 x $120 per 1M tokens = 74 + 1120 + 4944 + 134400 micro-dollars
    assert actual_image_micros(table.models["gemini-3-pro-image"], applied, usage) == 140_538


def test_settlement_of_a_gpt_image_edit_by_hand(table: PriceTable, full: Catalogue) -> None:
    applied, _ = applied_for(full, "gpt-image-1.5", size="1024x1536", quality="medium")
    usage = Usage(input_tokens=413, input_text_tokens=25, input_image_tokens=388,
                  output_tokens=1584, output_image_tokens=1584)
    # 25 x $5 + 388 x $8 + 1584 x $32 = 125 + 3104 + 50688
    assert actual_image_micros(table.models["gpt-image-1.5"], applied, usage) == 53_917


def test_settlement_rounds_half_up_once(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gemini-3.1-flash-image"]  # $0.50/M in, $3/M text out, $60/M image out
    applied, _ = applied_for(full, "gemini-3.1-flash-image", image_size="512")
    # 11 x 0.5 + 91 x 3 + 747 x 60 = 5.5 + 273 + 44820 = 45098.5 -> 45099
    usage = Usage(input_tokens=11, input_text_tokens=11, output_tokens=838, output_text_tokens=91,
                  output_image_tokens=747)
    assert actual_image_micros(price, applied, usage) == 45_099
    # 44820 + 2.5 -> 44823 (half up; half-even would give 44822)
    usage = Usage(input_tokens=5, input_text_tokens=5, output_tokens=747, output_image_tokens=747)
    assert actual_image_micros(price, applied, usage) == 44_823
    # 0.5 + 0.5 + 44820 = 44821: rounded once at the end (rounding each term would give 44822)
    usage = Usage(input_tokens=2, input_text_tokens=1, input_image_tokens=1, output_tokens=747,
                  output_image_tokens=747)
    assert actual_image_micros(price, applied, usage) == 44_821


def test_settlement_when_the_upstream_reports_no_split(table: PriceTable, full: Catalogue) -> None:
    price = table.models["gemini-2.5-flash-image"]
    applied, _ = applied_for(full, "gemini-2.5-flash-image")
    # all output reported as text: 1290 image tokens are billed as image, the remaining 50 as text:
    # 12 x 0.30 + 1290 x 30 + 50 x 2.50 = 3.6 + 38700 + 125 = 38828.6 -> 38829
    usage = Usage(input_tokens=12, input_text_tokens=12, output_tokens=1340, output_text_tokens=1340)
    assert actual_image_micros(price, applied, usage) == 38_829
    # no split at all: the same
    usage = Usage(input_tokens=12, output_tokens=1340)
    assert actual_image_micros(price, applied, usage) == 38_829
    # input tokens with no split are priced at the dearer input rate ($8/M image on gpt-image-1.5)
    gpt = table.models["gpt-image-1.5"]
    applied, _ = applied_for(full, "gpt-image-1.5", size="1024x1024", quality="low")
    usage = Usage(input_tokens=50, output_tokens=272, output_image_tokens=272)
    assert actual_image_micros(gpt, applied, usage) == 50 * 8 + 272 * 32


def test_settlement_without_usage_falls_back_to_the_tier(table: PriceTable, full: Catalogue) -> None:
    applied, _ = applied_for(full, "gemini-3.1-flash-image", image_size="4K")
    assert actual_image_micros(table.models["gemini-3.1-flash-image"], applied, Usage()) == 151_200
    applied, _ = applied_for(full, "gpt-image-1.5")  # quality and size auto: the dearest the upstream may pick
    assert actual_image_micros(table.models["gpt-image-1.5"], applied, Usage()) == 6240 * 32


# -- markup --------------------------------------------------------------------------------------


def test_billed_micros_rounds_half_up() -> None:
    assert billed_micros(38_700, Decimal("1.5")) == 58_050
    assert billed_micros(5, Decimal("1.3")) == 7  # 6.5
    assert billed_micros(5, Decimal("0.5")) == 3  # 2.5: half up, not half even
    assert billed_micros(133_120, Decimal("1.2")) == 159_744
    assert billed_micros(0, Decimal("1.5")) == 0
    assert type(billed_micros(10, Decimal("1.25"))) is int


SEED_TIERS = """
[markup]
default = "1.0"
tiers = [
  { min_spend_usd = "0", markup = "1.5" },
  { min_spend_usd = "10", markup = "1.4" },
  { min_spend_usd = "50", markup = "1.3" },
  { min_spend_usd = "200", markup = "1.2" },
]
"""


def test_markup_tiers_over_90_day_spend(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(SEED_TIERS)
    tiered = PriceTable.load(path)

    def markup(spend: int, key: Decimal | None = None) -> Decimal:
        return markup_for(key_markup=key, table=tiered, spend_90d_micros=spend)

    assert markup(0) == Decimal("1.5")
    assert markup(9_999_999) == Decimal("1.5")
    assert markup(10_000_000) == Decimal("1.4")
    assert markup(199_999_999) == Decimal("1.3")
    assert markup(10**12) == Decimal("1.2")
    assert markup(10**12, key=Decimal("1.05")) == Decimal("1.05")  # a key's own markup wins
    assert markup(0, key=Decimal("2")) == Decimal("2")


def test_markup_default_when_no_tier_is_reached(table: PriceTable, tmp_path: Path) -> None:
    assert markup_for(key_markup=None, table=table, spend_90d_micros=10**9) == Decimal("1.0")
    path = tmp_path / "prices.toml"
    path.write_text('[markup]\ndefault = "1.1"\ntiers = [{ min_spend_usd = "25", markup = "1.3" }]\n')
    tiered = PriceTable.load(path)
    assert markup_for(key_markup=None, table=tiered, spend_90d_micros=24_999_999) == Decimal("1.1")
    assert markup_for(key_markup=None, table=tiered, spend_90d_micros=25_000_000) == Decimal("1.3")


# -- snapshots -------------------------------------------------------------------------------------


def test_snapshot_round_trips_every_row_through_json(table: PriceTable) -> None:
    snapshot = PricingSnapshot(markup=Decimal("1.25"), routes=dict(table.models))
    stored = json.loads(json.dumps(snapshot.as_json()))
    assert PricingSnapshot.model_validate(stored) == snapshot
    per_token = stored["routes"]["gpt-image-2"]["per_token"]
    assert per_token["image_out"] == "30" and per_token["cached_in"] == "1.25"
    assert stored["markup"] == "1.25"


def test_a_price_change_never_reprices_a_running_job(table: PriceTable, full: Catalogue, tmp_path: Path) -> None:
    applied, _ = applied_for(full, "gemini-2.5-flash-image")
    at_submit = PricingSnapshot(markup=Decimal(1),
                                routes={"gemini-2.5-flash-image": table.models["gemini-2.5-flash-image"]})
    stored = PricingSnapshot.model_validate(json.loads(json.dumps(at_submit.as_json())))
    path = tmp_path / "prices.toml"
    path.write_text("""
[[models]]
id = "gemini-2.5-flash-image"
source = "a later price"
effective = 2026-12-01
per_token = { text_in = "1", image_in = "1", text_out = "5", image_out = "60" }
bounds = { text_in_overhead_tokens = 100, input_image_tokens = 1290, text_out_tokens = 1000 }
output_image_tokens = { "*" = { "*" = 1290 } }
""")
    later = PriceTable.load(path)
    usage = Usage(output_tokens=1290, output_image_tokens=1290)
    assert actual_image_micros(stored.routes["gemini-2.5-flash-image"], applied, usage) == 38_700
    assert actual_image_micros(later.models["gemini-2.5-flash-image"], applied, usage) == 77_400


# -- the operator's prices file ------------------------------------------------------------------

OVERRIDE = """
[markup]
default = "1.25"

[[models]]
id = "gpt-image-2"
source = "our negotiated price"
effective = 2026-11-01
per_token = { text_in = 4, image_in = 7.5, text_out = 9.99, image_out = 0.1 }
bounds = { text_in_overhead_tokens = 50, input_image_tokens = 5000, text_out_tokens = 0 }
[models.output_image_tokens.high]
"1024x1024" = 7030

[[models]]
id = "flux-2-pro"
source = "operator"
effective = 2026-11-21
per_image = { "*" = { "1024x1024" = "0.03", "*" = "0.05" } }
"""


def test_override_rows_replace_shipped_ones_and_add_new(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE)
    merged = PriceTable.load(path)
    row = merged.models["gpt-image-2"]
    assert row.source == "our negotiated price"
    assert row.per_token is not None
    # TOML numbers become exact decimals through their shortest repr, never binary floats
    assert row.per_token.image_out == Decimal("0.1") and row.per_token.image_in == Decimal("7.5")
    assert row.per_token.text_out == Decimal("9.99") and row.per_token.text_in == Decimal("4")
    assert merged.get("FLUX-2-PRO") is not None
    assert merged.models["gemini-3-pro-image"] == table.models["gemini-3-pro-image"]
    assert len(merged.models) == len(table.models) + 1
    assert merged.markup.default == Decimal("1.25")
    assert merged.meta == table.meta


def test_override_replace_drops_the_shipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("replace = true\n" + OVERRIDE)
    replaced = PriceTable.load(path)
    assert set(replaced.models) == {"gpt-image-2", "flux-2-pro"}
    assert replaced.missing(["gpt-image-2", "demo-image"]) == ["demo-image"]


def test_override_without_markup_keeps_the_shipped_markup(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE.replace('[markup]\ndefault = "1.25"\n', ""))
    assert PriceTable.load(path).markup == table.markup


@pytest.mark.parametrize(("text", "message"), [
    ("surprise = 1\n", "surprise"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\nper_image = { "*" = { "*" = "0.1" } }\n'
     "colour = 'red'\n", "colour"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\nper_image = { "*" = { "*" = "-0.1" } }\n',
     "non-negative"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\nper_image = { "*" = { "*" = true } }\n',
     "boolean"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\nper_image = { "*" = { "*" = "cheap" } }\n',
     "not a decimal"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\n', "exactly one"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\n'
     'per_token = { text_in = "1", image_in = "1", text_out = "1", image_out = "1" }\n'
     'output_image_tokens = { "*" = { "*" = 1 } }\n', "bounds"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\n'
     'per_token = { text_in = "1", image_in = "1", text_out = "1", image_out = "1" }\n'
     "bounds = { text_in_overhead_tokens = 1, input_image_tokens = 1, text_out_tokens = 0 }\n"
     'output_image_tokens = { "*" = { "*" = 1.5 } }\n', "integer"),
    ('[[models]]\nid = "x"\nsource = "s"\neffective = 2026-01-01\nper_image = { "*" = { "*" = "1" } }\n'
     '[[models]]\nid = "X"\nsource = "s"\neffective = 2026-01-01\nper_image = { "*" = { "*" = "1" } }\n',
     "priced twice"),
    ("[markup]\ntiers = [{ min_spend_usd = 1, markup = 1 }, { min_spend_usd = \"1.0\", markup = 2 }]\n",
     "same min_spend_usd"),
    ("[[models]\n", "not valid TOML"),
])
def test_invalid_prices_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceTableError, match=message):
        PriceTable.load(path)


def test_a_missing_prices_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot read"):
        PriceTable.load(tmp_path / "nope.toml")


# -- money formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(("micros", "text"), [
    (0, "0.000000"), (1, "0.000001"), (38_700, "0.038700"), (1_000_000, "1.000000"),
    (1_234_567_890, "1234.567890"), (-5, "-0.000005"), (10**18 + 1, "1000000000000.000001"),
])
def test_usd_is_exact(micros: int, text: str) -> None:
    assert usd(micros) == text


# -- quoting a request's routes --------------------------------------------------------------------


def test_a_quote_leaves_an_unpriced_fallback_out_and_refuses_an_unpriced_first_route(
    full: Catalogue, table: PriceTable
) -> None:
    """A running gateway cannot show this (it does not start while an offered model has no price,
    see tests/inproc/test_billing.py), so it is checked here, on :func:`core.billing.ledger.quote`."""
    request = GenerationRequest(prompt="a red fox in the snow", model="gemini-3-pro-image")
    routes = plan_routes(full, request).routes
    assert [r.model for r in routes] == ["gemini-3-pro-image", "vertex/gemini-3-pro-image",
                                         "gateway/gemini-3-pro-image"]
    priced = ["gemini-3-pro-image", "gateway/gemini-3-pro-image"]
    prices = PriceTable([table.models[m] for m in priced])
    quoted = quote(request, routes, prices=prices, markup=Decimal("1.5"))
    assert [r.model for r in quoted.routes] == priced
    assert set(quoted.pricing.routes) == set(priced) and quoted.pricing.markup == Decimal("1.5")
    dearest = max(estimate_image_micros(prices.models[r.model], r, request) for r in quoted.routes)
    assert quoted.per_image_micros == billed_micros(dearest, Decimal("1.5"))

    unpriced_first = PriceTable([table.models["vertex/gemini-3-pro-image"]])
    with pytest.raises(ServiceUnavailableError) as refused:
        quote(request, routes, prices=unpriced_first, markup=Decimal(1))
    assert refused.value.code == "model_not_priced" and "gemini-3-pro-image" in refused.value.message
