"""The dashboard's session cookie behind a proxy that ends TLS, on a gateway of its own (one
embedded gateway runs in a process at a time, so it cannot share ``test_dashboard.py``'s module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inproc.gateway import running_gateway
from tests.inproc.test_dashboard import login

pytestmark = pytest.mark.anyio


async def test_behind_an_https_proxy_the_cookie_is_secure(tmp_path: Path) -> None:
    """A gateway whose public URL is HTTPS (a proxy ends TLS in front of it) sends the cookie only
    over HTTPS, and takes a login whose Origin is that public URL."""
    async with running_gateway(tmp_path, public_url="https://images.example.com") as gateway:
        key = await gateway.create_key("behind-proxy")
        answer = await login(gateway, key.secret, Origin="https://images.example.com")
        assert answer.status_code == 303
        assert "Secure" in answer.headers["set-cookie"] and "HttpOnly" in answer.headers["set-cookie"]
        refused = await login(gateway, key.secret, Origin="http://images.example.com")
        assert refused.status_code == 403
