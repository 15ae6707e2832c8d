"""plan(): what a request will actually generate on each model of the shipped catalogue.

Table-driven over ``core/catalogue/models.toml``, with the expected pixel sizes and model limits
written out from the providers' documentation (https://ai.google.dev/gemini-api/docs/image-generation,
https://platform.openai.com/docs/guides/image-generation) (not read back from the catalogue), so that a wrong
catalogue row fails here as surely as a wrong planner rule. Every decision is checked to be visible:
values passed on, values mapped (``adjusted``), values refused (400 naming the field), formats
transcoded, fields that change nothing (``ignored``).
"""

from __future__ import annotations

import pytest

from core.errors import InvalidRequestError
from core.generation import AppliedParams, GenerationRequest, InputImage
from core.planning import nearest_ratio, parse_ratio, parse_size, plan, ratio_label
from core.routing import AliasSpec, Capabilities, Catalogue, ModelSpec, Resolved

ALL_PROVIDERS = frozenset({"demo", "gemini", "imagen", "openai_images", "vertex_gemini", "vertex_imagen",
                           "openai_chat"})
CATALOGUE = Catalogue.load(configured=ALL_PROVIDERS)
MODELS = {spec.id: spec for spec in CATALOGUE.all_models}


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", **fields)  # type: ignore[arg-type]


def planned(model: str, **fields: object) -> AppliedParams:
    return plan(request(model=model, **fields), CATALOGUE.resolve(model), grids=CATALOGUE.grids)


def refused(model: str, **fields: object) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        planned(model, **fields)
    assert info.value.status == 400
    return info.value


# -- the documented model families ----------------------------------

TEN_RATIOS = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
EXTREME_RATIOS = ["1:4", "4:1", "1:8", "8:1"]

