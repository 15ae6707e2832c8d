"""The model catalogue and parameter planning.

A request names a model (or none, or ``auto``); :meth:`Catalogue.resolve` finds its
:class:`ModelSpec` from the catalogue file, and :func:`plan` decides — from data, not ``elif``s —
what will actually be generated (:class:`~core.generation.AppliedParams`). Anything that would
change the result and that the model cannot honour is an :class:`InvalidRequestError` naming the
field; fields that change nothing for the model are listed in ``AppliedParams.ignored``.
"""

from __future__ import annotations

import math
import re
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidRequestError, ModelNotFoundError
from core.generation import AppliedParams, GenerationRequest

VENDOR_PREFIXES = ("google/", "openai/", "imagegate/", "models/")
AUTO_MODEL = "auto"
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_RATIO_RE = re.compile(r"^(\d{1,3}):(\d{1,3})$")
_QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_n: int = 10
    size_min: int = 64
    size_max: int = 4096
    max_pixels: int = 4096 * 4096
    size_multiple: int = 1
    aspect_ratios: list[str] = Field(default_factory=lambda: ["1:1"])
    long_side: dict[str, int] = Field(default_factory=lambda: {"auto": 1024})
    output_formats: list[str] = Field(default_factory=lambda: ["png"])
    transparent_background: bool = False


class ModelSpec(BaseModel):
    """One catalogue row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    aliases: list[str] = Field(default_factory=list)
    provider: str
    upstream_model: str
    owned_by: str
    created: int
    description: str = ""
    capabilities: Capabilities = Field(default_factory=Capabilities)


class Catalogue:
    """Every model imagegate can route to, indexed by id and alias."""

    def __init__(self, models: list[ModelSpec], *, default_model: str | None = None) -> None:
        if not models:
            raise ValueError("the model catalogue is empty")
        self.models = models
        self._by_name: dict[str, ModelSpec] = {}
        for spec in models:
            for name in (spec.id, *spec.aliases):
                key = name.lower()
                if key in self._by_name:
                    raise ValueError(f"model name {name!r} appears twice in the catalogue")
                self._by_name[key] = spec
        default = self._lookup(default_model) if default_model else models[0]
        if default is None:
            raise ValueError(f"IMAGEGATE_DEFAULT_MODEL names an unknown model: {default_model!r}")
        self.default: ModelSpec = default

    @classmethod
    def load(cls, path: Path | None = None, *, default_model: str | None = None) -> Catalogue:
        """Read the catalogue file (the shipped one unless ``path`` is given)."""
        if path is None:
            text = resources.files("core.catalogue").joinpath("models.toml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        rows = tomllib.loads(text).get("models", [])
        return cls([ModelSpec.model_validate(row) for row in rows], default_model=default_model)

    def _lookup(self, name: str) -> ModelSpec | None:
        key = name.strip().lower()
        spec = self._by_name.get(key)
        if spec is None:
            for prefix in VENDOR_PREFIXES:
                if key.startswith(prefix):
                    spec = self._by_name.get(key[len(prefix) :])
                    break
        return spec

    def resolve(self, name: str | None) -> ModelSpec:
        """The model a request's ``model`` field names; the default for none or ``auto``."""
        if name is None or name.strip() == "" or name.strip().lower() == AUTO_MODEL:
            return self.default
        spec = self._lookup(name)
        if spec is None:
            raise ModelNotFoundError(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
            )
        return spec


def _parse_ratio(value: str) -> tuple[int, int] | None:
    match = _RATIO_RE.match(value.strip())
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    return (w, h) if w > 0 and h > 0 else None


