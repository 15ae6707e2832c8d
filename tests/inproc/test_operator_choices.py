"""The operator's choices about clients, through HTTP on the embedded app in this process: unknown
model ids refused on the Anthropic dialect (``IMAGEGATE_ANTHROPIC_UNKNOWN_MODEL=error``), coding
agents' system prompts forwarded (``IMAGEGATE_AGENT_SYSTEM_PROMPT=forward``), one origin let in
(``IMAGEGATE_CORS_ORIGINS``), and Anthropic answers with gateway URLs
(``IMAGEGATE_ANTHROPIC_IMAGE_URLS``), which a follow-up sends back. The defaults are in
tests/inproc/test_clients.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.inproc.gateway import Gateway, running_gateway
from tests.inproc.test_clients import AGENT_SYSTEM, ANTHROPIC, TOOLS

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def strict(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """An operator who refuses unknown model ids, forwards agents' system prompts, lets one origin in
    and answers Anthropic clients with image URLs."""
    async with running_gateway(tmp_path_factory.mktemp("strict"), anthropic_unknown_model="error",
                               agent_system_prompt="forward", cors_origins=["https://app.example"],
                               anthropic_image_urls=True) as gateway:
        yield gateway


async def test_the_operator_may_refuse_unknown_ids_and_forward_agent_system_prompts(strict: Gateway) -> None:
    key = await strict.create_key()
    headers = {**key.auth, **ANTHROPIC}
    unknown = await strict.http.post("/v1/messages", headers=headers, json={
        "model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "a fox"}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    kept = await strict.http.post("/v1/messages", headers=headers, json={
        "model": "demo", "system": AGENT_SYSTEM, "tools": TOOLS, "messages": [{"role": "user", "content": "a fox"}]})
    job = await strict.poll(key, kept.headers["x-imagegate-job-id"])
    assert job["request"]["system"] == AGENT_SYSTEM[0]["text"] and job["applied"]["ignored"] == ["tools"]


async def test_allowed_origins_are_a_setting(strict: Gateway) -> None:
    allowed = await strict.http.get("/health", headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = await strict.http.get("/health", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_a_follow_up_sending_back_a_gateway_url_edits_that_image(strict: Gateway) -> None:
    key, stranger = await strict.create_key(), await strict.create_key()
    first = await strict.http.post("/v1/messages", headers={**key.auth, **ANTHROPIC}, json={
        "model": "demo", "messages": [{"role": "user", "content": "a red square"}]})
    answer = first.json()["content"][0]["text"]
    url = answer.rsplit("](", 1)[1].rstrip(")")
    assert url.startswith(strict.settings.resolved_public_url + "/v1/files/")
    history = [{"role": "user", "content": "a red square"}, {"role": "assistant", "content": answer},
               {"role": "user", "content": "now make it blue"}]
    follow_up = await strict.http.post("/v1/messages", headers={**key.auth, **ANTHROPIC},
                                       json={"model": "demo", "messages": history})
    assert follow_up.status_code == 200, follow_up.text
    job = await strict.poll(key, follow_up.headers["x-imagegate-job-id"])
    assert len(job["request"]["input_images"]) == 1  # read from the store, not fetched
    # without its signature, the URL opens only for the key that made the image
    unsigned = [*history[:1], {"role": "assistant", "content": answer.split("?", 1)[0] + ")"}, history[2]]
    refused = await strict.http.post("/v1/messages", headers={**stranger.auth, **ANTHROPIC},
                                     json={"model": "demo", "messages": unsigned})
    assert refused.status_code == 400 and "no image of this gateway" in refused.json()["error"]["message"]
    mine = await strict.http.post("/v1/messages", headers={**key.auth, **ANTHROPIC},
                                  json={"model": "demo", "messages": unsigned})
    assert mine.status_code == 200, mine.text
