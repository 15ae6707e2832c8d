"""Planning: which routes a request will take, and what each will actually generate.

:func:`plan_routes` is the one place a job's fallback chain is decided: at submit, once; the job
stores every route it plans (``jobs.routes``) and the worker executes them in order, without
looking at the catalogue again. :func:`plan` turns a canonical request and a resolved model into
:class:`AppliedParams` (one route). The rules are table-driven (each model's ``capabilities``),
and every decision is visible:

- a value the model supports is passed on;
- a value it cannot take but that has a near equivalent is mapped and recorded in
  ``adjusted`` (an aspect ratio of 7:4 becomes 16:9 on Gemini, 1792x1024 becomes 1536x1024 on
  GPT Image 1.5) — the result is what was asked, within the model's grid;
- a value that changes the result and that neither the model nor imagegate can honour is a 400
  naming the field (a transparent background on Gemini, n above the model's maximum, 9000 px);
- an output format or compression the upstream cannot produce is produced by transcoding;
- a field that changes nothing for the model is listed in ``ignored``;
- a conversation goes to a model that takes turns (``multi_turn``) as it is; any other model
  edits the current turn's images or, when there are none, the conversation's last image (see
  :meth:`GenerationRequest.images_for`); a model that edits nothing ignores the earlier turns'
  images;
- what the dialect itself left out or changed (``request.ignored``, ``request.adjusted``) is
  reported with the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from core.errors import InvalidRequestError
from core.generation import AppliedParams, GenerationRequest
from core.routing import Capabilities, Catalogue, ModelSpec, Resolved, fallback_alias

_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_RATIO_RE = re.compile(r"^(\d{1,3}):(\d{1,3})$")
BASIC_QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")
"""Qualities every model accepts; models list more (xhigh, max) in their ``qualities``."""
_IMAGE_SIZE_ALIASES = {"0.5k": "512", "512": "512", "1k": "1K", "2k": "2K", "4k": "4K"}


def parse_ratio(value: str) -> tuple[int, int] | None:
    match = _RATIO_RE.match(value.strip())
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    return (w, h) if w > 0 and h > 0 else None


def parse_size(value: str) -> tuple[int, int] | None:
    match = _SIZE_RE.match(value.strip().lower())
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    return (w, h) if w > 0 and h > 0 else None


def ratio_label(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def nearest_ratio(width: float, height: float, choices: list[str]) -> str:
    """The supported aspect ratio closest to width:height (compared on a log scale)."""
    target = math.log(width / height)

    def distance(label: str) -> float:
        w, h = parse_ratio(label) or (1, 1)
        return abs(math.log(w / h) - target)

    return min(choices, key=distance)


def _invalid(param: str, message: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(f"Invalid value for '{param}': {message}", param=param, code=code)


def plan(request: GenerationRequest, resolved: Resolved | ModelSpec, *,
         grids: dict[str, dict[str, dict[str, str]]] | None = None) -> AppliedParams:
    """Decide what the model will generate for ``request``, or raise naming the offending field."""
    if isinstance(resolved, ModelSpec):
        resolved = Resolved(spec=resolved, requested=resolved.id)
    spec, alias = resolved.spec, resolved.alias
    caps = spec.capabilities
    adjusted: dict[str, str] = dict(request.adjusted)
    ignored: list[str] = list(request.ignored)

    if request.n > caps.max_n:
        raise _invalid("n", f"{spec.id} generates at most {caps.max_n} images per request.",
                       "integer_above_max_value")
    _check_inputs(request, spec)
    if request.history_images() and not caps.edit and not request.current_images():
        ignored.append("history_images")  # earlier pictures of the conversation; this model edits nothing

    quality = (request.quality or "auto").strip().lower()
    allowed = list(caps.qualities) if caps.qualities else list(BASIC_QUALITIES)
    if quality not in allowed:
        raise _invalid("quality", f"{request.quality!r}. {spec.id} supports "
                       + ", ".join(f"'{q}'" for q in allowed) + ".")
    upstream_quality = caps.qualities.get(quality) if caps.qualities else None

    output_format = request.output_format or "png"
    if output_format not in caps.output_formats:
        raise _invalid("output_format", f"{spec.id} produces " + ", ".join(caps.output_formats) + ".")
    upstream_format = output_format if output_format in caps.upstream_formats else caps.upstream_formats[0]
    compression = request.output_compression
    if compression is not None and output_format == "png":
        ignored.append("output_compression")  # PNG is lossless: a level changes nothing
        compression = None

    background = request.background or "auto"
    if background == "transparent":
        if not caps.transparent_background:
            raise _invalid("background", f"{spec.id} cannot make a transparent background.")
        if output_format == "jpeg":
            raise _invalid("background", "a transparent background needs output_format 'png' or 'webp'.")
    elif request.background is not None and caps.planner == "ratio_grid":
        ignored.append("background")

    for name in ("style", "moderation"):
        if getattr(request, name) is not None and not (name == "moderation" and caps.qualities):
            ignored.append(name)

    thinking_level = alias.thinking_level if alias else None
    if thinking_level and thinking_level not in caps.thinking_levels:
        thinking_level = None

    upstream_model = alias.upstream_model if alias and alias.upstream_model else spec.upstream_model
    fidelity = request.input_fidelity
    if fidelity is not None and not caps.input_fidelity:
        ignored.append("input_fidelity")
        fidelity = None

    common = {
        "model": spec.id, "provider": spec.provider, "upstream_model": upstream_model,
        "quality": quality, "upstream_quality": upstream_quality, "output_format": output_format,
        "output_compression": compression, "upstream_format": upstream_format,
        "background": "transparent" if background == "transparent" else "opaque",
        "thinking_level": thinking_level,
        # streamed partial images name no image: one image per upstream call keeps each image's
        # partials and usage its own
        "n_per_call": 1 if request.partial_images else caps.n_per_call, "input_fidelity": fidelity,
        "multi_turn": caps.multi_turn,
    }
    if caps.planner == "ratio_grid":
        dims = _plan_ratio_grid(request, spec, quality, adjusted, grids or {})
    elif caps.planner == "size_list":
        dims = _plan_size_list(request, caps, adjusted)
    else:
        dims = _plan_free_size(request, spec, quality, adjusted)
    if request.aspect_ratio and request.size and request.size.strip().lower() != "auto":
        ignored.append("size")  # the aspect ratio wins over the size when both are sent
    if request.image_size is not None and caps.planner != "ratio_grid":
        ignored.append("image_size")  # sizes come from `size` / `aspect_ratio` on this model
    return AppliedParams(**common, **dims, ignored=ignored, adjusted=adjusted)


@dataclass(frozen=True)
class RoutePlan:
    """The requested model's catalogue id, and the routes a job for it tries, in order."""

    model: str
    routes: list[AppliedParams]


