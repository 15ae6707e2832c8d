"""core.planning.plan_routes: the requested model, and the plan of each configured route that can
take the request (the first configured route, then the other fallbacks), as submit records them."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import InvalidRequestError, ModelNotFoundError
from core.generation import GenerationRequest
from core.planning import plan_routes
from core.routing import Catalogue


def routes_of(configured: set[str], **fields: Any) -> tuple[str, list[tuple[str, str | None]]]:
    planned = plan_routes(Catalogue.load(configured=configured | {"demo"}), GenerationRequest(prompt="a fox", **fields))
    return planned.model, [(r.model, r.size) for r in planned.routes]


def test_a_configured_model_is_its_own_first_route() -> None:
    assert routes_of({"openai_images"}, model="dall-e-3", size="1792x1024") == (
        "gpt-image-1.5", [("gpt-image-1.5", "1536x1024"), ("gpt-image-2", "1792x1024")])


def test_the_first_configured_fallback_is_planned_when_the_model_is_not_configured() -> None:
    planned = plan_routes(Catalogue.load(configured={"demo", "vertex_gemini", "openai_chat"}),
                          GenerationRequest(prompt="a fox", model="gemini-3-pro-image", aspect_ratio="16:9",
                                            quality="high"))
    model, routes = planned.model, planned.routes
    assert model == "gemini-3-pro-image"  # what was asked for
    assert [(r.model, r.provider, r.upstream_model, r.size, r.image_size) for r in routes] == [
        ("vertex/gemini-3-pro-image", "vertex_gemini", "gemini-3-pro-image", "2752x1536", "2K"),
        ("gateway/gemini-3-pro-image", "openai_chat", "google/gemini-3-pro-image", "2752x1536", "2K"),
    ]


def test_a_fallback_that_cannot_take_the_request_is_left_out() -> None:
    # 4000x1000 maps to 1536x1024 on gpt-image-1.5 but is beyond gpt-image-2's 3840 px
    assert routes_of({"openai_images"}, model="gpt-image-1.5", size="4000x1000") == (
        "gpt-image-1.5", [("gpt-image-1.5", "1536x1024")])


@pytest.mark.parametrize(("model", "level"), [("imagen-4.0-fast-generate-001", "MINIMAL"),
                                              ("imagen-4.0-generate-001", "HIGH")])
def test_an_alias_thinking_level_is_planned_when_the_model_is_configured(model: str, level: str) -> None:
    catalogue = Catalogue.load(configured={"demo", "gemini"})
    routes = plan_routes(catalogue, GenerationRequest(prompt="x", model=model)).routes
    assert (routes[0].model, routes[0].thinking_level) == ("gemini-3.1-flash-image", level)


def test_an_alias_thinking_level_survives_routing_to_a_fallback() -> None:
    routes = plan_routes(Catalogue.load(configured={"demo", "vertex_gemini"}),
                         GenerationRequest(prompt="x", model="imagen-4.0-fast-generate-001")).routes
    assert routes[0].model == "vertex/gemini-3.1-flash-image"
    assert routes[0].thinking_level == "MINIMAL"


@pytest.mark.parametrize(
    ("configured", "fields", "error", "param"),
    [
        ({"demo"}, {"model": "gpt-image-2"}, ModelNotFoundError, "model"),
        ({"gemini"}, {"model": "gemini-3-pro-image", "background": "transparent"}, InvalidRequestError, "background"),
        ({"openai_images"}, {"model": "gpt-image-2", "size": "1000x1000"}, InvalidRequestError, "size"),
    ],
)
def test_the_first_route_refusing_refuses_the_request(
    configured: set[str], fields: dict[str, Any], error: type[Exception], param: str
) -> None:
    with pytest.raises(error) as info:
        routes_of(configured, **fields)
    assert getattr(info.value, "param", None) == param
