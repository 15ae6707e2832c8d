"""The provider interface every upstream protocol implements."""

from __future__ import annotations

from typing import Protocol

from core.generation import AppliedParams, GenerationRequest, ProviderImage


class Provider(Protocol):
    """Generates one image of a job.

    ``request`` is what the caller asked; ``applied`` is what submit decided to generate (model,
    dimensions, format); ``index`` is the image's place in the job (0-based), which providers use
    to vary otherwise identical calls. Errors are :class:`core.errors.GatewayError` subclasses:
    ``ContentPolicyError`` for a blocked prompt, ``UpstreamError`` for anything the upstream did.
    """

    name: str

    def generate(
        self, request: GenerationRequest, applied: AppliedParams, *, index: int
    ) -> ProviderImage: ...