GEMINI_25_PIXELS = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}
# ratio -> (512, 1K, 2K, 4K)
GEMINI_3_PIXELS = {
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
TIER_COLUMN = {"512": 0, "1K": 1, "2K": 2, "4K": 3}

# ratio_grid model -> (family, aspect ratios, image sizes)
PRO = ("gemini-3-pro-image", TEN_RATIOS, ["1K", "2K", "4K"])
FLASH_31 = ("gemini-3.1-flash-image", TEN_RATIOS + EXTREME_RATIOS, ["512", "1K", "2K", "4K"])
FLASH_25 = ("gemini-2.5-flash-image", TEN_RATIOS, [])
GRID_MODELS = {
    "gemini-3-pro-image": PRO, "vertex/gemini-3-pro-image": PRO, "gateway/gemini-3-pro-image": PRO,
    "gemini-3.1-flash-image": FLASH_31, "vertex/gemini-3.1-flash-image": FLASH_31,
    "gateway/gemini-3.1-flash-image": FLASH_31,
    "gemini-2.5-flash-image": FLASH_25, "vertex/gemini-2.5-flash-image": FLASH_25,
}
SIZE_LIST_MODELS = ["gpt-image-1.5", "chatgpt-image-latest", "gpt-image-1-mini"]
FREE_SIZE_GPT = ["gpt-image-2", "gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst",
                 "gpt-image-2.6-flare"]
XHIGH_MODELS = FREE_SIZE_GPT[1:]
GPT_MODELS = SIZE_LIST_MODELS + FREE_SIZE_GPT
# upstream -> formats it can be asked for (per the providers' API references); others are transcoded
UPSTREAM_FORMATS = {"gemini": ["png"], "openai_chat": ["png"], "vertex_gemini": ["png", "jpeg"],
                    "openai_images": ["png", "jpeg", "webp"], "demo": ["png", "jpeg", "webp"]}


def grid_pixels(model: str, ratio: str, tier: str | None) -> tuple[int, int]:
    family = GRID_MODELS[model][0]
    if family == "gemini-2.5-flash-image":
        return GEMINI_25_PIXELS[ratio]
    assert tier is not None
    return GEMINI_3_PIXELS[ratio][TIER_COLUMN[tier]]


def test_the_catalogue_has_the_documented_models() -> None:
    assert set(MODELS) == set(GRID_MODELS) | set(GPT_MODELS) | {"demo-image"}


@pytest.mark.parametrize("model", sorted(GRID_MODELS))
def test_ratio_grid_models_have_the_documented_ratios_and_sizes(model: str) -> None:
    family, ratios, sizes = GRID_MODELS[model]
    caps = MODELS[model].capabilities
    assert caps.planner == "ratio_grid"
    assert MODELS[model].upstream_model.removeprefix("google/") == family
    assert sorted(caps.aspect_ratios) == sorted(ratios)
    assert caps.image_sizes == sizes
    assert caps.n_per_call == 1  # one image per generateContent call
    assert not caps.transparent_background


# -- every model: a default request ----------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_plans_a_default_request(model: str) -> None:
    spec = MODELS[model]
    applied = planned(model)
    assert (applied.model, applied.provider, applied.upstream_model) == (spec.id, spec.provider, spec.upstream_model)
    assert (applied.quality, applied.output_format, applied.upstream_format) == ("auto", "png", "png")
    assert applied.background == "opaque"
    assert applied.thinking_level is None
    assert (applied.adjusted, applied.ignored) == ({}, [])
    if model in GPT_MODELS:
        assert (applied.upstream_size, applied.upstream_quality, applied.size) == ("auto", "auto", None)
        assert applied.n_per_call == 10
    elif model in GRID_MODELS:
        # no aspect ratio: the upstream picks (1:1, or the input image's); the tier is the default
        assert (applied.width, applied.height, applied.aspect_ratio) == (None, None, None)
        assert applied.image_size == (None if GRID_MODELS[model][0] == "gemini-2.5-flash-image" else "1K")
        assert applied.n_per_call == 1
    else:
        assert (applied.width, applied.height, applied.upstream_size) == (1024, 1024, None)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_ten_images_are_accepted_by_every_model(model: str) -> None:
    assert planned(model, n=10).model == model


# -- ratio_grid: aspect ratio x resolution tier -> the grid's exact pixels --------------------

GRID_CASES = [
    pytest.param(model, ratio, tier, id=f"{model}-{ratio}-{tier or 'fixed'}")
    for model, (_, ratios, sizes) in sorted(GRID_MODELS.items())
    for ratio in ratios
    for tier in (sizes or [None])
]


@pytest.mark.parametrize(("model", "ratio", "tier"), GRID_CASES)
def test_supported_ratio_is_passed_with_the_grid_pixel_size(model: str, ratio: str, tier: str | None) -> None:
    applied = planned(model, aspect_ratio=ratio, image_size=tier)
    assert applied.aspect_ratio == ratio
    assert applied.image_size == tier
    assert (applied.width, applied.height) == grid_pixels(model, ratio, tier)
    assert applied.size == "{}x{}".format(*grid_pixels(model, ratio, tier))
    assert (applied.adjusted, applied.ignored) == ({}, [])
    assert applied.upstream_size is None


@pytest.mark.parametrize(
    ("model", "fields", "tier", "pixels"),
    [
        ("gemini-3-pro-image", {"aspect_ratio": "16:9"}, "1K", (1376, 768)),
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "quality": "high"}, "2K", (2752, 1536)),
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "quality": "hd"}, "2K", (2752, 1536)),
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "quality": "low"}, "1K", (1376, 768)),  # no 512 on Pro
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "quality": "standard"}, "1K", (1376, 768)),
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "image_size": "4K"}, "4K", (5504, 3072)),
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "image_size": "4k"}, "4K", (5504, 3072)),
        ("gemini-3-pro-image", {"aspect_ratio": "16:9", "image_size": "1k", "quality": "high"}, "1K", (1376, 768)),
        ("gemini-3.1-flash-image", {"aspect_ratio": "16:9", "quality": "low"}, "512", (688, 384)),
        ("gemini-3.1-flash-image", {"aspect_ratio": "16:9", "quality": "medium"}, "1K", (1376, 768)),
        ("gemini-3.1-flash-image", {"aspect_ratio": "16:9", "quality": "high"}, "2K", (2752, 1536)),
        ("gemini-3.1-flash-image", {"aspect_ratio": "4:1", "image_size": "0.5K"}, "512", (1024, 256)),
        ("gemini-3.1-flash-image", {"aspect_ratio": "1:8", "image_size": "0.5k"}, "512", (192, 1536)),
        ("gemini-3.1-flash-image", {"aspect_ratio": "8:1", "image_size": "4K"}, "4K", (12288, 1536)),
        ("vertex/gemini-3.1-flash-image", {"aspect_ratio": "9:16", "quality": "low"}, "512", (384, 688)),
        ("gateway/gemini-3-pro-image", {"aspect_ratio": "21:9", "quality": "high"}, "2K", (3168, 1344)),
        ("gemini-2.5-flash-image", {"aspect_ratio": "16:9", "quality": "high"}, None, (1344, 768)),
    ],
)
def test_quality_and_image_size_pick_the_tier(
    model: str, fields: dict[str, object], tier: str | None, pixels: tuple[int, int]
) -> None:
    applied = planned(model, **fields)
    assert applied.image_size == tier
    assert (applied.width, applied.height) == pixels
    assert applied.adjusted == {}


@pytest.mark.parametrize(
    ("model", "image_size"),
    [("gemini-3-pro-image", "0.5K"), ("gemini-3-pro-image", "512"), ("vertex/gemini-3-pro-image", "0.5K"),
     ("gemini-3.1-flash-image", "8K"), ("gemini-3.1-flash-image", "1024"), ("gemini-3.1-flash-image", "big")],
)
def test_image_size_the_model_does_not_make_is_refused(model: str, image_size: str) -> None:
    error = refused(model, aspect_ratio="1:1", image_size=image_size)
    assert error.param == "image_size"
    for tier in GRID_MODELS[model][2]:
        assert tier in error.message