def _ratio_label(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def plan(request: GenerationRequest, spec: ModelSpec) -> AppliedParams:
    """Decide what ``spec`` will generate for ``request``, or raise naming the offending field."""
    caps = spec.capabilities
    if request.n > caps.max_n:
        raise InvalidRequestError(
            f"Invalid value for 'n': {spec.id} generates at most {caps.max_n} images per request.",
            param="n",
            code="integer_above_max_value",
        )

    quality = (request.quality or "auto").lower()
    if quality not in _QUALITIES:
        raise InvalidRequestError(
            f"Invalid value for 'quality': {request.quality!r}. Supported values are: "
            + ", ".join(f"'{q}'" for q in _QUALITIES) + ".",
            param="quality",
        )

    width, height = _plan_dimensions(request, spec, quality)

    output_format = request.output_format or "png"
    if output_format not in caps.output_formats:
        raise InvalidRequestError(
            f"Invalid value for 'output_format': {spec.id} produces "
            + ", ".join(caps.output_formats) + ".",
            param="output_format",
        )

    ignored: list[str] = []
    compression = request.output_compression
    if compression is not None and output_format == "png":
        # PNG is lossless: a compression level changes nothing in the picture.
        ignored.append("output_compression")
        compression = None

    background = request.background or "auto"
    if background == "transparent":
        if not caps.transparent_background:
            raise InvalidRequestError(
                f"Invalid value for 'background': {spec.id} cannot make a transparent background.",
                param="background",
            )
        if output_format == "jpeg":
            raise InvalidRequestError(
                "Invalid value for 'background': a transparent background needs output_format "
                "'png' or 'webp'.",
                param="background",
            )
    for name in ("style", "moderation"):
        if getattr(request, name) is not None:
            ignored.append(name)

    return AppliedParams(
        model=spec.id,
        provider=spec.provider,
        upstream_model=spec.upstream_model,
        width=width,
        height=height,
        aspect_ratio=(request.aspect_ratio.strip() if request.aspect_ratio
                      else _ratio_label(width, height)),
        quality=quality,
        output_format=output_format,
        output_compression=compression,
        background="transparent" if background == "transparent" else "opaque",
        ignored=ignored,
    )


def _plan_dimensions(request: GenerationRequest, spec: ModelSpec, quality: str) -> tuple[int, int]:
    caps = spec.capabilities
    long_side = caps.long_side.get(quality, caps.long_side.get("auto", 1024))

    # The aspect ratio wins over size when both are sent (the images gateway convention).
    if request.aspect_ratio:
        ratio = _parse_ratio(request.aspect_ratio)
        if ratio is None or request.aspect_ratio.strip() not in caps.aspect_ratios:
            raise InvalidRequestError(
                f"Invalid value for 'aspect_ratio': {request.aspect_ratio!r}. {spec.id} supports "
                + ", ".join(caps.aspect_ratios) + ".",
                param="aspect_ratio",
            )
        rw, rh = ratio
        scale = long_side / max(rw, rh)
        return _round_to(rw * scale, caps.size_multiple), _round_to(rh * scale, caps.size_multiple)

    size = (request.size or "auto").strip().lower()
    if size == "auto":
        return long_side, long_side
    match = _SIZE_RE.match(size)
    if not match:
        raise InvalidRequestError(
            f"Invalid value for 'size': {request.size!r}. Use 'auto' or WIDTHxHEIGHT, "
            "e.g. '1024x1024'.",
            param="size",
        )
    width, height = int(match.group(1)), int(match.group(2))
    if not (caps.size_min <= width <= caps.size_max and caps.size_min <= height <= caps.size_max):
        raise InvalidRequestError(
            f"Invalid value for 'size': {request.size!r}. {spec.id} supports sides from "
            f"{caps.size_min} to {caps.size_max} pixels.",
            param="size",
        )
    if width * height > caps.max_pixels:
        raise InvalidRequestError(
            f"Invalid value for 'size': {request.size!r} exceeds {caps.max_pixels} pixels.",
            param="size",
        )
    if width % caps.size_multiple or height % caps.size_multiple:
        raise InvalidRequestError(
            f"Invalid value for 'size': both sides must be multiples of {caps.size_multiple}.",
            param="size",
        )
    return width, height
