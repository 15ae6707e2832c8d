"""The model catalogue: lookup by id, alias and vendor prefix, retired aliases, which models are
offered for the configured providers, fallback routes, the default model, and the operator's
models file. What a model generates (plan()) is in test_planning.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import InvalidRequestError, ModelNotFoundError
from core.generation import GenerationRequest
from core.planning import plan
from core.providers import PROVIDER_NAMES
from core.routing import Catalogue, load_for_settings

ALL_PROVIDERS = PROVIDER_NAMES


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    """The shipped catalogue on a gateway with no upstream key: only the demo model is offered."""
    return Catalogue.load(configured={"demo"})


@pytest.fixture(scope="module")
def full() -> Catalogue:
    """The shipped catalogue with every provider configured."""
    return Catalogue.load(configured=ALL_PROVIDERS)


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", **fields)  # type: ignore[arg-type]


# -- the shipped catalogue -------------------------------------------------------------------


def test_shipped_catalogue_has_the_demo_model(catalogue: Catalogue) -> None:
    resolved = catalogue.resolve("demo")
    spec = resolved.spec
    assert spec.id == "demo-image"
    assert spec.provider == "demo"
    assert spec.owned_by == "imagegate"
    assert "demo" in spec.aliases
    assert resolved.alias is None
    assert resolved.requested == "demo"
    assert catalogue.default.id == "demo-image"


def test_only_the_demo_model_is_offered_without_upstream_keys(catalogue: Catalogue) -> None:
    assert [m.id for m in catalogue.models] == ["demo-image"]
    assert len(catalogue.all_models) > 10  # the rest is known, just not offered


def test_every_model_is_offered_when_every_provider_is_configured(full: Catalogue) -> None:
    assert [m.id for m in full.models] == [m.id for m in full.all_models]
    assert full.default.id == "gemini-3-pro-image"  # the first row of the shipped file


@pytest.mark.parametrize(
    "name",
    ["demo", "demo-image", "imagegate/demo", "google/demo", "openai/demo", "models/demo",
     "DEMO", "Demo-Image", "OpenAI/Demo", "  demo  "],
)
def test_resolve_by_id_alias_and_vendor_prefix(catalogue: Catalogue, name: str) -> None:
    assert catalogue.resolve(name).spec.id == "demo-image"


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("google/gemini-3-pro-image", "gemini-3-pro-image"),
        ("models/gemini-3.1-flash-image", "gemini-3.1-flash-image"),
        ("google/nano-banana", "gemini-2.5-flash-image"),
        ("nano-banana-pro", "gemini-3-pro-image"),
        ("nano-banana-2", "gemini-3.1-flash-image"),
        ("openai/gpt-image-2", "gpt-image-2"),
        ("OpenAI/GPT-Image-1.5", "gpt-image-1.5"),
        ("openai/dall-e-3", "gpt-image-1.5"),
        ("vertex/gemini-3-pro-image", "vertex/gemini-3-pro-image"),
        ("gateway/gemini-3.1-flash-image", "gateway/gemini-3.1-flash-image"),
    ],
)
def test_resolve_real_models_with_vendor_prefixes(full: Catalogue, name: str, model: str) -> None:
    assert full.resolve(name).spec.id == model


@pytest.mark.parametrize("name", [None, "", "   ", "auto", "AUTO", " Auto "])
def test_no_model_or_auto_gives_the_default(catalogue: Catalogue, name: str | None) -> None:
    resolved = catalogue.resolve(name)
    assert resolved.spec is catalogue.default
    assert resolved.alias is None


@pytest.mark.parametrize("name", ["dall-e-4", "google/nope", "demo2", "anthropic/demo", "gpt-image-3"])
def test_unknown_model_is_a_404_naming_the_model_param(full: Catalogue, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        full.resolve(name)
    assert info.value.param == "model"
    assert info.value.code == "model_not_found"
    assert info.value.status == 404
    assert name in info.value.message


# -- retired aliases -------------------------------------------------------------------------


RETIRED = [
    # alias, model it now resolves to, retirement date
    ("gemini-3-pro-image-preview", "gemini-3-pro-image", "2026-06-25"),
    ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image", "2026-06-25"),
    ("imagen-4.0-ultra-generate-001", "gemini-3-pro-image", "2026-08-17"),
    ("imagen-4.0-fast-generate-001", "gemini-3.1-flash-image", "2026-08-17"),
    ("imagen-4.0-generate-001", "gemini-3.1-flash-image", "2026-08-17"),
    ("gpt-image-1", "gpt-image-1.5", "2026-10-23"),
    ("dall-e-3", "gpt-image-1.5", "2026-05-12"),
    ("dall-e-2", "gpt-image-1.5", "2026-05-12"),
]


@pytest.mark.parametrize(("alias", "model", "retired"), RETIRED)
def test_retired_alias_resolves_to_its_successor(full: Catalogue, alias: str, model: str, retired: str) -> None:
    resolved = full.resolve(alias)
    assert resolved.spec.id == model
    assert resolved.alias is not None
    assert resolved.alias.id == alias
    assert resolved.alias.retired == retired
    assert resolved.requested == alias


@pytest.mark.parametrize(("alias", "model", "retired"), RETIRED)
def test_retired_alias_with_vendor_prefix(full: Catalogue, alias: str, model: str, retired: str) -> None:
    prefix = "openai/" if alias.startswith(("gpt", "dall")) else "google/"
    assert full.resolve(prefix + alias.upper()).spec.id == model


def test_snapshot_alias_is_not_retired_and_names_an_upstream_model(full: Catalogue) -> None:
    resolved = full.resolve("gpt-image-2-2026-04-21")
    assert resolved.spec.id == "gpt-image-2"
    assert resolved.alias is not None
    assert resolved.alias.retired is None
    assert resolved.alias.upstream_model == "gpt-image-2-2026-04-21"


def test_retired_alias_of_a_model_that_is_not_configured_is_not_offered(catalogue: Catalogue) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        catalogue.resolve("dall-e-3")
    assert info.value.param == "model"
    assert "not available" in info.value.message


# -- configured providers and fallback routes ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["gpt-image-2", "gpt-image-1.5", "gemini-3-pro-image", "gemini-2.5-flash-image", "vertex/gemini-3-pro-image",
     "gateway/gemini-3.1-flash-image", "nano-banana"],
)
def test_model_whose_provider_is_not_configured_is_not_offered(catalogue: Catalogue, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        catalogue.resolve(name)
    assert info.value.param == "model"
    assert info.value.status == 404
    assert "no provider for it is configured" in info.value.message
    assert name not in [m.id for m in catalogue.models]


@pytest.mark.parametrize(
    ("configured", "model", "chain"),
    [
        (ALL_PROVIDERS, "gemini-3-pro-image",
         ["gemini-3-pro-image", "vertex/gemini-3-pro-image", "gateway/gemini-3-pro-image"]),
        ({"gemini"}, "gemini-3-pro-image", ["gemini-3-pro-image"]),
        ({"openai_chat"}, "gemini-3-pro-image", ["gateway/gemini-3-pro-image"]),
        ({"vertex_gemini", "openai_chat"}, "gemini-3.1-flash-image",
         ["vertex/gemini-3.1-flash-image", "gateway/gemini-3.1-flash-image"]),
        ({"gemini"}, "gemini-2.5-flash-image", ["gemini-2.5-flash-image", "gemini-3.1-flash-image"]),
        ({"gemini", "vertex_gemini"}, "gemini-2.5-flash-image",
         ["gemini-2.5-flash-image", "vertex/gemini-2.5-flash-image", "gemini-3.1-flash-image"]),
        ({"vertex_gemini"}, "vertex/gemini-2.5-flash-image",
         ["vertex/gemini-2.5-flash-image", "vertex/gemini-3.1-flash-image"]),
        ({"openai_images"}, "gpt-image-1.5", ["gpt-image-1.5", "gpt-image-2"]),
        ({"openai_images"}, "gpt-image-2", ["gpt-image-2"]),
        ({"demo"}, "demo-image", ["demo-image"]),
    ],
)
def test_routes_give_the_configured_chain(configured: set[str], model: str, chain: list[str]) -> None:
    cat = Catalogue.load(configured=configured | {"demo"})
    resolved = cat.resolve(model)
    assert resolved.spec.id == model  # the requested model, even when another route serves it
    assert [m.id for m in cat.routes(resolved.spec)] == chain


def test_model_not_configured_itself_is_offered_through_a_configured_fallback() -> None:
    cat = Catalogue.load(configured={"demo", "openai_chat"})
    offered = [m.id for m in cat.models]
    assert offered == ["gemini-3-pro-image", "gemini-3.1-flash-image", "gateway/gemini-3-pro-image",
                       "gateway/gemini-3.1-flash-image", "demo-image"]
    # gemini-2.5 falls back to vertex and gemini-3.1 (both not configured): not offered
    with pytest.raises(ModelNotFoundError):
        cat.resolve("gemini-2.5-flash-image")


@pytest.mark.parametrize(
    ("configured", "default"),
    [
        ({"demo"}, "demo-image"),
        (ALL_PROVIDERS, "gemini-3-pro-image"),
        ({"demo", "openai_images"}, "gpt-image-2"),
        ({"demo", "openai_chat"}, "gemini-3-pro-image"),
        ({"demo", "vertex_gemini"}, "gemini-3-pro-image"),
    ],
)
def test_default_model_is_the_first_offered(configured: set[str], default: str) -> None:
    cat = Catalogue.load(configured=configured)
    assert cat.default.id == default
    assert cat.default is cat.models[0]
    assert cat.resolve(None).spec.id == default
    assert cat.resolve("auto").spec.id == default


def test_default_model_setting_picks_an_offered_model() -> None:
    cat = Catalogue.load(configured={"demo", "openai_images"}, default_model="openai/gpt-image-1.5")
    assert cat.default.id == "gpt-image-1.5"
    assert cat.resolve(None).spec.id == "gpt-image-1.5"


@pytest.mark.parametrize("name", ["gpt-image-2", "no-such-model"])
def test_default_model_setting_that_is_not_offered_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="not offered"):
        Catalogue.load(configured={"demo"}, default_model=name)


def clean_settings(monkeypatch: pytest.MonkeyPatch, **values: object) -> Settings:
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("IMAGEGATE_") or upper in ("IMAGE_PROXY_MODEL", "GEMINI_API_KEY",
                                                        "GOOGLE_AI_API_KEY_IMAGE", "GOOGLE_APPLICATION_CREDENTIALS"):
            monkeypatch.delenv(name)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_load_for_settings_offers_what_the_keys_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    cat = load_for_settings(clean_settings(monkeypatch, openai_api_key="sk-test"))
    assert cat.default.id == "gpt-image-2"
    assert {m.provider for m in cat.models} == {"openai_images", "demo"}


# -- the operator's models file --------------------------------------------------------------


CUSTOM_TOML = """
replace = true