def test_image_size_on_the_fixed_size_model_is_adjusted() -> None:
    applied = planned("gemini-2.5-flash-image", aspect_ratio="1:1", image_size="2K")
    assert (applied.width, applied.height, applied.image_size) == (1024, 1024, None)
    assert applied.adjusted == {"image_size": "2K -> fixed"}


@pytest.mark.parametrize("model", sorted(GRID_MODELS))
def test_unsupported_ratio_7_4_maps_to_16_9_and_is_recorded(model: str) -> None:
    applied = planned(model, aspect_ratio="7:4")
    tier = None if GRID_MODELS[model][0] == "gemini-2.5-flash-image" else "1K"
    assert applied.aspect_ratio == "16:9"
    assert (applied.width, applied.height) == grid_pixels(model, "16:9", tier)
    assert applied.adjusted == {"aspect_ratio": "7:4 -> 16:9"}


@pytest.mark.parametrize(
    ("model", "asked", "mapped"),
    [
        ("gemini-3-pro-image", "1:4", "9:16"),
        ("gemini-3-pro-image", "2:1", "16:9"),
        ("gemini-3-pro-image", "5:2", "21:9"),
        ("gemini-2.5-flash-image", "1:2", "9:16"),
        ("gemini-3.1-flash-image", "1:7", "1:8"),
        ("gemini-3.1-flash-image", "3:1", "21:9"),
        ("gemini-3.1-flash-image", "7:2", "4:1"),
        ("gateway/gemini-3.1-flash-image", "10:1", "8:1"),
        ("gemini-3-pro-image", "10:1", "21:9"),
    ],
)
def test_unsupported_ratio_maps_to_the_nearest(model: str, asked: str, mapped: str) -> None:
    applied = planned(model, aspect_ratio=asked)
    assert applied.aspect_ratio == mapped
    assert applied.adjusted == {"aspect_ratio": f"{asked} -> {mapped}"}


@pytest.mark.parametrize("ratio", ["1:4", "4:1", "1:8", "8:1"])
def test_extreme_ratios_are_native_on_3_1_flash_only(ratio: str) -> None:
    assert planned("gemini-3.1-flash-image", aspect_ratio=ratio).adjusted == {}
    assert "aspect_ratio" in planned("gemini-3-pro-image", aspect_ratio=ratio).adjusted


@pytest.mark.parametrize("model", ["gemini-3-pro-image", "gemini-2.5-flash-image", "gateway/gemini-3.1-flash-image"])
@pytest.mark.parametrize("ratio", ["wide", "16x9", "0:1", "16:0", "1:2:3"])
def test_malformed_aspect_ratio_is_refused(model: str, ratio: str) -> None:
    assert refused(model, aspect_ratio=ratio).param == "aspect_ratio"


@pytest.mark.parametrize(
    ("model", "size", "tier", "pixels", "adjusted"),
    [
        ("gemini-3-pro-image", "1024x1024", "1K", (1024, 1024), {}),
        ("gemini-3-pro-image", "1376x768", "1K", (1376, 768), {}),
        ("gemini-3-pro-image", "1920x1080", "2K", (2752, 1536), {"size": "1920x1080 -> 2752x1536"}),
        ("gemini-3-pro-image", "2048x2048", "2K", (2048, 2048), {}),
        ("gemini-3-pro-image", "3840x2160", "4K", (5504, 3072), {"size": "3840x2160 -> 5504x3072"}),
        ("gemini-3.1-flash-image", "1536x1024", "1K", (1264, 848), {"size": "1536x1024 -> 1264x848"}),
        ("gemini-2.5-flash-image", "1344x768", None, (1344, 768), {}),
        ("gemini-2.5-flash-image", "1792x1024", None, (1344, 768), {"size": "1792x1024 -> 1344x768"}),
    ],
)
def test_size_on_a_ratio_grid_picks_ratio_and_tier(
    model: str, size: str, tier: str | None, pixels: tuple[int, int], adjusted: dict[str, str]
) -> None:
    applied = planned(model, size=size)
    assert applied.image_size == tier
    assert (applied.width, applied.height) == pixels
    assert applied.adjusted == adjusted


def test_size_auto_on_a_ratio_grid_leaves_the_size_to_the_upstream() -> None:
    applied = planned("gemini-3-pro-image", size="auto")
    assert (applied.width, applied.height, applied.aspect_ratio, applied.image_size) == (None, None, None, "1K")
    assert applied.adjusted == {}


@pytest.mark.parametrize("size", ["big", "1024", "1024*1024", "-5x10"])
def test_malformed_size_on_a_ratio_grid_is_refused(size: str) -> None:
    error = refused("gemini-3-pro-image", size=size)
    assert error.param == "size"
    assert "WIDTHxHEIGHT" in error.message


# -- size_list (GPT Image 1.x) ---------------------------------------------------------------


