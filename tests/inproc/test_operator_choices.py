"""The operator's choices about clients, through HTTP on the embedded app in this process: unknown
model ids refused on the Anthropic dialect (``IMAGEGATE_ANTHROPIC_UNKNOWN_MODEL=error``), coding
agents' system prompts forwarded (``IMAGEGATE_AGENT_SYSTEM_PROMPT=forward``), and one origin let
in (``IMAGEGATE_CORS_ORIGINS``). The defaults are in tests/inproc/test_clients.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.inproc.gateway import Gateway, running_gateway
from tests.inproc.test_clients import AGENT_SYSTEM, ANTHROPIC, TOOLS

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def strict(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """An operator who refuses unknown model ids, forwards agents' system prompts and lets one origin in."""
    async with running_gateway(tmp_path_factory.mktemp("strict"), anthropic_unknown_model="error",
                               agent_system_prompt="forward", cors_origins=["https://app.example"]) as gateway:
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
