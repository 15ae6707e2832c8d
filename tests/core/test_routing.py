"""The model catalogue (lookup by name) and plan() (what a request will actually generate)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import InvalidRequestError, ModelNotFoundError
from core.generation import GenerationRequest
from core.routing import Catalogue, ModelSpec, plan


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def demo(catalogue: Catalogue) -> ModelSpec:
    return catalogue.resolve("demo")


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", **fields)  # type: ignore[arg-type]


# -- the catalogue ---------------------------------------------------------------------------


def test_shipped_catalogue_has_the_demo_model(catalogue: Catalogue) -> None:
    spec = catalogue.resolve("demo")
    assert spec.id == "demo"
    assert spec.provider == "demo"
    assert spec.owned_by == "imagegate"
    assert "demo-image" in spec.aliases
    assert catalogue.default.id == "demo"


@pytest.mark.parametrize(
    "name",
    ["demo", "demo-image", "imagegate/demo", "google/demo", "openai/demo", "models/demo",
     "DEMO", "Demo-Image", "OpenAI/Demo", "  demo  "],
)
def test_resolve_by_id_alias_and_vendor_prefix(catalogue: Catalogue, name: str) -> None:
    assert catalogue.resolve(name).id == "demo"


@pytest.mark.parametrize("name", [None, "", "   ", "auto", "AUTO", " Auto "])
def test_no_model_or_auto_gives_the_default(catalogue: Catalogue, name: str | None) -> None:
    assert catalogue.resolve(name) is catalogue.default


@pytest.mark.parametrize("name", ["dall-e-3", "google/nope", "demo2", "anthropic/demo"])
def test_unknown_model_is_a_404_naming_the_model_param(catalogue: Catalogue, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        catalogue.resolve(name)
    assert info.value.param == "model"
    assert info.value.code == "model_not_found"
    assert info.value.status == 404
    assert name in info.value.message


CUSTOM_TOML = """
[[models]]
id = "alpha"
aliases = ["a-model"]
provider = "demo"
upstream_model = "alpha-upstream"
owned_by = "tests"
created = 1700000000

[models.capabilities]
max_n = 2
size_min = 256
size_max = 1024
max_pixels = 524288
size_multiple = 64
aspect_ratios = ["1:1", "3:2"]
long_side = { auto = 768, high = 1024 }
output_formats = ["png"]

[[models]]
id = "beta"
provider = "demo"
upstream_model = "beta-upstream"
owned_by = "tests"
created = 1700000001
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, "utf-8")
    return path