[[models]]
id = "alpha"
aliases = ["a-model"]
provider = "demo"
upstream_model = "alpha-upstream"
owned_by = "tests"
created = 1700000000

[models.capabilities]
planner = "free_size"
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

[models.capabilities]
planner = "free_size"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, "utf-8")
    return path


def test_catalogue_from_models_file_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IMAGEGATE_MODELS_FILE (with replace = true) and IMAGEGATE_DEFAULT_MODEL replace the shipped catalogue."""
    for name in list(os.environ):
        if name.upper().startswith("IMAGEGATE_") or name.upper() == "IMAGE_PROXY_MODEL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGEGATE_MODELS_FILE", str(write(tmp_path, CUSTOM_TOML)))
    monkeypatch.setenv("IMAGEGATE_DEFAULT_MODEL", "beta")
    settings = Settings(_env_file=None)

    cat = Catalogue.load(settings.models_file, default_model=settings.default_model)

    assert [m.id for m in cat.models] == ["alpha", "beta"]
    assert cat.default.id == "beta"
    assert cat.resolve(None).spec.id == "beta"
    assert cat.resolve("A-Model").spec.upstream_model == "alpha-upstream"
    with pytest.raises(ModelNotFoundError):
        cat.resolve("demo")  # the shipped model is not in a replaced catalogue
    assert cat.grids == {}  # the shipped grids went with the shipped rows


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


def test_operator_alias_equal_to_a_shipped_id_is_rejected(tmp_path: Path) -> None:
    text = CUSTOM_TOML.replace("replace = true", "").replace('aliases = ["a-model"]', 'aliases = ["gpt-image-2"]')
    with pytest.raises(ValueError, match="appears twice"):
        Catalogue.load(write(tmp_path, text))


def test_unknown_default_model_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not offered"):
        Catalogue.load(write(tmp_path, CUSTOM_TOML), default_model="gamma")


def test_empty_catalogue_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        Catalogue.load(write(tmp_path, "replace = true\n# no models\n"))


def test_fallback_to_an_unknown_model_is_rejected(tmp_path: Path) -> None:
    text = CUSTOM_TOML.replace('upstream_model = "beta-upstream"', 'upstream_model = "b"\nfallbacks = ["gamma"]')
    with pytest.raises(ValueError, match="unknown model 'gamma'"):
        Catalogue.load(write(tmp_path, text))


def test_unknown_grid_is_rejected(tmp_path: Path) -> None:
    # replace = true drops the shipped grids too: a row naming one must bring it
    text = CUSTOM_TOML.rstrip().removesuffix('planner = "free_size"') + (
        'planner = "ratio_grid"\ngrid = "gemini-3"\naspect_ratios = ["1:1"]\n')
    with pytest.raises(ValueError, match="unknown grid 'gemini-3'"):
        Catalogue.load(write(tmp_path, text))


def test_no_configured_provider_at_all_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no model"):
        Catalogue.load(write(tmp_path, CUSTOM_TOML), configured={"openai_images"})


OVERRIDE_GPT_IMAGE_2 = """
[[models]]
id = "gpt-image-2"
provider = "openai_images"
upstream_model = "my-gpt-image-2-deployment"
owned_by = "operator"
created = 1800000000

