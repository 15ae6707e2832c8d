"""In-process tests of the real app (see :mod:`tests.inproc.gateway`): fast, and needing neither
PostgreSQL, Redis nor a subprocess.

``anyio_backend`` is module-scoped, so that one event loop serves a module's gateways (started by
module-scoped fixtures) and its tests.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"