@pytest.mark.parametrize("model", SIZE_LIST_MODELS)
@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536"])
def test_listed_size_is_passed_as_is(model: str, size: str) -> None:
    applied = planned(model, size=size)
    assert applied.upstream_size == size
    assert applied.size == size
    assert applied.adjusted == {}


@pytest.mark.parametrize("model", SIZE_LIST_MODELS)
@pytest.mark.parametrize(
    ("size", "mapped"),
    [("1792x1024", "1536x1024"), ("1024x1792", "1024x1536"), ("2048x2048", "1024x1024"), ("512x512", "1024x1024"),
     ("3000x1000", "1536x1024")],
)
def test_unlisted_size_maps_to_the_nearest_and_is_recorded(model: str, size: str, mapped: str) -> None:
    applied = planned(model, size=size)
    assert applied.upstream_size == mapped
    assert applied.size == mapped
    assert applied.adjusted == {"size": f"{size} -> {mapped}"}


def test_dall_e_3_size_on_its_successor_is_mapped() -> None:
    applied = planned("dall-e-3", size="1792x1024", quality="hd")
    assert (applied.model, applied.upstream_size, applied.upstream_quality) == ("gpt-image-1.5", "1536x1024", "high")
    assert applied.adjusted == {"size": "1792x1024 -> 1536x1024"}


@pytest.mark.parametrize("model", GPT_MODELS)
@pytest.mark.parametrize("size", [None, "auto", "AUTO"])
def test_size_auto_on_gpt_image_lets_the_upstream_pick(model: str, size: str | None) -> None:
    applied = planned(model, size=size)
    assert applied.upstream_size == "auto"
    assert (applied.width, applied.height, applied.size, applied.aspect_ratio) == (None, None, None, None)
    assert applied.adjusted == {}


@pytest.mark.parametrize("model", SIZE_LIST_MODELS)
@pytest.mark.parametrize(
    ("ratio", "size", "adjusted"),
    [("1:1", "1024x1024", {}), ("3:2", "1536x1024", {}), ("2:3", "1024x1536", {}),
     ("16:9", "1536x1024", {"aspect_ratio": "16:9 -> 3:2"}), ("9:16", "1024x1536", {"aspect_ratio": "9:16 -> 2:3"}),
     ("5:4", "1536x1024", {"aspect_ratio": "5:4 -> 3:2"}),
     ("9:8", "1024x1024", {"aspect_ratio": "9:8 -> 1:1"})],
)
def test_aspect_ratio_on_a_size_list(model: str, ratio: str, size: str, adjusted: dict[str, str]) -> None:
    applied = planned(model, aspect_ratio=ratio)
    assert applied.upstream_size == size
    assert applied.adjusted == adjusted


@pytest.mark.parametrize("size", ["8192x8192", "4097x1024"])
def test_size_larger_than_any_listed_is_refused(size: str) -> None:
    assert refused("gpt-image-1.5", size=size).param == "size"


def test_malformed_size_on_a_size_list_names_the_sizes() -> None:
    error = refused("gpt-image-1-mini", size="huge")
    assert error.param == "size"
    assert "1536x1024" in error.message and "auto" in error.message


# -- free_size (GPT Image 2 and later): any WxH within the documented bounds ----------------

VALID_FREE_SIZES = ["1024x1024", "1536x1024", "1024x1536", "3840x2160", "2160x3840", "2560x1440", "256x256",
                    "3072x1024", "1024x3072", "1920x1088", "2160x2160", "768x256"]
INVALID_FREE_SIZES = [
    "1000x1000",  # not multiples of 16
    "1024x1080",  # one side not a multiple of 16
    "3840x2176",  # short side above 2160
    "2176x2176",  # short side above 2160
    "4096x1024",  # long side above 3840
    "240x240",  # below the minimum
    "3088x1024",  # ratio above 3:1
    "1024x3088",  # ratio above 1:3
    "4000x2000",  # long side above 3840
]


@pytest.mark.parametrize("model", FREE_SIZE_GPT)
@pytest.mark.parametrize("size", VALID_FREE_SIZES)
def test_free_size_within_bounds_is_passed_as_is(model: str, size: str) -> None:
    applied = planned(model, size=size)
    width, height = (int(v) for v in size.split("x"))
    assert (applied.width, applied.height, applied.upstream_size) == (width, height, size)
    assert applied.aspect_ratio == ratio_label(width, height)
    assert applied.adjusted == {}


@pytest.mark.parametrize("model", FREE_SIZE_GPT)
@pytest.mark.parametrize("size", INVALID_FREE_SIZES)
def test_free_size_out_of_bounds_is_refused(model: str, size: str) -> None:
    error = refused(model, size=size)
    assert error.param == "size"
    assert size in error.message


FREE_RATIO_CASES = [
    pytest.param(
        model, ratio, quality, id=f"{model}-{ratio}-{quality}",
    )
    for model in FREE_SIZE_GPT
    for ratio in MODELS[model].capabilities.aspect_ratios
    for quality in (["auto", "low", "medium", "high"] + (["xhigh"] if model in XHIGH_MODELS else []))
]
LONG_SIDE = {"auto": 1024, "low": 1024, "medium": 1024, "high": 1536, "xhigh": 2048}