[models.capabilities]
planner = "size_list"
n_per_call = 4
sizes = ["1024x1024"]
qualities = { auto = "auto", high = "high" }
upstream_formats = ["png"]
"""


def test_operator_row_with_a_shipped_id_replaces_the_shipped_row(tmp_path: Path) -> None:
    cat = Catalogue.load(write(tmp_path, OVERRIDE_GPT_IMAGE_2), configured=ALL_PROVIDERS)
    spec = cat.resolve("gpt-image-2").spec
    assert (spec.upstream_model, spec.owned_by) == ("my-gpt-image-2-deployment", "operator")
    assert [m.id for m in cat.all_models].count("gpt-image-2") == 1
    assert spec.capabilities.planner == "size_list"
    # the shipped row's alias went with it
    with pytest.raises(ModelNotFoundError):
        cat.resolve("gpt-image-2-2026-04-21")
    # and the rest of the shipped catalogue is still there
    assert cat.resolve("gemini-3-pro-image").spec.provider == "gemini"
    assert cat.resolve("gpt-image-1.5").spec.fallbacks == ["gpt-image-2"]
    applied = plan(request(size="1536x1024"), cat.resolve("gpt-image-2"), grids=cat.grids)
    assert applied.upstream_model == "my-gpt-image-2-deployment"
    assert applied.size == "1024x1024"


def test_replacing_a_shipped_row_keeps_its_place_and_the_default(tmp_path: Path) -> None:
    text = OVERRIDE_GPT_IMAGE_2.replace('"gpt-image-2"', '"gemini-3-pro-image"').replace(
        '"openai_images"', '"gemini"')
    cat = Catalogue.load(write(tmp_path, text), configured=ALL_PROVIDERS)
    assert cat.default.id == "gemini-3-pro-image"
    assert cat.models[0].id == "gemini-3-pro-image"


@pytest.mark.parametrize("shipped_alias", ["nano-banana", "dall-e-3", "imagen-4.0-fast-generate-001"])
def test_operator_id_equal_to_a_shipped_alias_wins(tmp_path: Path, shipped_alias: str) -> None:
    text = CUSTOM_TOML.replace("replace = true", "").replace('id = "alpha"', f'id = "{shipped_alias}"')
    cat = Catalogue.load(write(tmp_path, text), configured=ALL_PROVIDERS)
    resolved = cat.resolve(shipped_alias)
    assert resolved.spec.id == shipped_alias
    assert resolved.spec.upstream_model == "alpha-upstream"
    assert resolved.alias is None
    for spec in cat.all_models:
        if spec.id != shipped_alias:
            assert shipped_alias not in spec.aliases
            assert shipped_alias not in [a.id for a in spec.alias]
    # the shipped model keeps its other names
    assert cat.resolve("gemini-2.5-flash-image").spec.id == "gemini-2.5-flash-image"
    assert cat.resolve("dall-e-2").spec.id == "gpt-image-1.5"
    assert cat.resolve("imagen-4.0-generate-001").spec.id == "gemini-3.1-flash-image"


def test_operator_rows_extend_the_shipped_catalogue(tmp_path: Path) -> None:
    text = CUSTOM_TOML.replace("replace = true", "")
    cat = Catalogue.load(write(tmp_path, text), configured={"demo"})
    assert [m.id for m in cat.models] == ["demo-image", "alpha", "beta"]
    assert cat.default.id == "demo-image"
    assert cat.resolve("a-model").spec.id == "alpha"
    assert "gemini-3" in cat.grids


IMAGEN_ROW = """
[[models]]
id = "imagen-4.0-generate-002"
provider = "imagen"
upstream_model = "imagen-4.0-generate-002"
owned_by = "operator"
created = 1800000000

