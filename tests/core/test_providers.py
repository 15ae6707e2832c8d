"""core.providers: the one table of which providers the settings configure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.config import Settings
from core.providers import PROVIDER_NAMES, PROVIDERS, configured_providers, is_set

UNSET: dict[str, Any] = {name: None for needs in PROVIDERS for name in needs.settings}


def settings(**values: Any) -> Settings:
    """Settings with no provider setting but ``values``, whatever the environment holds."""
    return Settings(_env_file=None, **{**UNSET, **values})


def test_the_table_names_every_provider_once() -> None:
    names = [needs.name for needs in PROVIDERS]
    assert len(names) == len(set(names)) and set(names) == PROVIDER_NAMES
    expected = {"demo", "gemini", "imagen", "openai_images", "openai_chat", "vertex_gemini", "vertex_imagen"}
    assert expected == PROVIDER_NAMES


def test_the_table_names_real_settings() -> None:
    named = {name for needs in PROVIDERS for name in needs.settings}
    assert named <= set(Settings.model_fields)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"demo"}),
        ({"gemini_api_key": "AIza-test"}, {"demo", "gemini", "imagen"}),
        ({"openai_api_key": "sk-test"}, {"demo", "openai_images"}),
        ({"chat_upstream_base_url": "https://gateway.test/v1"}, {"demo", "openai_chat"}),
        ({"chat_upstream_api_key": "sk-or-test"}, {"demo"}),  # a key without a gateway URL: nothing to call
        ({"vertex_credentials_file": "/tmp/sa.json"}, {"demo"}),  # no project: not configured
        ({"vertex_project": "p"}, {"demo"}),  # no credentials: not configured
        ({"vertex_credentials_file": "/tmp/sa.json", "vertex_project": "p"},
         {"demo", "vertex_gemini", "vertex_imagen"}),
        ({"vertex_credentials_file": "/tmp/sa.json", "vertex_project": ""}, {"demo"}),
        ({"gemini_api_key": "", "openai_api_key": ""}, {"demo"}),  # an empty key is no key
        ({"gemini_api_key": "AIza-test", "openai_api_key": "sk-test", "chat_upstream_base_url": "https://g.test",
          "vertex_credentials_file": "/tmp/sa.json", "vertex_project": "p"}, PROVIDER_NAMES),
    ],
)
def test_configured_providers(values: dict[str, Any], expected: set[str]) -> None:
    assert configured_providers(settings(**values)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("x", True), (SecretStr(""), False), (SecretStr("sk"), True),
     (Path("/tmp/sa.json"), True)],
)
def test_is_set(value: object, expected: bool) -> None:
    assert is_set(value) is expected