def plan_routes(catalogue: Catalogue, request: GenerationRequest) -> RoutePlan:
    """The plan of each configured route that can take the request: the model's first configured
    route (the model itself, or its first configured fallback), then its other fallbacks. A
    fallback that cannot take the request (too many images, a size it cannot make) is left out;
    when the first route cannot, its error is the answer (a 400 naming the field)."""
    resolved = catalogue.resolve(request.model)
    chain = catalogue.routes(resolved.spec)
    carried = fallback_alias(resolved.alias)
    first = resolved if chain[0] is resolved.spec else Resolved(spec=chain[0], requested=request.model, alias=carried)
    routes = [plan(request, first, grids=catalogue.grids)]
    for fallback in chain[1:]:
        try:
            routes.append(plan(request, Resolved(spec=fallback, requested=fallback.id, alias=carried),
                               grids=catalogue.grids))
        except InvalidRequestError:
            continue
    return RoutePlan(model=resolved.spec.id, routes=routes)


def _check_inputs(request: GenerationRequest, spec: ModelSpec) -> None:
    caps = spec.capabilities
    if request.current_images() and not caps.edit:
        raise _invalid("image", f"{spec.id} does not edit images; use a model with the edit capability.")
    if caps.edit and len(request.images_for(multi_turn=caps.multi_turn)) > caps.max_input_images:
        raise _invalid("image", f"{spec.id} takes at most {caps.max_input_images} input images.")
    if request.mask is not None and not caps.mask:
        raise _invalid("mask", f"{spec.id} does not take a mask.")
    if request.mask is not None and not request.input_images:
        raise _invalid("mask", "a mask applies to an input image; send the image too.")


