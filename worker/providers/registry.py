"""The providers this worker can call, by the ``provider`` name the catalogue uses."""

from __future__ import annotations

from core.config import Settings
from core.errors import ServiceUnavailableError
from worker.providers.base import Provider
from worker.providers.demo import DemoProvider


class ProviderRegistry:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self._providers = providers

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        return cls({"demo": DemoProvider(latency_s=settings.demo_latency_s)})

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            raise ServiceUnavailableError(f"The provider '{name}' is not configured on this worker.")
        return provider