@pytest.mark.parametrize(("model", "ratio", "quality"), FREE_RATIO_CASES)
def test_free_size_aspect_ratio_gives_a_size_the_model_accepts(model: str, ratio: str, quality: str) -> None:
    applied = planned(model, aspect_ratio=ratio, quality=quality)
    width, height = applied.width, applied.height
    assert width is not None and height is not None
    assert applied.aspect_ratio == ratio
    assert applied.upstream_size == f"{width}x{height}"
    assert max(width, height) == LONG_SIDE[quality]
    wanted = parse_ratio(ratio)
    assert wanted is not None
    assert abs(width / height - wanted[0] / wanted[1]) < 0.05 * wanted[0] / wanted[1]
    # within OpenAI's documented limits: multiples of 16, max 3840x2160, ratio between 1:3 and 3:1
    assert width % 16 == 0 and height % 16 == 0
    assert max(width, height) <= 3840 and min(width, height) <= 2160
    assert max(width, height) / min(width, height) <= 3.0
    # and so the planner accepts it back as an explicit size
    assert planned(model, size=applied.upstream_size, quality=quality).adjusted == {}


@pytest.mark.parametrize(
    ("model", "ratio", "quality", "size"),
    [
        ("gpt-image-2", "1:1", "auto", "1024x1024"),
        ("gpt-image-2", "16:9", "auto", "1024x576"),
        ("gpt-image-2", "16:9", "high", "1536x864"),
        ("gpt-image-2", "9:16", "hd", "864x1536"),
        ("gpt-image-2", "3:2", "standard", "1024x688"),
        ("gpt-image-2.5-sunburst", "16:9", "xhigh", "2048x1152"),
        ("gpt-image-2.6-flare", "1:1", "max", "2048x2048"),
    ],
)
def test_free_size_aspect_ratio_examples(model: str, ratio: str, quality: str, size: str) -> None:
    assert planned(model, aspect_ratio=ratio, quality=quality).upstream_size == size


@pytest.mark.parametrize("model", FREE_SIZE_GPT)
@pytest.mark.parametrize("ratio", ["5:3", "8:1", "wide"])
def test_free_size_aspect_ratio_not_listed_is_refused(model: str, ratio: str) -> None:
    assert refused(model, aspect_ratio=ratio).param == "aspect_ratio"


# -- quality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", GPT_MODELS)
@pytest.mark.parametrize(
    ("quality", "upstream"),
    [("auto", "auto"), ("low", "low"), ("medium", "medium"), ("high", "high"), ("standard", "medium"),
     ("hd", "high"), ("HIGH", "high")],
)
def test_gpt_image_quality_names(model: str, quality: str, upstream: str) -> None:
    applied = planned(model, quality=quality)
    assert applied.quality == quality.lower()
    assert applied.upstream_quality == upstream


def xhigh_case(model: str, quality: str) -> object:
    return pytest.param(model, quality, id=f"{model}-{quality}")


@pytest.mark.parametrize(
    ("model", "quality"),
    [xhigh_case(m, q) for m in sorted(MODELS) if m not in XHIGH_MODELS for q in ("xhigh", "max")],
)
def test_xhigh_and_max_are_refused_before_gpt_image_2_5(model: str, quality: str) -> None:
    error = refused(model, quality=quality)
    assert error.param == "quality"
    assert "xhigh" not in error.message.split("supports", 1)[-1]


@pytest.mark.parametrize("model", XHIGH_MODELS)
@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_xhigh_and_max_on_gpt_image_2_5_and_later(model: str, quality: str) -> None:
    applied = planned(model, quality=quality, aspect_ratio="1:1")
    assert (applied.quality, applied.upstream_quality) == (quality, quality)
    assert applied.upstream_size == "2048x2048"


@pytest.mark.parametrize("model", ["gemini-3-pro-image", "gpt-image-2", "demo"])
@pytest.mark.parametrize("quality", ["ultra", "best", ""])
def test_unknown_quality_is_refused(model: str, quality: str) -> None:
    if quality == "":
        # an empty quality is no quality
        assert planned(model, quality=quality).quality == "auto"
        return
    error = refused(model, quality=quality)
    assert error.param == "quality"
    assert repr(quality) in error.message


# -- output format and background ------------------------------------------------------------

FORMAT_CASES = [
    pytest.param(model, fmt, id=f"{model}-{fmt}") for model in sorted(MODELS) for fmt in ("png", "jpeg", "webp")
]