def _plan_ratio_grid(request: GenerationRequest, spec: ModelSpec, quality: str,
                     adjusted: dict[str, str], grids: dict[str, dict[str, dict[str, str]]]) -> dict[str, object]:
    caps = spec.capabilities
    ratio: str | None = None
    size = parse_size(request.size) if request.size and request.size.strip().lower() != "auto" else None
    if request.size and request.size.strip().lower() != "auto" and size is None:
        raise _invalid("size", f"{request.size!r}. Use 'auto' or WIDTHxHEIGHT, e.g. '1024x1024'.")
    if request.aspect_ratio:
        parsed = parse_ratio(request.aspect_ratio)
        if parsed is None:
            raise _invalid("aspect_ratio", f"{request.aspect_ratio!r}. Use W:H, e.g. '16:9'.")
        label = request.aspect_ratio.strip()
        ratio = label if label in caps.aspect_ratios else nearest_ratio(*parsed, caps.aspect_ratios)
        if ratio != label:
            adjusted["aspect_ratio"] = f"{label} -> {ratio}"
    elif size is not None:
        ratio = nearest_ratio(size[0], size[1], caps.aspect_ratios)

    tier: str | None = None
    if caps.image_sizes:
        if request.image_size:
            tier = _IMAGE_SIZE_ALIASES.get(request.image_size.strip().lower())
            if tier not in caps.image_sizes:
                raise _invalid("image_size", f"{request.image_size!r}. {spec.id} supports "
                               + ", ".join(caps.image_sizes) + ".")
        elif size is not None and max(size) >= 3000 and "4K" in caps.image_sizes:
            tier = "4K"
        elif size is not None and max(size) >= 1800 and "2K" in caps.image_sizes:
            tier = "2K"
        else:
            tier = caps.quality_tiers.get(quality, caps.default_image_size)
            if tier not in caps.image_sizes:
                tier = caps.default_image_size
    elif request.image_size:
        adjusted["image_size"] = f"{request.image_size} -> fixed"

    width = height = None
    if ratio is not None and caps.grid:
        table = grids.get(caps.grid, {}).get(tier or "fixed", {})
        if ratio in table:
            width, height = (int(v) for v in table[ratio].split("x"))
    if size is not None and (width, height) != size:
        applied = f"{width}x{height}" if width else ratio
        adjusted["size"] = f"{size[0]}x{size[1]} -> {applied}"
    return {"width": width, "height": height, "aspect_ratio": ratio, "image_size": tier}


