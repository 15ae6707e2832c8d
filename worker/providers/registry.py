"""The providers this worker can call, by the ``provider`` name the catalogue uses, built from
the settings once at startup (credentials are read here and nowhere else).

Which providers are configured is decided by :func:`core.providers.configured_providers`; this
module only knows how to build each one (:data:`BUILDERS`), and builds exactly those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TypeVar

import httpx

from core.config import Settings
from core.errors import ServiceUnavailableError
from core.providers import configured_providers
from worker.providers.base import HttpAdapter, HttpProvider, Provider
from worker.providers.demo import DemoProvider
from worker.providers.gemini import GeminiAdapter
from worker.providers.http import Redactor, RetryPolicy, UpstreamClient
from worker.providers.imagen import ImagenAdapter
from worker.providers.openai_chat import OpenAIChatAdapter
from worker.providers.openai_images import OpenAIImagesAdapter
from worker.providers.vertex import VertexAuth, VertexGeminiAdapter, VertexImagenAdapter

V = TypeVar("V")

Headers = Callable[[], dict[str, str]]


def _static(headers: dict[str, str]) -> Headers:
    return lambda: dict(headers)


def _needed(value: V | None, setting: str) -> V:
    """A setting that core.providers requires for the provider being built."""
    if value is None:
        raise ValueError(f"the setting {setting} is needed for this provider but not set")
    return value


class _Parts:
    """What the builders share: the settings, one HTTP client and credentials made once (the two
    Vertex providers use one token)."""

    def __init__(self, settings: Settings, client: UpstreamClient) -> None:
        self.settings = settings
        self.client = client

    def http(self, name: str, adapter: HttpAdapter, base_url: str, headers: Headers,
             on_unauthorized: Callable[[], None] | None = None) -> HttpProvider:
        return HttpProvider(name, adapter, self.client, base_url, headers, on_unauthorized)

    @cached_property
    def google_key(self) -> Headers:
        key = _needed(self.settings.gemini_api_key, "gemini_api_key")
        return _static({"x-goog-api-key": key.get_secret_value()})

    @cached_property
    def openai_bearer(self) -> Headers:
        key = _needed(self.settings.openai_api_key, "openai_api_key")
        return _static({"Authorization": f"Bearer {key.get_secret_value()}"})

    @cached_property
    def chat_bearer(self) -> Headers:
        key = self.settings.chat_upstream_api_key  # optional: some gateways need no key
        return _static({"Authorization": f"Bearer {key.get_secret_value()}"} if key else {})

    @cached_property
    def vertex_auth(self) -> VertexAuth:
        return VertexAuth(_needed(self.settings.vertex_credentials_file, "vertex_credentials_file"))

    def vertex(self, name: str, kind: type[VertexGeminiAdapter]) -> HttpProvider:
        settings = self.settings
        adapter = kind(project=_needed(settings.vertex_project, "vertex_project"),
                       location=settings.vertex_location, version=settings.vertex_api_version)
        return self.http(name, adapter, settings.resolved_vertex_base_url, self.vertex_auth.headers,
                         self.vertex_auth.invalidate)


Builder = Callable[[_Parts, str], Provider]

BUILDERS: Mapping[str, Builder] = {
    "demo": lambda parts, name: DemoProvider(latency_s=parts.settings.demo_latency_s,
                                             max_input_pixels=parts.settings.max_input_pixels),
    "gemini": lambda parts, name: parts.http(name, GeminiAdapter(), parts.settings.gemini_base_url,
                                             parts.google_key),
    "imagen": lambda parts, name: parts.http(name, ImagenAdapter(), parts.settings.gemini_base_url,
                                             parts.google_key),
    "openai_images": lambda parts, name: parts.http(name, OpenAIImagesAdapter(redact=parts.client.redact),
                                                    parts.settings.openai_base_url, parts.openai_bearer),
    "openai_chat": lambda parts, name: parts.http(
        name, OpenAIChatAdapter(), _needed(parts.settings.chat_upstream_base_url, "chat_upstream_base_url"),
        parts.chat_bearer),
    "vertex_gemini": lambda parts, name: parts.vertex(name, VertexGeminiAdapter),
    "vertex_imagen": lambda parts, name: parts.vertex(name, VertexImagenAdapter),
}
"""How to build each provider of :data:`core.providers.PROVIDERS`, by name."""


class ProviderRegistry:
    def __init__(self, providers: dict[str, Provider], *, client: UpstreamClient | None = None) -> None:
        self._providers = providers
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> ProviderRegistry:
        secrets = [s.get_secret_value() for s in (settings.gemini_api_key, settings.openai_api_key,
                                                  settings.chat_upstream_api_key) if s is not None]
        client = UpstreamClient(
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_timeout_s,
            policy=RetryPolicy(max_attempts=settings.upstream_max_attempts,
                               budget_s=settings.upstream_retry_budget_s,
                               backoff_base_s=settings.upstream_backoff_base_s,
                               backoff_max_s=settings.upstream_backoff_max_s),
            max_connections=max(20, settings.worker_concurrency * 2),
            redact=Redactor(secrets),
            transport=transport,
        )
        parts = _Parts(settings, client)
        return cls({name: BUILDERS[name](parts, name) for name in sorted(configured_providers(settings))},
                   client=client)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._providers)

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            raise ServiceUnavailableError(f"The provider '{name}' is not configured on this worker.")
        return provider

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
