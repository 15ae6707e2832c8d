"""Circuit breaking end to end: two workers share each upstream route's circuit in Redis. The fake
upstream failing every call opens the circuit after the configured count; later images skip the
route without a call (counted at the fake), taking the fallback, or fail fast with a 503 when
there is none; after the cool-down one probe closes it again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, env_names

pytestmark = pytest.mark.integration

COOLDOWN_S = 12.0  # long enough for a few images on a loaded machine while the circuit is open
ATTEMPTS = 3  # the fake's gateway_settings: upstream_max_attempts


@pytest.fixture(scope="module")
def breaker(make_stack: Callable[..., Stack], fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    settings = env_names(fake.gateway_settings(tmp_path_factory.mktemp("circuit")))
    return make_stack(
        "distributed",
        workers=2,
        IMAGEGATE_CIRCUIT_FAILURES="2",
        IMAGEGATE_CIRCUIT_COOLDOWN_S=str(COOLDOWN_S),
        **settings,
    )


@pytest.fixture(scope="module")
def client(breaker: Stack) -> openai.OpenAI:
    # the SDK's own defaults: its retries of a 503 attach to the first job (x-stainless-retry-count)
    return openai.OpenAI(base_url=breaker.base_url + "/v1", api_key=breaker.create_key("circuit"))


def _circuits(stack: Stack) -> dict[str, Any]:
    health = httpx.get(stack.base_url + "/health", timeout=10).json()
    circuits: dict[str, Any] = health["circuits"]
    return circuits


def _sleep_out_the_cooldown(stack: Stack, route: str) -> None:
    time.sleep(_circuits(stack)[route]["retry_in_s"] + 0.3)


def _served_by(client: openai.OpenAI, model: str) -> str:
    raw = client.images.with_raw_response.generate(model=model, prompt="a lighthouse in a storm")
    assert len(raw.parse().data) == 1
    return raw.headers["x-imagegate-served-by"]


def test_failures_open_the_circuit_later_images_skip_the_route_and_a_probe_closes_it(
    breaker: Stack, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.add_fault("gemini", "status", status=503, model="gemini-3-pro-image", times=1000)
    route = "gemini:gemini-3-pro-image"

    # two route failures (each after its retries), each image served by the fallback
    for failures in (1, 2):
        assert _served_by(client, "gemini-3-pro-image") == "vertex/gemini-3-pro-image"
        assert upstream.count("gemini") == ATTEMPTS * failures
    circuit = _circuits(breaker)[route]
    assert circuit["state"] == "open" and circuit["failures"] == 2 and 0 < circuit["retry_in_s"] <= COOLDOWN_S

    # open: three more images (on either worker) go straight to the fallback, without a call
    for _ in range(3):
        assert _served_by(client, "gemini-3-pro-image") == "vertex/gemini-3-pro-image"
    assert upstream.count("gemini") == 2 * ATTEMPTS
    assert upstream.count("vertex_gemini") == 5

    # after the cool-down, with the upstream still failing, the one probe re-opens it
    _sleep_out_the_cooldown(breaker, route)
    assert _circuits(breaker)[route]["state"] == "half_open"
    assert _served_by(client, "gemini-3-pro-image") == "vertex/gemini-3-pro-image"
    assert upstream.count("gemini") == 3 * ATTEMPTS
    assert _circuits(breaker)[route]["state"] == "open"
    assert _served_by(client, "gemini-3-pro-image") == "vertex/gemini-3-pro-image"
    assert upstream.count("gemini") == 3 * ATTEMPTS

    # the upstream recovers: the next probe succeeds and closes the circuit
    upstream.reset()
    _sleep_out_the_cooldown(breaker, route)
    assert _served_by(client, "gemini-3-pro-image") == "gemini-3-pro-image"
    assert upstream.count("gemini") == 1
    assert route not in _circuits(breaker)
    assert _served_by(client, "gemini-3-pro-image") == "gemini-3-pro-image"
    assert upstream.count("gemini") == 2


def test_with_no_fallback_an_open_circuit_fails_fast_with_503(
    breaker: Stack, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.add_fault("openai_generations", "status", status=500, times=1000)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.images.generate(model="gpt-image-2", prompt="a red kite")
    assert upstream.count("openai_generations") == 2 * ATTEMPTS
    assert _circuits(breaker)["openai_images:gpt-image-2"]["state"] == "open"

    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        client.images.generate(model="gpt-image-2", prompt="a red kite")
    assert time.monotonic() - started < 2
    assert raised.value.status_code == 503
    assert raised.value.code == "upstream_unavailable"
    assert "paused" in raised.value.message
    assert upstream.count("openai_generations") == 2 * ATTEMPTS  # no call made


def test_refusals_and_callers_errors_never_open_a_circuit(
    breaker: Stack, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.add_fault("gemini", "safety_prompt", model="gemini-3.1-flash-image", times=3)
    upstream.add_fault("gemini", "status", status=400, model="gemini-3.1-flash-image", times=3)
    for _ in range(6):
        with pytest.raises(openai.APIStatusError):
            client.images.generate(model="gemini-3.1-flash-image", prompt="a harbour")
    assert "gemini:gemini-3.1-flash-image" not in _circuits(breaker)
    assert _served_by(client, "gemini-3.1-flash-image") == "gemini-3.1-flash-image"
