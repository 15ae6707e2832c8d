"""The provider interface, and the composition every HTTP upstream shares.

A provider turns one :class:`ProviderCall` (a job's request, the applied parameters, which of its
images this call makes, and the input images' bytes) into images. HTTP providers are a pure
adapter (one module per upstream protocol: ``build_request`` / ``parse_response``, and
``retry_hint`` / ``parse_error`` for its error answers, from :mod:`worker.providers.google_errors`
or :mod:`worker.providers.openai_errors`) plus credentials, sent by
:class:`worker.providers.http.UpstreamClient`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from core.generation import AppliedParams, GenerationRequest, ProviderImage
from worker.providers.http import UpstreamClient, UpstreamErrors


@dataclass(frozen=True)
class InputBytes:
    data: bytes
    mime_type: str


@dataclass(frozen=True)
class ProviderCall:
    request: GenerationRequest
    applied: AppliedParams
    indices: list[int]
    """The job's image indexes this call produces (several when the upstream makes n per call)."""
    inputs: list[InputBytes] = field(default_factory=list)
    """The bytes of every image of the request, by index (``request.input_images``)."""
    mask: InputBytes | None = None

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def edit_inputs(self) -> list[InputBytes]:
        """The images this route sends (see :meth:`GenerationRequest.images_for`): all of a
        conversation's for a route that takes turns, else the ones the prompt edits."""
        return [self.inputs[i] for i in self.request.images_for(multi_turn=self.applied.multi_turn)]


class Provider(Protocol):
    """Makes up to ``call.count`` images; raises a GatewayError (ContentPolicyError for a blocked
    prompt, UpstreamError for anything the upstream did) when it makes none."""

    name: str

    def generate(self, call: ProviderCall) -> list[ProviderImage]: ...


class HttpAdapter(UpstreamErrors, Protocol):
    """Pure translation to and from one upstream protocol: no sockets, no settings.

    ``retry_hint`` and ``parse_error`` (from :class:`UpstreamErrors`) say what the upstream's
    error answers mean; ``label`` names the upstream in error messages."""

    label: str

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request: ...

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]: ...


@dataclass
class HttpProvider:
    """An upstream reached over HTTP: adapter + base URL + credentials + the shared client."""

    name: str
    adapter: HttpAdapter
    client: UpstreamClient
    base_url: str
    auth_headers: Callable[[], dict[str, str]]
    on_unauthorized: Callable[[], None] | None = None

    def generate(self, call: ProviderCall) -> list[ProviderImage]:
        return self.client.call(
            lambda: self.adapter.build_request(call, base_url=self.base_url, headers=self.auth_headers()),
            lambda response: self.adapter.parse_response(response, call),
            errors=self.adapter,
            on_unauthorized=self.on_unauthorized,
            label=self.adapter.label,
            provider=self.name,
        )
