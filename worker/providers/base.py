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
from typing import Protocol, runtime_checkable

import httpx

from core.generation import AppliedParams, GenerationRequest, ProviderImage
from worker.providers.http import UpstreamClient, UpstreamErrors


@dataclass(frozen=True)
class InputBytes:
    data: bytes
    mime_type: str


@dataclass(frozen=True)
class PartialFrame:
    """A draft of one of a call's images, streamed by the upstream on the way to the final one
    (a preview for the caller: never billed, never stored as the image)."""

    index: int
    """The job's image index this draft belongs to."""
    partial_index: int
    data: bytes
    output_format: str
    size: str
    quality: str
    background: str


PartialSink = Callable[[PartialFrame], None]
"""Where a provider hands each draft as it arrives (stores it and tells the waiting caller)."""


@dataclass(frozen=True)
class ProviderCall:
    request: GenerationRequest
    applied: AppliedParams
    indices: list[int]
    """The job's image indexes this call produces (several when the upstream makes n per call)."""
    inputs: list[InputBytes] = field(default_factory=list)
    """The bytes of every image of the request, by index (``request.input_images``)."""
    mask: InputBytes | None = None
    on_partial: PartialSink | None = None
    """Set when the caller streams partial images (``request.partial_images``) and can be shown
    them; a provider whose upstream draws none ignores it."""

    @property
    def wants_partials(self) -> bool:
        return self.on_partial is not None and bool(self.request.partial_images)

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


@runtime_checkable
class StreamingAdapter(Protocol):
    """An adapter that may ask its upstream for a streamed answer (read as it arrives)."""

    def streams(self, call: ProviderCall) -> bool: ...


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
            stream=isinstance(self.adapter, StreamingAdapter) and self.adapter.streams(call),
            provider=self.name,
        )
