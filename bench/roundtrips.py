"""The API's database work per synchronous request, counted rather than timed (so it holds on a
busy machine): the embedded app in this process (tests/inproc/gateway.py), on SQLite or on a
fresh PostgreSQL database, ``--requests`` synchronous ``n=1`` requests after a warm-up.

Prints, per request: the SQL statements the API ran, the pings on connection checkout, and on
PostgreSQL the transactions ``pg_stat_database`` counted (the in-process worker's included).

    .venv/bin/python -m bench.roundtrips --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import tests.inproc.gateway as inproc
from core.db import sync_url
from tests.harness import PG_ADMIN_URL, create_database, database_url, drop_databases

BODY = {"model": "demo", "prompt": "round trips", "size": "64x64"}


async def count(requests: int, postgres: bool) -> dict[str, float]:
    apps: list[Any] = []
    build = inproc.create_embedded_app

    def capture(config: Any) -> Any:
        apps.append(build(config))
        return apps[-1]

    inproc.create_embedded_app = capture
    created = [create_database("imagegate_roundtrips", PG_ADMIN_URL)] if postgres else []
    settings = {"database_url": database_url(created[0])} if created else {}
    try:
        async with inproc.running_gateway(Path(tempfile.mkdtemp()), **settings) as gateway:
            key = await gateway.create_key()
            for _ in range(2):  # the key in the auth cache, the pools filled
                assert (await gateway.generate(key, BODY)).status_code == 200
            engine = apps[-1].state.imagegate.engine.sync_engine
            counts = {"statements": 0.0, "pings": 0.0}

            def statement(*_: Any) -> None:
                counts["statements"] += 1

            sa.event.listen(engine, "before_cursor_execute", statement)
            ping = engine.dialect.do_ping

            def counted_ping(connection: Any) -> bool:
                counts["pings"] += 1
                return bool(ping(connection))

            engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]
            url = gateway.settings.resolved_database_url
            before = _transactions(url) if postgres else 0
            for _ in range(requests):
                assert (await gateway.generate(key, BODY)).status_code == 200
            if postgres:
                await asyncio.sleep(1)  # the worker's last record
                counts["pg_transactions"] = _transactions(url) - before - 1  # less this read's own
        return {name: value / requests for name, value in counts.items()}
    finally:
        inproc.create_embedded_app = build
        drop_databases(created, PG_ADMIN_URL)


def _transactions(url: str) -> int:
    engine = sa.create_engine(sync_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")) or 0)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="a fresh database on 127.0.0.1:5432")
    args = parser.parse_args()
    print({name: round(value, 2) for name, value in asyncio.run(count(args.requests, args.postgres)).items()})


if __name__ == "__main__":
    main()