@pytest.mark.parametrize(("model", "fmt"), FORMAT_CASES)
def test_format_the_upstream_cannot_make_is_transcoded(model: str, fmt: str) -> None:
    applied = planned(model, output_format=fmt, output_compression=60)
    can_make = UPSTREAM_FORMATS[MODELS[model].provider]
    assert applied.output_format == fmt
    assert applied.upstream_format == (fmt if fmt in can_make else "png")
    assert applied.mime_type == f"image/{fmt}"
    if fmt == "png":
        assert (applied.output_compression, applied.ignored) == (None, ["output_compression"])
    else:
        assert (applied.output_compression, applied.ignored) == (60, [])


def test_webp_on_gemini_is_asked_as_png_and_transcoded() -> None:
    applied = planned("gemini-3-pro-image", output_format="webp", aspect_ratio="16:9")
    assert (applied.upstream_format, applied.output_format) == ("png", "webp")
    assert (applied.width, applied.height) == (1376, 768)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background(model: str, fmt: str) -> None:
    if model in GPT_MODELS or model == "demo-image":
        applied = planned(model, background="transparent", output_format=fmt)
        assert (applied.background, applied.output_format) == ("transparent", fmt)
        assert applied.ignored == []
    else:
        error = refused(model, background="transparent", output_format=fmt)
        assert error.param == "background"
        assert model in error.message


@pytest.mark.parametrize("model", [*GPT_MODELS, "demo"])
def test_transparent_jpeg_is_refused(model: str) -> None:
    error = refused(model, background="transparent", output_format="jpeg")
    assert error.param == "background"
    assert "png" in error.message


@pytest.mark.parametrize("model", sorted(GRID_MODELS))
@pytest.mark.parametrize("background", ["opaque", "auto"])
def test_background_on_gemini_changes_nothing_and_is_ignored(model: str, background: str) -> None:
    applied = planned(model, background=background)
    assert applied.background == "opaque"
    assert applied.ignored == ["background"]


@pytest.mark.parametrize("model", GPT_MODELS)
def test_opaque_background_on_gpt_image_is_applied(model: str) -> None:
    applied = planned(model, background="opaque")
    assert (applied.background, applied.ignored) == ("opaque", [])


# -- ignored fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "ignored"),
    [
        ("gemini-3-pro-image", {"style": "vivid"}, ["style"]),
        ("gemini-3-pro-image", {"moderation": "low"}, ["moderation"]),
        ("gemini-3.1-flash-image", {"style": "natural", "moderation": "low", "background": "opaque"},
         ["background", "style", "moderation"]),
        ("gpt-image-2", {"moderation": "low"}, []),
        ("gpt-image-2", {"style": "vivid"}, ["style"]),
        ("gpt-image-2", {"image_size": "2K"}, ["image_size"]),
        ("gpt-image-1.5", {"image_size": "1K", "output_compression": 50}, ["output_compression", "image_size"]),
        ("demo", {"image_size": "4K"}, ["image_size"]),
        ("gpt-image-2", {"input_fidelity": "high"}, ["input_fidelity"]),
        ("gpt-image-1-mini", {"input_fidelity": "low"}, ["input_fidelity"]),
        ("gemini-3-pro-image", {"input_fidelity": "high"}, ["input_fidelity"]),
        ("gpt-image-1.5", {"input_fidelity": "high"}, []),
        ("chatgpt-image-latest", {"input_fidelity": "low"}, []),
    ],
)
def test_fields_that_change_nothing_are_listed_as_ignored(
    model: str, fields: dict[str, object], ignored: list[str]
) -> None:
    applied = planned(model, **fields)
    assert applied.ignored == ignored
    if "input_fidelity" in fields:
        assert applied.input_fidelity == (None if ignored else fields["input_fidelity"])


# -- aliases: successors, upstream snapshots, thinking levels --------------------------------


@pytest.mark.parametrize(
    ("name", "model", "upstream_model", "thinking_level"),
    [
        ("gpt-image-1", "gpt-image-1.5", "gpt-image-1.5", None),
        ("dall-e-3", "gpt-image-1.5", "gpt-image-1.5", None),
        ("dall-e-2", "gpt-image-1.5", "gpt-image-1.5", None),
        ("openai/gpt-image-1", "gpt-image-1.5", "gpt-image-1.5", None),
        ("gemini-3-pro-image-preview", "gemini-3-pro-image", "gemini-3-pro-image", None),
        ("models/gemini-3-pro-image-preview", "gemini-3-pro-image", "gemini-3-pro-image", None),
        ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image", "gemini-3.1-flash-image", None),
        ("imagen-4.0-ultra-generate-001", "gemini-3-pro-image", "gemini-3-pro-image", None),
        ("imagen-4.0-fast-generate-001", "gemini-3.1-flash-image", "gemini-3.1-flash-image", "MINIMAL"),
        ("google/imagen-4.0-fast-generate-001", "gemini-3.1-flash-image", "gemini-3.1-flash-image", "MINIMAL"),
        ("imagen-4.0-generate-001", "gemini-3.1-flash-image", "gemini-3.1-flash-image", "HIGH"),
        ("gpt-image-2-2026-04-21", "gpt-image-2", "gpt-image-2-2026-04-21", None),
        ("openai/gpt-image-2-2026-04-21", "gpt-image-2", "gpt-image-2-2026-04-21", None),
        ("gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08", None),
        ("gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08", None),
        ("nano-banana-2", "gemini-3.1-flash-image", "gemini-3.1-flash-image", None),
        ("gemini-3.1-flash-image", "gemini-3.1-flash-image", "gemini-3.1-flash-image", None),
        ("google/gemini-3-pro-image", "gemini-3-pro-image", "gemini-3-pro-image", None),
    ],
)
def test_alias_decides_model_upstream_model_and_thinking_level(
    name: str, model: str, upstream_model: str, thinking_level: str | None
) -> None:
    applied = planned(name)
    assert (applied.model, applied.upstream_model, applied.thinking_level) == (model, upstream_model, thinking_level)


