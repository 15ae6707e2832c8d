"""A gateway of :mod:`tests.inproc.gateway` for synchronous tests (hypothesis and schemathesis
drive plain functions): its lifespan and its HTTP client run on an event loop in a portal thread,
and each request is a blocking call into it. A request's exception reaches the test as it is:
what a server would answer with a 500 fails the test with its traceback."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from tests.inproc.gateway import ADMIN_KEY, Gateway, Key, running_gateway, write_toml

FAST_DEMO = """
# the demo model, small: an accepted request draws its images in milliseconds
[[models]]
id = "demo-image"
aliases = ["demo"]
provider = "demo"
upstream_model = "demo"
owned_by = "imagegate"
created = 1795219200
[models.capabilities]
planner = "free_size"
max_n = 3
size_min = 16
size_max = 96
max_pixels = 9216
max_ratio = 4.0
aspect_ratios = ["1:1", "3:2", "2:3", "16:9"]
long_side = { low = 32, medium = 48, standard = 48, auto = 48, high = 64, hd = 64 }
upstream_formats = ["png", "jpeg", "webp"]
transparent_background = true
edit = true
mask = true
max_input_images = 4
"""


@dataclass
class SyncGateway:
    gateway: Gateway
    portal: BlockingPortal
    key: Key
    """A real API key, made through the admin API."""

    @property
    def settings(self) -> Any:
        return self.gateway.settings

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(functools.partial(self.gateway.http.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    @property
    def auth(self) -> dict[str, str]:
        return self.key.auth

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def counts(self) -> dict[str, int]:
        """Rows of what a request leaves behind: keys, jobs, their images, ledger entries."""
        return self.gateway.count_rows()


@contextmanager
def portal_gateway(tmp: Path, **settings: Any) -> Iterator[SyncGateway]:
    """A running gateway in ``tmp`` (the demo model small, a few worker threads) and an API key."""
    tmp.mkdir(parents=True, exist_ok=True)
    settings = {"models_file": write_toml(tmp / "models.toml", FAST_DEMO), "worker_concurrency": 4,
                "log_level": "WARNING", **settings}
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
            running_gateway(tmp, **settings)) as gateway:
        yield SyncGateway(gateway=gateway, portal=portal, key=portal.call(gateway.create_key))
