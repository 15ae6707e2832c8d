"""The providers this worker can call, by the ``provider`` name the catalogue uses, built from
the settings once at startup (credentials are read here and nowhere else)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from core.config import Settings
from core.errors import ServiceUnavailableError
from worker.providers.base import HttpProvider, Provider
from worker.providers.demo import DemoProvider
from worker.providers.gemini import GeminiAdapter
from worker.providers.http import Redactor, RetryPolicy, UpstreamClient
from worker.providers.imagen import ImagenAdapter
from worker.providers.openai_chat import OpenAIChatAdapter
from worker.providers.openai_images import OpenAIImagesAdapter
from worker.providers.vertex import VertexAuth, VertexGeminiAdapter, VertexImagenAdapter


def _static(headers: dict[str, str]) -> Callable[[], dict[str, str]]:
    return lambda: dict(headers)


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
        providers: dict[str, Provider] = {"demo": DemoProvider(latency_s=settings.demo_latency_s)}
        if settings.gemini_api_key is not None:
            google = _static({"x-goog-api-key": settings.gemini_api_key.get_secret_value()})
            providers["gemini"] = HttpProvider("gemini", GeminiAdapter(), client, settings.gemini_base_url, google)
            providers["imagen"] = HttpProvider("imagen", ImagenAdapter(), client, settings.gemini_base_url, google)
        if settings.openai_api_key is not None:
            bearer = _static({"Authorization": f"Bearer {settings.openai_api_key.get_secret_value()}"})
            providers["openai_images"] = HttpProvider("openai_images", OpenAIImagesAdapter(), client,
                                                      settings.openai_base_url, bearer)
        if settings.chat_upstream_base_url:
            key = settings.chat_upstream_api_key
            chat = _static({"Authorization": f"Bearer {key.get_secret_value()}"} if key else {})
            providers["openai_chat"] = HttpProvider("openai_chat", OpenAIChatAdapter(), client,
                                                    settings.chat_upstream_base_url, chat)
        if settings.vertex_credentials_file is not None and settings.vertex_project:
            auth = VertexAuth(settings.vertex_credentials_file)
            where = {"project": settings.vertex_project, "location": settings.vertex_location,
                     "version": settings.vertex_api_version}
            base = settings.resolved_vertex_base_url
            providers["vertex_gemini"] = HttpProvider("vertex_gemini", VertexGeminiAdapter(**where), client,
                                                      base, auth.headers, auth.invalidate)
            providers["vertex_imagen"] = HttpProvider("vertex_imagen", VertexImagenAdapter(**where), client,
                                                      base, auth.headers, auth.invalidate)
        return cls(providers, client=client)

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            raise ServiceUnavailableError(f"The provider '{name}' is not configured on this worker.")
        return provider

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