def _plan_size_list(request: GenerationRequest, caps: Capabilities, adjusted: dict[str, str]) -> dict[str, object]:
    sizes = [parse_size(s) for s in caps.sizes]
    choices = {f"{w}x{h}": (w, h) for w, h in (s for s in sizes if s)}

    def nearest(width: float, height: float) -> str:
        target = math.log(width / height)
        return min(choices, key=lambda k: abs(math.log(choices[k][0] / choices[k][1]) - target))

    if request.aspect_ratio:
        parsed = parse_ratio(request.aspect_ratio)
        if parsed is None:
            raise _invalid("aspect_ratio", f"{request.aspect_ratio!r}. Use W:H, e.g. '16:9'.")
        chosen = nearest(*parsed)
        if ratio_label(*choices[chosen]) != ratio_label(*parsed):
            adjusted["aspect_ratio"] = f"{request.aspect_ratio.strip()} -> {ratio_label(*choices[chosen])}"
    elif request.size and request.size.strip().lower() != "auto":
        parsed_size = parse_size(request.size)
        if parsed_size is None:
            raise _invalid("size", f"{request.size!r}. Supported sizes are: "
                           + ", ".join(["auto", *caps.sizes]) + ".")
        if max(parsed_size) > 4096:
            raise _invalid("size", f"{request.size!r} is larger than any size this model makes.")
        chosen = f"{parsed_size[0]}x{parsed_size[1]}"
        if chosen not in choices:
            chosen = nearest(*parsed_size)
            adjusted["size"] = f"{request.size.strip()} -> {chosen}"
    else:
        return {"upstream_size": "auto"}
    width, height = choices[chosen]
    return {"width": width, "height": height, "aspect_ratio": ratio_label(width, height),
            "upstream_size": chosen}


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _plan_free_size(request: GenerationRequest, spec: ModelSpec, quality: str,
                    adjusted: dict[str, str]) -> dict[str, object]:
    caps = spec.capabilities
    long_side = caps.long_side.get(quality, caps.long_side.get("auto", 1024))
    upstream_sizes = caps.qualities  # GPT image models take `size` upstream; the demo does not
    if request.aspect_ratio:
        ratio = parse_ratio(request.aspect_ratio)
        if ratio is None or request.aspect_ratio.strip() not in caps.aspect_ratios:
            raise _invalid("aspect_ratio", f"{request.aspect_ratio!r}. {spec.id} supports "
                           + ", ".join(caps.aspect_ratios) + ".")
        scale = long_side / max(ratio)
        width = _round_to(ratio[0] * scale, caps.size_multiple)
        height = _round_to(ratio[1] * scale, caps.size_multiple)
        # rounding the short side down can push the ratio past the model's limit: round it up
        while max(width, height) / min(width, height) > caps.max_ratio:
            if width < height:
                width += caps.size_multiple
            else:
                height += caps.size_multiple
        label = request.aspect_ratio.strip()
    elif request.size and request.size.strip().lower() != "auto":
        parsed = parse_size(request.size)
        if parsed is None:
            raise _invalid("size", f"{request.size!r}. Use 'auto' or WIDTHxHEIGHT, e.g. '1024x1024'.")
        width, height = parsed
        _check_free_size(request.size, width, height, spec)
        label = ratio_label(width, height)
    else:
        if upstream_sizes:
            return {"upstream_size": "auto"}
        width = height = long_side
        label = "1:1"
    return {"width": width, "height": height, "aspect_ratio": label,
            "upstream_size": f"{width}x{height}" if upstream_sizes else None}


def _check_free_size(text: str, width: int, height: int, spec: ModelSpec) -> None:
    caps = spec.capabilities
    if not (caps.size_min <= width <= caps.size_max and caps.size_min <= height <= caps.size_max):
        raise _invalid("size", f"{text!r}. {spec.id} supports sides from {caps.size_min} to "
                       f"{caps.size_max} pixels.")
    if caps.max_short_side and min(width, height) > caps.max_short_side:
        raise _invalid("size", f"{text!r}. {spec.id} supports at most {caps.size_max}x{caps.max_short_side}.")
    if caps.max_pixels and width * height > caps.max_pixels:
        raise _invalid("size", f"{text!r} exceeds {caps.max_pixels} pixels.")
    if width % caps.size_multiple or height % caps.size_multiple:
        raise _invalid("size", f"{text!r}. Both sides must be multiples of {caps.size_multiple}.")
    if max(width, height) / min(width, height) > caps.max_ratio:
        raise _invalid("size", f"{text!r}. {spec.id} supports aspect ratios up to {caps.max_ratio:g}:1.")