def test_thinking_level_the_model_does_not_take_is_dropped() -> None:
    alias = AliasSpec(id="x", thinking_level="MINIMAL")
    for model, expected in [("gateway/gemini-3.1-flash-image", None), ("gemini-3-pro-image", None),
                            ("vertex/gemini-3.1-flash-image", "MINIMAL")]:
        resolved = Resolved(spec=MODELS[model], requested="x", alias=alias)
        assert plan(request(), resolved, grids=CATALOGUE.grids).thinking_level == expected


def test_a_model_spec_plans_like_its_resolved_id() -> None:
    spec = MODELS["gemini-3.1-flash-image"]
    by_spec = plan(request(aspect_ratio="4:1"), spec, grids=CATALOGUE.grids)
    by_name = planned("gemini-3.1-flash-image", aspect_ratio="4:1")
    assert by_spec == by_name


def test_ratio_grid_without_grids_leaves_the_size_to_the_upstream() -> None:
    applied = plan(request(aspect_ratio="16:9"), MODELS["gemini-3-pro-image"])
    assert (applied.aspect_ratio, applied.image_size, applied.width, applied.height) == ("16:9", "1K", None, None)


# -- edits: input images, mask, n ------------------------------------------------------------


def images(count: int, mime: str = "image/png") -> list[InputImage]:
    return [InputImage(object_key=f"inputs/{i}.png", mime_type=mime) for i in range(count)]


@pytest.mark.parametrize(
    ("model", "most"),
    [("gemini-3-pro-image", 14), ("gemini-3.1-flash-image", 14), ("gemini-2.5-flash-image", 3),
     ("vertex/gemini-2.5-flash-image", 3), ("gateway/gemini-3-pro-image", 14), ("gpt-image-2", 16),
     ("gpt-image-1.5", 16), ("gpt-image-2.6-flare", 16)],
)
def test_input_images_up_to_the_model_limit(model: str, most: int) -> None:
    applied = planned(model, input_images=images(most))
    assert applied.model == model
    error = refused(model, input_images=images(most + 1))
    assert error.param == "image"
    assert str(most) in error.message


def test_edit_inputs_on_a_model_without_edit_are_refused() -> None:
    spec = small_model(edit=False, max_input_images=0)
    with pytest.raises(InvalidRequestError) as info:
        plan(request(input_images=images(1)), spec)
    assert info.value.param == "image"
    assert "edit" in info.value.message
    mask = InputImage(object_key="inputs/mask.png", mime_type="image/png")
    with pytest.raises(InvalidRequestError) as info:
        plan(request(mask=mask), spec)
    assert info.value.param == "mask"


@pytest.mark.parametrize("model", sorted(GRID_MODELS))
def test_mask_on_gemini_is_refused(model: str) -> None:
    mask = InputImage(object_key="inputs/mask.png", mime_type="image/png")
    error = refused(model, input_images=images(1), mask=mask)
    assert error.param == "mask"


@pytest.mark.parametrize("model", GPT_MODELS)
def test_mask_on_gpt_image_is_accepted(model: str) -> None:
    mask = InputImage(object_key="inputs/mask.png", mime_type="image/png")
    assert planned(model, input_images=images(2), mask=mask).model == model


def small_model(**capabilities: object) -> ModelSpec:
    return ModelSpec(id="small", provider="demo", upstream_model="small", owned_by="tests", created=1,
                     capabilities=Capabilities(planner="free_size", **capabilities))  # type: ignore[arg-type]


def test_n_above_the_model_max_is_refused() -> None:
    spec = small_model(max_n=2)
    with pytest.raises(InvalidRequestError) as info:
        plan(request(n=3), spec)
    assert (info.value.param, info.value.code) == ("n", "integer_above_max_value")
    assert "2" in info.value.message
    assert plan(request(n=2), spec).model == "small"


@pytest.mark.parametrize(("model", "per_call"), [("gemini-3-pro-image", 1), ("gpt-image-2", 10),
                                                 ("gpt-image-1.5", 10), ("demo", 1)])
def test_images_per_upstream_call(model: str, per_call: int) -> None:
    assert planned(model, n=4).n_per_call == per_call


