"""ProviderRegistry.from_settings builds exactly the providers core.providers configures, each with
its adapter, base URL and credentials (the two Vertex AI providers share one token source)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import ServiceUnavailableError
from core.providers import PROVIDER_NAMES, PROVIDERS, configured_providers
from tests.fakes.upstream_oauth import OAuthServer
from worker.providers.base import HttpProvider
from worker.providers.demo import DemoProvider
from worker.providers.gemini import GeminiAdapter
from worker.providers.imagen import ImagenAdapter
from worker.providers.openai_chat import OpenAIChatAdapter
from worker.providers.openai_images import OpenAIImagesAdapter
from worker.providers.registry import BUILDERS, ProviderRegistry
from worker.providers.vertex import VertexGeminiAdapter, VertexImagenAdapter

pytestmark = pytest.mark.anyio

UNSET: dict[str, Any] = {name: None for needs in PROVIDERS for name in needs.settings}


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service-account file with a real RSA key (its token endpoint is never called here)."""
    path = tmp_path_factory.mktemp("vertex") / "service-account.json"
    path.write_text(json.dumps(OAuthServer(3600).new_service_account("p-1", "http://127.0.0.1:9/token")))
    return path


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **{**UNSET, **values})


@asynccontextmanager
async def registry_for(values: dict[str, Any]) -> AsyncIterator[ProviderRegistry]:
    registry = ProviderRegistry.from_settings(settings(**values))
    try:
        yield registry
    finally:
        await registry.aclose()


async def test_there_is_a_builder_for_every_provider_of_the_table() -> None:
    assert set(BUILDERS) == PROVIDER_NAMES


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"gemini_api_key": "AIza-test"},
        {"openai_api_key": "sk-test", "chat_upstream_base_url": "https://gateway.test/v1"},
        {"vertex_project": "p-1"},
        {"vertex_project": "p-1", "vertex_credentials_file": "ACCOUNT"},
        {"gemini_api_key": "AIza-test", "openai_api_key": "sk-test", "chat_upstream_base_url": "https://g.test",
         "vertex_project": "p-1", "vertex_credentials_file": "ACCOUNT"},
    ],
    ids=["nothing", "gemini", "openai-and-chat", "vertex-without-credentials", "vertex", "everything"],
)
async def test_exactly_the_configured_providers_are_built(values: dict[str, Any], account: Path) -> None:
    values = {k: account if v == "ACCOUNT" else v for k, v in values.items()}
    async with registry_for(values) as registry:
        assert registry.names == configured_providers(settings(**values))
        for name in PROVIDER_NAMES - registry.names:
            with pytest.raises(ServiceUnavailableError):
                registry.get(name)


def http(registry: ProviderRegistry, name: str) -> HttpProvider:
    provider = registry.get(name)
    assert isinstance(provider, HttpProvider)
    assert provider.name == name
    return provider


async def test_each_provider_has_its_adapter_base_url_and_credentials(account: Path) -> None:
    values = {"gemini_api_key": "AIza-test", "gemini_base_url": "https://gemini.test", "openai_api_key": "sk-test",
              "openai_base_url": "https://openai.test/v1", "chat_upstream_base_url": "https://g.test/v1",
              "vertex_project": "p-1", "vertex_location": "europe-west4", "vertex_credentials_file": account,
              "demo_latency_s": 0.5}
    async with registry_for(values) as registry:
        demo = registry.get("demo")
        assert isinstance(demo, DemoProvider) and demo.latency_s == 0.5
        expected = {"gemini": (GeminiAdapter, "https://gemini.test", {"x-goog-api-key": "AIza-test"}),
                    "imagen": (ImagenAdapter, "https://gemini.test", {"x-goog-api-key": "AIza-test"}),
                    "openai_images": (OpenAIImagesAdapter, "https://openai.test/v1",
                                      {"Authorization": "Bearer sk-test"}),
                    "openai_chat": (OpenAIChatAdapter, "https://g.test/v1", {})}  # no key: no header
        for name, (adapter, base_url, headers) in expected.items():
            provider = http(registry, name)
            headers_sent = await provider.auth_headers()
            assert (type(provider.adapter), provider.base_url, headers_sent) == (adapter, base_url, headers)
            assert provider.on_unauthorized is None
        gemini, imagen = http(registry, "vertex_gemini"), http(registry, "vertex_imagen")
        assert (type(gemini.adapter), type(imagen.adapter)) == (VertexGeminiAdapter, VertexImagenAdapter)
        assert isinstance(gemini.adapter, VertexGeminiAdapter)
        assert (gemini.adapter.project, gemini.adapter.location) == ("p-1", "europe-west4")
        assert gemini.base_url == imagen.base_url == "https://europe-west4-aiplatform.googleapis.com"
        # one VertexAuth for both: one token, one refresh on a 401
        assert gemini.auth_headers == imagen.auth_headers
        assert gemini.on_unauthorized is not None and gemini.on_unauthorized == imagen.on_unauthorized


async def test_the_chat_upstream_key_is_sent_when_set() -> None:
    values = {"chat_upstream_base_url": "https://g.test/v1", "chat_upstream_api_key": "sk-or-test"}
    async with registry_for(values) as registry:
        assert await http(registry, "openai_chat").auth_headers() == {"Authorization": "Bearer sk-or-test"}