def test_catalogue_from_models_file_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAGEGATE_MODELS_FILE and IMAGEGATE_DEFAULT_MODEL replace the shipped catalogue."""
    for name in list(os.environ):
        if name.upper().startswith("IMAGEGATE_") or name.upper() == "IMAGE_PROXY_MODEL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGEGATE_MODELS_FILE", str(write(tmp_path, CUSTOM_TOML)))
    monkeypatch.setenv("IMAGEGATE_DEFAULT_MODEL", "beta")
    settings = Settings(_env_file=None)

    cat = Catalogue.load(settings.models_file, default_model=settings.default_model)

    assert [m.id for m in cat.models] == ["alpha", "beta"]
    assert cat.default.id == "beta"
    assert cat.resolve(None).id == "beta"
    assert cat.resolve("A-Model").upstream_model == "alpha-upstream"
    with pytest.raises(ModelNotFoundError):
        cat.resolve("demo")  # the shipped model is not in a replaced catalogue


def test_first_model_is_the_default_when_none_configured(tmp_path: Path) -> None:
    assert Catalogue.load(write(tmp_path, CUSTOM_TOML)).default.id == "alpha"


def test_custom_capabilities_are_enforced(tmp_path: Path) -> None:
    alpha = Catalogue.load(write(tmp_path, CUSTOM_TOML)).resolve("alpha")
    applied = plan(request(aspect_ratio="3:2"), alpha)
    assert (applied.width, applied.height) == (768, 512)  # 768 x 2/3, multiple of 64
    with pytest.raises(InvalidRequestError) as info:
        plan(request(size="300x300"), alpha)  # not a multiple of 64
    assert info.value.param == "size"
    with pytest.raises(InvalidRequestError) as info:
        plan(request(n=3), alpha)
    assert info.value.param == "n"


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    text = CUSTOM_TOML.replace('id = "beta"', 'id = "beta"\naliases = ["A-MODEL"]')
    with pytest.raises(ValueError, match="appears twice"):
        Catalogue.load(write(tmp_path, text))


def test_unknown_default_model_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        Catalogue.load(write(tmp_path, CUSTOM_TOML), default_model="gamma")


def test_empty_catalogue_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        Catalogue.load(write(tmp_path, "# no models\n"))


# -- plan() ----------------------------------------------------------------------------------


def test_plan_defaults(demo: ModelSpec) -> None:
    applied = plan(request(), demo)
    assert applied.model_dump() == {
        "model": "demo",
        "provider": "demo",
        "upstream_model": "demo",
        "width": 1024,
        "height": 1024,
        "aspect_ratio": "1:1",
        "quality": "auto",
        "output_format": "png",
        "output_compression": None,
        "background": "opaque",
        "ignored": [],
    }


def test_plan_explicit_size(demo: ModelSpec) -> None:
    applied = plan(request(size="512x768"), demo)
    assert (applied.width, applied.height, applied.size) == (512, 768, "512x768")
    assert applied.aspect_ratio == "2:3"


def test_aspect_ratio_wins_over_size(demo: ModelSpec) -> None:
    applied = plan(request(size="512x512", aspect_ratio="16:9"), demo)
    assert (applied.width, applied.height) == (1024, 576)
    assert applied.aspect_ratio == "16:9"


@pytest.mark.parametrize(
    ("ratio", "quality", "expected"),
    [
        ("16:9", "high", (2048, 1152)),
        ("9:16", "hd", (1152, 2048)),
        ("1:1", "high", (2048, 2048)),
        ("3:2", "low", (512, 341)),
        ("2:3", "medium", (683, 1024)),
    ],
)
def test_aspect_ratio_long_side_follows_quality(
    demo: ModelSpec, ratio: str, quality: str, expected: tuple[int, int]
) -> None:
    applied = plan(request(aspect_ratio=ratio, quality=quality), demo)
    assert (applied.width, applied.height) == expected
    assert applied.quality == quality


@pytest.mark.parametrize("ratio", ["21:9", "7:4"])
def test_applied_aspect_ratio_keeps_the_requested_label(demo: ModelSpec, ratio: str) -> None:
    applied = plan(request(aspect_ratio=ratio), demo)
    assert applied.aspect_ratio == ratio


@pytest.mark.parametrize("ratio", ["5:3", "1:0", "wide", "16x9"])
def test_unsupported_aspect_ratio(demo: ModelSpec, ratio: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        plan(request(aspect_ratio=ratio), demo)
    assert info.value.param == "aspect_ratio"


@pytest.mark.parametrize("size", ["1024", "1024*1024", "big", "-5x10", "1024x"])
def test_malformed_size(demo: ModelSpec, size: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        plan(request(size=size), demo)
    assert info.value.param == "size"
    assert "WIDTHxHEIGHT" in info.value.message


@pytest.mark.parametrize("size", ["8192x8192", "4097x64", "32x512"])
def test_size_out_of_bounds(demo: ModelSpec, size: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        plan(request(size=size), demo)
    assert info.value.param == "size"


def test_size_within_bounds_is_accepted_up_to_the_max(demo: ModelSpec) -> None:
    applied = plan(request(size="4096x4096"), demo)
    assert (applied.width, applied.height) == (4096, 4096)


def test_n_above_model_max(demo: ModelSpec, tmp_path: Path) -> None:
    alpha = Catalogue.load(write(tmp_path, CUSTOM_TOML)).resolve("alpha")
    with pytest.raises(InvalidRequestError) as info:
        plan(request(n=3), alpha)
    assert info.value.param == "n"
    assert info.value.code == "integer_above_max_value"
    assert plan(request(n=2), alpha).model == "alpha"
    assert plan(request(n=10), demo).model == "demo"


def test_unknown_quality(demo: ModelSpec) -> None:
    with pytest.raises(InvalidRequestError) as info:
        plan(request(quality="ultra"), demo)
    assert info.value.param == "quality"


def test_quality_is_case_insensitive(demo: ModelSpec) -> None:
    assert plan(request(quality="HIGH"), demo).quality == "high"


def test_transparent_jpeg_is_refused(demo: ModelSpec) -> None:
    with pytest.raises(InvalidRequestError) as info:
        plan(request(background="transparent", output_format="jpeg"), demo)
    assert info.value.param == "background"


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_png_and_webp_are_planned(demo: ModelSpec, fmt: str) -> None:
    applied = plan(request(background="transparent", output_format=fmt), demo)
    assert (applied.background, applied.output_format) == ("transparent", fmt)


def test_transparent_refused_for_a_model_without_it(tmp_path: Path) -> None:
    alpha = Catalogue.load(write(tmp_path, CUSTOM_TOML)).resolve("alpha")
    with pytest.raises(InvalidRequestError) as info:
        plan(request(background="transparent"), alpha)
    assert info.value.param == "background"


def test_output_format_the_model_cannot_make(tmp_path: Path) -> None:
    alpha = Catalogue.load(write(tmp_path, CUSTOM_TOML)).resolve("alpha")
    with pytest.raises(InvalidRequestError) as info:
        plan(request(output_format="webp"), alpha)
    assert info.value.param == "output_format"


def test_compression_with_png_is_ignored(demo: ModelSpec) -> None:
    applied = plan(request(output_compression=50), demo)
    assert applied.output_compression is None
    assert applied.ignored == ["output_compression"]


def test_compression_with_jpeg_is_kept(demo: ModelSpec) -> None:
    applied = plan(request(output_compression=50, output_format="jpeg"), demo)
    assert applied.output_compression == 50
    assert applied.ignored == []


def test_style_and_moderation_are_recorded_as_ignored(demo: ModelSpec) -> None:
    applied = plan(request(style="vivid", moderation="low", output_compression=10), demo)
    assert applied.ignored == ["output_compression", "style", "moderation"]
