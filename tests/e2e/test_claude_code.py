"""Claude Code itself, pointed at imagegate as its users point it (``ANTHROPIC_BASE_URL`` and
``ANTHROPIC_API_KEY``, nothing else: no ``--model``), generating an image with ``claude -p`` and
editing it with a ``claude -c`` follow-up. The CLI comes from the npm registry
(``@anthropic-ai/claude-code``), installed once into a cache of its own; where it cannot be
installed the tests skip and say why.

Claude Code wraps the user's words in scaffolding of its own (``<system-reminder>`` blocks), sends
a system prompt of thousands of tokens with its tool definitions, and asks for its own
``claude-…`` model. The fake upstream records what reached the image model: the user's words, no
system prompt, the earlier image on the follow-up; and the job says what was left out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.installs import npm_package
from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack

pytestmark = pytest.mark.integration

PROMPT = "Generate an image of a red fox in the snow"
FOLLOW_UP = "now make it blue"
CLI_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def claude() -> Path:
    modules, why_not = npm_package("@anthropic-ai/claude-code", "@anthropic-ai/claude-code@2")
    if modules is None:
        pytest.skip(f"Claude Code cannot be installed here: {why_not}")
    return modules / ".bin" / "claude"


def run_claude(claude: Path, gw: Stack, key: str, home: Path, *args: str,
               key_variable: str = "ANTHROPIC_API_KEY") -> subprocess.CompletedProcess[str]:
    """``claude ARGS`` as a user runs it, with only the gateway to talk to: its base URL and key
    (``key_variable``), and Claude Code's own switch for its non-essential traffic (updates,
    telemetry, error reports) off. ``home`` holds its configuration and conversations (``-c``
    continues the last one of this directory)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "ANTHROPIC_BASE_URL": gw.base_url, key_variable: key, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    return subprocess.run([str(claude), *args], cwd=home, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)


def jobs_of(gw: Stack, key: str) -> list[dict[str, Any]]:
    """The key's jobs, oldest first, each as GET /v1/jobs/{id} shows it."""
    auth = {"Authorization": f"Bearer {key}"}
    listed = httpx.get(gw.base_url + "/v1/jobs", headers=auth, timeout=30).json()["data"]
    return [httpx.get(f"{gw.base_url}/v1/jobs/{job['id']}", headers=auth, timeout=30).json()
            for job in reversed(listed)]


def test_claude_code_makes_an_image_of_the_users_words_then_edits_it(
        claude: Path, gw: Stack, upstream: FakeUpstream, tmp_path: Path) -> None:
    key = gw.create_key("claude-code")
    first = run_claude(claude, gw, key, tmp_path, "-p", PROMPT)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "![Generated Image](data:image/png;base64," in first.stdout

    calls = [c.json or {} for c in upstream.calls if c.endpoint == "gemini"]
    assert calls, "no image request reached the upstream"
    for body in calls:  # the user's words alone: no <system-reminder>, no system prompt
        assert body["contents"] == [{"role": "user", "parts": [{"text": PROMPT}]}]
        assert "systemInstruction" not in body
    [job] = jobs_of(gw, key)
    applied = job["applied"]
    assert applied["adjusted"]["model"].endswith(" -> gemini-3-pro-image")  # Claude Code's own model id
    assert {"<system-reminder>", "tools", "system"} <= set(applied["ignored"])
    # billed for the user's words: the fake counts one input token per word it received
    assert job["images"][0]["usage"]["input_tokens"] == len(PROMPT.split())

    upstream.reset()
    second = run_claude(claude, gw, key, tmp_path, "-c", "-p", FOLLOW_UP)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "![Generated Image](data:image/png;base64," in second.stdout
    calls = [c.json or {} for c in upstream.calls if c.endpoint == "gemini"]
    assert calls
    contents = calls[-1]["contents"]
    # the conversation reaches the model as turns: the earlier picture as the model's, then the edit
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"] == [{"text": PROMPT}]
    assert any("inlineData" in part for part in contents[1]["parts"])
    assert contents[2]["parts"] == [{"text": FOLLOW_UP}]


def test_claude_code_with_an_auth_token_and_a_model_of_its_choice(claude: Path, gw: Stack, tmp_path: Path) -> None:
    key = gw.create_key("claude-code-token")
    done = run_claude(claude, gw, key, tmp_path, "-p", "a lighthouse at dusk", "--model", "demo-image",
                      key_variable="ANTHROPIC_AUTH_TOKEN")  # sent as Authorization: Bearer
    assert done.returncode == 0, done.stdout + done.stderr
    assert "![Generated Image](data:image/png;base64," in done.stdout
    [job] = jobs_of(gw, key)
    assert job["model"] == "demo-image" and "model" not in job["applied"]["adjusted"]
