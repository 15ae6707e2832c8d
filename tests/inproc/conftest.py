"""In-process tests of the real app (see :mod:`tests.inproc.gateway`): fast, and needing neither
PostgreSQL, Redis nor a subprocess.

``anyio_backend`` is module-scoped, so that one event loop serves a module's gateways (started by
module-scoped fixtures) and its tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.inproc.portal import SyncGateway, portal_gateway


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sync_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncGateway]:
    """A gateway for a module's synchronous tests (hypothesis, schemathesis), the demo model shrunk
    so that an accepted request completes in milliseconds; image URLs on 127.0.0.1 are fetched.
    Module-scoped, as every gateway here: a process runs one embedded worker at a time."""
    with portal_gateway(tmp_path_factory.mktemp("sync"), fetch_allow_hosts=["127.0.0.1"]) as running:
        yield running
