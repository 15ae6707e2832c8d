"""Budgets on PostgreSQL through the embedded app in this process: a key with a monthly budget is
held in the submit's one statement, its month's charges counted on its row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.billing.ledger import month_of
from core.models.types import utcnow
from tests.inproc.gateway import ADMIN_KEY, DEMO_HOLD, DEMO_PRICES, running_gateway, write_toml

pytestmark = pytest.mark.anyio


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    return write_toml(tmp_path / "prices.toml", DEMO_PRICES)


async def test_a_monthly_budget_on_postgresql_is_held_in_the_submits_one_statement(
    tmp_path: Path, prices_file: Path, make_pg_database: Callable[[], str],
) -> None:
    """The job, its images, the reserve within both budgets and the hold row: one statement, no
    read of the month's spend; the month's charges are counted on the key row as images are."""
    async with running_gateway(tmp_path, prices_file=prices_file, database_url=make_pg_database()) as gw:
        key = await gw.create_key(monthly_budget_usd="0.12")
        engine = gw.app.state.imagegate.engine.sync_engine
        statements: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))

        fits = await gw.generate(key, {"model": "demo", "prompt": "two this month", "n": 2, "size": "64x64"})
        assert fits.status_code == 200, fits.text
        submits = [s for s in statements if "INSERT INTO jobs" in s]
        assert len(submits) == 1 and "UPDATE api_keys" in submits[0] and "INSERT INTO ledger_entries" in submits[0]
        assert not [s for s in statements if "key_spend" in s and s.lstrip().upper().startswith("SELECT")]
        [row] = gw.rows("SELECT charged_month, month_charged_micros FROM api_keys WHERE id = :k", k=key.id)
        assert row == {"charged_month": month_of(utcnow()), "month_charged_micros": 2 * DEMO_HOLD}

        before = gw.count_rows()
        refused = await gw.generate(key, {"model": "demo", "prompt": "a third", "size": "64x64"})
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "insufficient_quota" and "monthly budget of $0.12" in error["message"]
        assert gw.count_rows() == before and gw.committed(key) == 2 * DEMO_HOLD

        raised = await gw.http.patch(f"/admin/keys/{key.id}", json={"monthly_budget_usd": "1"},
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert raised.status_code == 200, raised.text
        # the budgets are read on the key's row by the reserve: the key as cached needs no refresh
        assert (await gw.generate(key, {"model": "demo", "prompt": "now it fits", "size": "64x64"})).status_code == 200
