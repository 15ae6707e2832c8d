"""Which upstream providers a gateway can use: one table, decided from the settings alone.

A provider is an upstream protocol as the catalogue's ``provider`` field names it. It is
configured when every setting it needs is set (not missing, not empty). The API offers the models
of the configured providers (:func:`core.routing.load_for_settings`) and a worker builds exactly
these providers (``worker.providers.registry``), so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from core.config import Settings


@dataclass(frozen=True)
class ProviderNeeds:
    name: str
    settings: tuple[str, ...]
    """Names of the :class:`~core.config.Settings` fields that must all be set."""


PROVIDERS: tuple[ProviderNeeds, ...] = (
    ProviderNeeds("demo", ()),
    ProviderNeeds("gemini", ("gemini_api_key",)),
    ProviderNeeds("imagen", ("gemini_api_key",)),
    ProviderNeeds("openai_images", ("openai_api_key",)),
    ProviderNeeds("openai_chat", ("chat_upstream_base_url",)),
    ProviderNeeds("vertex_gemini", ("vertex_credentials_file", "vertex_project")),
    ProviderNeeds("vertex_imagen", ("vertex_credentials_file", "vertex_project")),
)

PROVIDER_NAMES = frozenset(needs.name for needs in PROVIDERS)


def is_set(value: object) -> bool:
    """A setting is set when it is present and, for a text or a secret, not empty."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and value != ""


def configured_providers(settings: Settings) -> frozenset[str]:
    """The providers that have what they need in ``settings`` (``demo`` always)."""
    return frozenset(needs.name for needs in PROVIDERS
                     if all(is_set(getattr(settings, name)) for name in needs.settings))
