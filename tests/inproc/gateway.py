"""The real app in this process, for tests that need no PostgreSQL, Redis or subprocess.

:func:`running_gateway` builds the app as ``imagegate serve`` does in embedded mode
(``imagegate.embedded.create_embedded_app``: a real Celery worker on kombu's in-memory transport,
its tasks on the test's event loop, SQLite in a temporary data dir, migrated by
``core.migrate.upgrade_head``), runs its lifespan, and drives it through ``httpx.ASGITransport``.
Its settings are all given explicitly (:func:`explicit_settings`), so neither the environment nor
a ``.env`` file changes them. Keys are made through the admin API and used as the SDKs use them
(``Authorization: Bearer``). Tests check behaviour through HTTP, and read the SQLite file for
exact amounts.

Each test module starts its gateways once (module-scoped fixtures) and makes keys of its own, so
tests of a module share a gateway but not a key.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import sqlalchemy as sa

from core.config import Settings
from core.db import sync_url
from core.migrate import upgrade_head
from imagegate.embedded import create_embedded_app

ADMIN_KEY = "inproc-admin-key"
TERMINAL = frozenset({"succeeded", "partial", "failed", "canceled"})
TABLES = ("api_keys", "jobs", "job_images", "ledger_entries")


def explicit_settings(**values: Any) -> Settings:
    """Settings with every field given: ``values``, and the default of each other field."""
    defaults = {name: field.get_default(call_default_factory=True) for name, field in Settings.model_fields.items()}
    return Settings(**{**defaults, **values}, _env_file=None)


@dataclass(frozen=True)
class Key:
    id: str
    name: str
    secret: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass
class Gateway:
    """A running app: its settings, an HTTP client on it, and its database file."""

    settings: Settings
    http: httpx.AsyncClient
    engine: sa.Engine
    app: Any = None
    """The app itself, for tests that look at its state (``app.state.imagegate``)."""

    async def create_key(self, name: str | None = None, **limits: Any) -> Key:
        """A new API key with ``limits`` (the fields of ``POST /admin/keys``)."""
        name = name or f"key-{uuid.uuid4().hex[:10]}"
        response = await self.http.post("/admin/keys", json={"name": name, **limits},
                                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 201, response.text
        body = response.json()
        return Key(id=body["id"], name=name, secret=body["secret"])

    async def generate(self, key: Key, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post("/v1/images/generations", json=body, headers={**key.auth, **headers})

    async def poll(self, key: Key, job_id: str, *, until: frozenset[str] = TERMINAL,
                   timeout: float = 30) -> dict[str, Any]:
        """``GET /v1/jobs/{id}`` until its status is one of ``until``."""
        deadline = time.monotonic() + timeout
        while True:
            response = await self.http.get(f"/v1/jobs/{job_id}", headers=key.auth)
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            if job["status"] in until:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
            await anyio.sleep(0.02)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(sa.text(sql), params).mappings()]

    def count_rows(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}

    def ledger(self, key: Key) -> list[dict[str, Any]]:
        """The key's ledger rows, oldest first."""
        return self.rows("SELECT kind, amount_micros, upstream_cost_micros, job_id, job_image_id, model, pricing "
                         "FROM ledger_entries WHERE api_key_id = :k ORDER BY id", k=key.id)

    def amounts(self, key: Key) -> dict[str, list[int]]:
        """The key's ledger amounts by kind (hold, charge, release), oldest first."""
        found: dict[str, list[int]] = {}
        for row in self.ledger(key):
            found.setdefault(row["kind"], []).append(int(row["amount_micros"]))
        return found

    def committed(self, key: Key) -> int:
        return int(self.rows("SELECT committed_micros FROM api_keys WHERE id = :k", k=key.id)[0]["committed_micros"])


@contextlib.asynccontextmanager
async def running_gateway(tmp: Path, **settings: Any) -> AsyncIterator[Gateway]:
    """The embedded app on a fresh SQLite database in ``tmp``, its lifespan running; ``settings``
    are fields of :class:`core.config.Settings`."""
    config = explicit_settings(**{
        "data_dir": tmp / "data",
        "admin_key": ADMIN_KEY,
        # kombu's in-memory transport is shared by the whole process: a queue per gateway
        "queue": f"inproc-{uuid.uuid4().hex[:12]}",
        "worker_concurrency": 16,
        **settings,
    })
    upgrade_head(config)
    app = create_embedded_app(config)
    engine = sa.create_engine(sync_url(config.resolved_database_url))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://imagegate.test", timeout=60) as http:
                yield Gateway(settings=config, http=http, engine=engine, app=app)
    finally:
        engine.dispose()


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


DEMO_PRICES = """
[markup]
default = "1.25"

[[models]]
id = "demo-image"
source = "a test price for the demo model"
effective = 2026-11-21
per_image = { "*" = { "*" = "0.04" } }
"""
"""An operator prices file (``IMAGEGATE_PRICES_FILE``) giving the demo model a price, $0.04 an
image, and a default markup of 1.25."""
DEMO_UPSTREAM_MICROS = 40_000
DEMO_HOLD = 50_000
"""The hold per demo image under :data:`DEMO_PRICES`, in micro-dollars: $0.04 x 1.25 = $0.05.
Per-image prices are exact, so it is also what a delivered image is charged."""
