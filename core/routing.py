"""The model catalogue: which public model names exist, and which upstream routes serve them.

A request names a model (or none, or ``auto``). :meth:`Catalogue.resolve` finds its
:class:`ModelSpec` by id or alias (vendor prefixes stripped), and :meth:`Catalogue.routes` gives
the chain of configured models that may serve it: the model itself, then its fallbacks. The
catalogue is data (``core/catalogue/models.toml``, extended by ``IMAGEGATE_MODELS_FILE``); what a
model can honour is decided by :mod:`core.planning`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.config import Settings
from core.errors import ModelNotFoundError
from core.providers import configured_providers

VENDOR_PREFIXES = ("google/", "openai/", "imagegate/", "models/")
AUTO_MODEL = "auto"


class Capabilities(BaseModel):
    """What a model honours. ``planner`` picks how sizes are decided (see core.planning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    planner: Literal["ratio_grid", "size_list", "free_size"]
    max_n: int = 10
    n_per_call: int = 1
    """Images one upstream call can return (Gemini 1, Imagen 4, GPT image 10)."""
    aspect_ratios: list[str] = Field(default_factory=list)
    # ratio_grid: pixel sizes come from a grid of aspect ratio x resolution tier
    grid: str | None = None
    image_sizes: list[str] = Field(default_factory=list)
    default_image_size: str = "1K"
    quality_tiers: dict[str, str] = Field(default_factory=dict)
    thinking_levels: list[str] = Field(default_factory=list)
    # size_list: a fixed set of sizes
    sizes: list[str] = Field(default_factory=list)
    # free_size: any WxH within bounds
    size_min: int = 64
    size_max: int = 4096
    max_short_side: int | None = None
    max_pixels: int | None = None
    size_multiple: int = 1
    max_ratio: float = 8.0
    long_side: dict[str, int] = Field(default_factory=lambda: {"auto": 1024})
    # quality names accepted -> the value sent upstream (empty: any known quality, none sent)
    qualities: dict[str, str] = Field(default_factory=dict)
    upstream_formats: list[str] = Field(default_factory=lambda: ["png"])
    output_formats: list[str] = Field(default_factory=lambda: ["png", "jpeg", "webp"])
    transparent_background: bool = False
    edit: bool = False
    mask: bool = False
    max_input_images: int = 0
    input_fidelity: bool = False
    multi_turn: bool = False
    """The upstream takes a conversation as turns (Gemini): earlier turns and their images are
    sent as they are. Otherwise a conversation becomes one prompt and the image it edits."""


class AliasSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    retired: str | None = None
    """The date the upstream shut this id down (YYYY-MM-DD); requests for it go to the model."""
    upstream_model: str | None = None
    thinking_level: str | None = None


class ModelSpec(BaseModel):
    """One catalogue row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    aliases: list[str] = Field(default_factory=list)
    alias: list[AliasSpec] = Field(default_factory=list)
    provider: str
    upstream_model: str
    owned_by: str
    created: int
    description: str = ""
    fallbacks: list[str] = Field(default_factory=list)
    capabilities: Capabilities


def fallback_alias(alias: AliasSpec | None) -> AliasSpec | None:
    """What an alias still means on a fallback model: its options, not its upstream id."""
    if alias is None or alias.thinking_level is None:
        return None
    return AliasSpec(id=alias.id, thinking_level=alias.thinking_level)


class Resolved(BaseModel):
    """A model name resolved: the catalogue row, and what the alias used changes."""

    model_config = ConfigDict(frozen=True)

    spec: ModelSpec
    requested: str | None
    alias: AliasSpec | None = None


def _load_rows(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def load_catalogue_data(path: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The shipped rows, extended or replaced by the operator file's."""
    shipped = _load_rows(resources.files("core.catalogue").joinpath("models.toml").read_text("utf-8"))
    rows: list[dict[str, Any]] = list(shipped.get("models", []))
    grids: dict[str, Any] = dict(shipped.get("grids", {}))
    if path is not None:
        extra = _load_rows(Path(path).read_text("utf-8"))
        if extra.get("replace"):
            rows, grids = [], {}
        grids.update(extra.get("grids", {}))
        override_ids = {row["id"].lower() for row in extra.get("models", [])}
        overrides = {row["id"].lower(): row for row in extra.get("models", [])}
        merged = []
        for row in rows:
            if row["id"].lower() in overrides:
                merged.append(overrides.pop(row["id"].lower()))  # replaced in place: order is kept
                continue
            # an operator's model id wins over a shipped alias of the same name
            row = dict(row)
            row["aliases"] = [a for a in row.get("aliases", []) if a.lower() not in override_ids]
            row["alias"] = [a for a in row.get("alias", []) if a["id"].lower() not in override_ids]
            merged.append(row)
        rows = merged + list(overrides.values())
    return rows, grids


class Catalogue:
    """Every model imagegate knows, indexed by id and alias, and which of them are offered."""

    def __init__(
        self,
        models: list[ModelSpec],
        *,
        grids: dict[str, dict[str, dict[str, str]]] | None = None,
        configured: Iterable[str] | None = None,
        default_model: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("the model catalogue is empty")
        self.all_models = models
        self.grids = grids or {}
        self.configured = set(configured) if configured is not None else {m.provider for m in models}
        self._by_id: dict[str, ModelSpec] = {}
        self._names: dict[str, tuple[ModelSpec, AliasSpec | None]] = {}
        for spec in models:
            self._add_name(spec.id, spec, None)
            self._by_id[spec.id.lower()] = spec
            for name in spec.aliases:
                self._add_name(name, spec, None)
            for alias in spec.alias:
                self._add_name(alias.id, spec, alias)
        for spec in models:
            for fallback in spec.fallbacks:
                if fallback.lower() not in self._by_id:
                    raise ValueError(f"model {spec.id!r} falls back to unknown model {fallback!r}")
            grid = spec.capabilities.grid
            if grid is not None and grid not in self.grids:
                raise ValueError(f"model {spec.id!r} names unknown grid {grid!r}")
        self.models = [m for m in models if self.routes(m)]
        """The models offered: those with at least one configured route."""
        if not self.models:
            raise ValueError("no model of the catalogue has a configured provider")
        if default_model:
            resolved = self._lookup(default_model)
            if resolved is None or not self.routes(resolved[0]):
                raise ValueError(f"IMAGEGATE_DEFAULT_MODEL names a model that is not offered: {default_model!r}")
            self.default = resolved[0]
        else:
            self.default = self.models[0]

    def _add_name(self, name: str, spec: ModelSpec, alias: AliasSpec | None) -> None:
        key = name.lower()
        if key in self._names:
            raise ValueError(f"model name {name!r} appears twice in the catalogue")
        self._names[key] = (spec, alias)

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        configured: Iterable[str] | None = None,
        default_model: str | None = None,
    ) -> Catalogue:
        """The shipped catalogue, extended by ``path``; only ``configured`` providers offered."""
        rows, grids = load_catalogue_data(path)
        return cls([ModelSpec.model_validate(row) for row in rows], grids=grids,
                   configured=configured, default_model=default_model)

    def _lookup(self, name: str) -> tuple[ModelSpec, AliasSpec | None] | None:
        key = name.strip().lower()
        found = self._names.get(key)
        if found is None:
            for prefix in VENDOR_PREFIXES:
                if key.startswith(prefix):
                    found = self._names.get(key[len(prefix):])
                    break
        return found

    def knows(self, name: str | None) -> bool:
        """Whether ``name`` is a model id or alias of the catalogue (or asks for the default)."""
        return name is None or name.strip().lower() in ("", AUTO_MODEL) or self._lookup(name) is not None

    def get(self, model_id: str) -> ModelSpec:
        return self._by_id[model_id.lower()]

    def routes(self, spec: ModelSpec) -> list[ModelSpec]:
        """The configured models that may serve ``spec``, in order: itself, then its fallbacks."""
        chain = [spec, *(self._by_id[f.lower()] for f in spec.fallbacks)]
        return [m for m in chain if m.provider in self.configured]

    def resolve(self, name: str | None) -> Resolved:
        """The model a request's ``model`` field names; the default for none or ``auto``."""
        if name is None or name.strip() == "" or name.strip().lower() == AUTO_MODEL:
            return Resolved(spec=self.default, requested=name)
        found = self._lookup(name)
        if found is None:
            raise ModelNotFoundError(
                f"The model '{name}' does not exist or you do not have access to it.", param="model"
            )
        spec, alias = found
        if not self.routes(spec):
            raise ModelNotFoundError(
                f"The model '{name}' is not available on this gateway: no provider for it is "
                "configured.", param="model",
            )
        return Resolved(spec=spec, requested=name, alias=alias)


def load_for_settings(settings: Settings) -> Catalogue:
    """The catalogue as ``settings`` configure it: the operator's models file, the models of
    the configured providers (:mod:`core.providers`) offered, the default model."""
    return Catalogue.load(settings.models_file, configured=configured_providers(settings),
                          default_model=settings.default_model)
