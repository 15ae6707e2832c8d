"""Vertex AI OAuth for real: google-auth signs a JWT for the fake upstream's token endpoint, the
token is reused while fresh, renewed ahead of its expiry, and renewed once when Vertex says 401."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ServiceUnavailableError
from core.generation import AppliedParams, GenerationRequest
from tests.fakes.upstream import FakeUpstream
from worker.providers.base import HttpProvider, ProviderCall
from worker.providers.http import RetryPolicy, UpstreamClient
from worker.providers.vertex import VertexAuth, VertexGeminiAdapter

pytestmark = pytest.mark.anyio


def _account(fake: FakeUpstream, tmp_path: Path) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(fake.service_account_info("test-project")))
    return path


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(token_ttl_s=3600).start()
    yield upstream
    upstream.stop()


async def test_a_fresh_token_is_reused(fake: FakeUpstream, tmp_path: Path) -> None:
    auth = VertexAuth(_account(fake, tmp_path))
    first, second = await auth.headers(), await auth.headers()
    assert first == second and first["Authorization"].startswith("Bearer ya29.")
    assert fake.count("token") == 1


async def test_a_token_close_to_its_expiry_is_renewed_before_use(tmp_path: Path) -> None:
    # 60 s left is inside google-auth's refresh window: every use gets a new token in advance
    with FakeUpstream(token_ttl_s=60).start() as fake:
        auth = VertexAuth(_account(fake, tmp_path))
        first, second = await auth.headers(), await auth.headers()
        assert first != second
        assert fake.count("token") == 2
        assert fake.violations == []


def _vertex_provider(fake: FakeUpstream, auth: VertexAuth) -> HttpProvider:
    client = UpstreamClient(connect_timeout_s=5, read_timeout_s=30, policy=RetryPolicy(max_attempts=2))
    adapter = VertexGeminiAdapter(project="test-project", location="global", version="v1")
    return HttpProvider("vertex_gemini", adapter, client, fake.vertex_base_url, auth.headers, auth.invalidate)


def _call() -> ProviderCall:
    applied = AppliedParams(model="vertex/gemini-3-pro-image", provider="vertex_gemini",
                            upstream_model="gemini-3-pro-image", quality="auto", output_format="png",
                            aspect_ratio="1:1", image_size="1K", width=1024, height=1024)
    return ProviderCall(GenerationRequest(prompt="a token refresh"), applied, [0])


async def test_a_401_renews_the_token_once_and_the_call_succeeds(fake: FakeUpstream, tmp_path: Path) -> None:
    auth = VertexAuth(_account(fake, tmp_path))
    provider = _vertex_provider(fake, auth)
    assert len(await provider.generate(_call())) == 1
    fake.expire_tokens()  # the upstream now refuses the cached token
    images = await provider.generate(_call())
    assert images[0].width == 1024
    assert [c.status for c in fake.calls if c.endpoint == "vertex_gemini"] == [200, 401, 200]
    assert fake.count("token") == 2
    assert fake.violations == []
    await provider.client.aclose()


async def test_calls_that_need_a_token_at_once_share_one_refresh(fake: FakeUpstream, tmp_path: Path) -> None:
    """The token is refreshed on a thread (google-auth blocks), once, however many calls wait."""
    auth = VertexAuth(_account(fake, tmp_path))
    headers = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert len({h["Authorization"] for h in headers}) == 1
    assert fake.count("token") == 1


async def test_an_unreachable_token_endpoint_is_a_clear_route_failure(fake: FakeUpstream, tmp_path: Path) -> None:
    info = fake.service_account_info("test-project")
    info["token_uri"] = "http://127.0.0.1:9/token"  # nothing listens there
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(info))
    with pytest.raises(ServiceUnavailableError) as caught:
        await VertexAuth(path).headers()
    assert "access token" in caught.value.message
    assert info["private_key"] not in caught.value.message