# -- the demo model (free_size without an upstream size) -------------------------------------


def demo(**fields: object) -> AppliedParams:
    return planned("demo", **fields)


def test_plan_defaults() -> None:
    assert demo().model_dump() == {
        "model": "demo-image",
        "provider": "demo",
        "upstream_model": "demo",
        "width": 1024,
        "height": 1024,
        "aspect_ratio": "1:1",
        "image_size": None,
        "upstream_size": None,
        "quality": "auto",
        "upstream_quality": None,
        "output_format": "png",
        "output_compression": None,
        "upstream_format": "png",
        "background": "opaque",
        "thinking_level": None,
        "n_per_call": 1,
        "input_fidelity": None,
        "multi_turn": False,
        "ignored": [],
        "adjusted": {},
    }


def test_plan_explicit_size() -> None:
    applied = demo(size="512x768")
    assert (applied.width, applied.height, applied.size) == (512, 768, "512x768")
    assert applied.aspect_ratio == "2:3"


def test_aspect_ratio_wins_over_size() -> None:
    applied = demo(size="512x512", aspect_ratio="16:9")
    assert (applied.width, applied.height) == (1024, 576)
    assert applied.aspect_ratio == "16:9"


@pytest.mark.parametrize(
    ("ratio", "quality", "expected"),
    [("16:9", "high", (2048, 1152)), ("9:16", "hd", (1152, 2048)), ("1:1", "high", (2048, 2048)),
     ("3:2", "low", (512, 341)), ("2:3", "medium", (683, 1024))],
)
def test_aspect_ratio_long_side_follows_quality(ratio: str, quality: str, expected: tuple[int, int]) -> None:
    applied = demo(aspect_ratio=ratio, quality=quality)
    assert (applied.width, applied.height) == expected
    assert applied.quality == quality


@pytest.mark.parametrize("ratio", ["21:9", "7:4"])
def test_applied_aspect_ratio_keeps_the_requested_label(ratio: str) -> None:
    assert demo(aspect_ratio=ratio).aspect_ratio == ratio


@pytest.mark.parametrize("ratio", ["5:3", "1:0", "wide", "16x9"])
def test_unsupported_aspect_ratio(ratio: str) -> None:
    assert refused("demo", aspect_ratio=ratio).param == "aspect_ratio"


@pytest.mark.parametrize("size", ["1024", "1024*1024", "big", "-5x10", "1024x"])
def test_malformed_size(size: str) -> None:
    error = refused("demo", size=size)
    assert error.param == "size"
    assert "WIDTHxHEIGHT" in error.message


@pytest.mark.parametrize("size", ["8192x8192", "4097x64", "32x512", "4096x4097"])
def test_size_out_of_bounds(size: str) -> None:
    assert refused("demo", size=size).param == "size"


def test_size_within_bounds_is_accepted_up_to_the_max() -> None:
    applied = demo(size="4096x4096")
    assert (applied.width, applied.height) == (4096, 4096)


def test_quality_is_case_insensitive() -> None:
    assert demo(quality="HIGH").quality == "high"


def test_compression_with_png_is_ignored() -> None:
    applied = demo(output_compression=50)
    assert applied.output_compression is None
    assert applied.ignored == ["output_compression"]


def test_compression_with_jpeg_is_kept() -> None:
    applied = demo(output_compression=50, output_format="jpeg")
    assert applied.output_compression == 50
    assert applied.ignored == []


def test_style_and_moderation_are_recorded_as_ignored() -> None:
    applied = demo(style="vivid", moderation="low", output_compression=10)
    assert applied.ignored == ["output_compression", "style", "moderation"]


def test_output_format_the_model_cannot_make() -> None:
    spec = small_model(output_formats=["png"])
    with pytest.raises(InvalidRequestError) as info:
        plan(request(output_format="webp"), spec)
    assert info.value.param == "output_format"


# -- the helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("16:9", (16, 9)), (" 1:1 ", (1, 1)), ("0:1", None), ("1:0", None), ("a:b", None), ("16x9", None),
     ("1000:1", None)],
)
def test_parse_ratio(text: str, parsed: tuple[int, int] | None) -> None:
    assert parse_ratio(text) == parsed


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1024x768", (1024, 768)), ("1024X768", (1024, 768)), (" 64x64 ", (64, 64)), ("0x10", None),
     ("10x", None), ("auto", None), ("123456x1", None)],
)
def test_parse_size(text: str, parsed: tuple[int, int] | None) -> None:
    assert parse_size(text) == parsed


def test_ratio_label_and_nearest_ratio() -> None:
    assert ratio_label(1920, 1080) == "16:9"
    assert ratio_label(1536, 1024) == "3:2"
    assert nearest_ratio(7, 4, TEN_RATIOS) == "16:9"
    assert nearest_ratio(1, 1, TEN_RATIOS) == "1:1"
    assert nearest_ratio(1, 100, TEN_RATIOS + EXTREME_RATIOS) == "1:8"