[models.capabilities]
planner = "ratio_grid"
grid = "imagen-custom"
n_per_call = 4
aspect_ratios = ["1:1", "3:4", "4:3", "9:16", "16:9"]
image_sizes = ["1K", "2K"]
quality_tiers = { high = "2K" }

[grids."imagen-custom"."1K"]
"1:1" = "1024x1024"
"16:9" = "1408x768"

[grids."imagen-custom"."2K"]
"1:1" = "2048x2048"
"16:9" = "2816x1536"
"""


def test_operator_grids_are_merged_with_the_shipped_ones(tmp_path: Path) -> None:
    cat = Catalogue.load(write(tmp_path, IMAGEN_ROW), configured={"demo", "imagen"})
    assert {"gemini-3", "gemini-2.5", "imagen", "imagen-custom"} <= set(cat.grids)
    resolved = cat.resolve("imagen-4.0-generate-002")
    applied = plan(request(aspect_ratio="16:9", quality="high", n=4), resolved, grids=cat.grids)
    assert (applied.width, applied.height, applied.image_size) == (2816, 1536, "2K")
    assert (applied.provider, applied.n_per_call) == ("imagen", 4)
    # a ratio the model accepts but the operator's grid has no size for: the upstream decides
    applied = plan(request(aspect_ratio="3:4"), resolved, grids=cat.grids)
    assert (applied.aspect_ratio, applied.width, applied.height) == ("3:4", None, None)
