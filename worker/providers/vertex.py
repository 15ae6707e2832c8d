"""Vertex AI variants of Gemini and Imagen
(https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference,
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/imagen-api).

Same bodies as the Gemini API (role always set, JPEG output options allowed), at
``{base}/{version}/projects/{project}/locations/{location}/publishers/google/models/{model}:...``
with an OAuth access token from a service-account file. google-auth signs the JWT and refreshes
the token before it expires (on a thread: its transport blocks), one refresh at a time however
many calls need the token; a 401 forces one refresh and one more try.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from google.auth.transport.urllib3 import Request as Urllib3Request
from google.oauth2 import service_account
from urllib3 import PoolManager

from core.errors import ServiceUnavailableError
from core.generation import ProviderImage
from worker.providers.base import ProviderCall
from worker.providers.gemini import build_body as gemini_body
from worker.providers.gemini import parse_generate_content
from worker.providers.google_errors import GoogleErrors
from worker.providers.imagen import build_body as imagen_body
from worker.providers.imagen import parse_predict

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class VertexAuth:
    """OAuth access tokens for a service account, for the calls of one event loop."""

    def __init__(self, credentials_file: Path) -> None:
        info = json.loads(Path(credentials_file).read_text("utf-8"))
        # google-auth has no type annotations; the ignores are for mypy --strict
        from_info = service_account.Credentials.from_service_account_info
        self._credentials = from_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call, unused-ignore]
        pool = PoolManager(num_pools=2, timeout=30.0)
        self._http = Urllib3Request(pool)  # type: ignore[no-untyped-call, unused-ignore]
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        # `valid` is False within google-auth's refresh window before expiry, so the token is
        # renewed ahead of time, never used stale
        if not self._credentials.valid:
            async with self._lock:
                if not self._credentials.valid:  # another call may have refreshed it meanwhile
                    await self._refresh()
        return {"Authorization": f"Bearer {self._credentials.token}"}

    async def invalidate(self) -> None:
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            await asyncio.to_thread(self._credentials.refresh, self._http)
        except Exception as exc:  # google.auth.exceptions.* carry the token endpoint's answer
            raise ServiceUnavailableError(
                f"Could not obtain a Vertex AI access token ({type(exc).__name__})."
            ) from None


def vertex_model_url(base_url: str, *, version: str, project: str, location: str, model: str, method: str) -> str:
    return (f"{base_url}/{version}/projects/{project}/locations/{location}/publishers/google/models/"
            f"{model}:{method}")


class VertexGeminiAdapter(GoogleErrors):
    label = "Vertex AI"

    def __init__(self, *, project: str, location: str, version: str) -> None:
        self.project, self.location, self.version = project, location, version

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        url = vertex_model_url(base_url, version=self.version, project=self.project, location=self.location,
                               model=call.applied.upstream_model, method="generateContent")
        return httpx.Request("POST", url, headers=headers, json=gemini_body(call, vertex=True))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        return parse_generate_content(response, call, label=self.label)


class VertexImagenAdapter(VertexGeminiAdapter):
    label = "Vertex AI Imagen"

    def build_request(self, call: ProviderCall, *, base_url: str, headers: dict[str, str]) -> httpx.Request:
        url = vertex_model_url(base_url, version=self.version, project=self.project, location=self.location,
                               model=call.applied.upstream_model, method="predict")
        return httpx.Request("POST", url, headers=headers, json=imagen_body(call))

    def parse_response(self, response: httpx.Response, call: ProviderCall) -> list[ProviderImage]:
        return parse_predict(response, call, label=self.label)
