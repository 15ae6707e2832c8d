"""Billing through HTTP with a priced model, on the embedded app in this process: the demo model
is given a price by an operator prices file (``IMAGEGATE_PRICES_FILE``), and every amount is
checked to the micro-dollar in the SQLite file: a job's hold, the charge and the release of each
delivered image, markups, budgets and the usage report; and a gateway whose prices leave an offered
model out does not start. ``test_billing_queued.py`` follows holds of queued and canceled images."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.inproc.gateway import (
    ADMIN_KEY,
    DEMO_HOLD,
    DEMO_PRICES,
    DEMO_UPSTREAM_MICROS,
    Gateway,
    running_gateway,
    write_toml,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def prices_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toml(tmp_path_factory.mktemp("prices") / "prices.toml", DEMO_PRICES)


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory, prices_file: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path_factory.mktemp("billing"), prices_file=prices_file) as gateway:
        yield gateway


async def test_hold_at_submit_charge_per_image_and_release(gw: Gateway) -> None:
    key = await gw.create_key()
    response = await gw.generate(key, {"model": "demo", "prompt": "three priced", "n": 3, "size": "64x64"})
    assert response.status_code == 200, response.text
    job_id = response.headers["x-imagegate-job-id"]
    assert response.headers["x-imagegate-cost"] == "0.150000"

    assert gw.amounts(key) == {"hold": [3 * DEMO_HOLD], "charge": [DEMO_HOLD] * 3, "release": [-DEMO_HOLD] * 3}
    ledger = gw.ledger(key)
    assert {r["job_id"] for r in ledger} == {job_id}
    images = gw.rows("SELECT id, cost_micros, upstream_cost_micros FROM job_images WHERE job_id = :j", j=job_id)
    assert all((i["cost_micros"], i["upstream_cost_micros"]) == (DEMO_HOLD, DEMO_UPSTREAM_MICROS) for i in images)
    # each image has its charge and its release
    assert sorted(r["job_image_id"] for r in ledger if r["kind"] == "charge") == sorted(i["id"] for i in images)
    assert sorted(r["job_image_id"] for r in ledger if r["kind"] == "release") == sorted(i["id"] for i in images)
    charge = next(r for r in ledger if r["kind"] == "charge")
    assert charge["upstream_cost_micros"] == DEMO_UPSTREAM_MICROS
    [job] = gw.rows("SELECT cost_micros, hold_per_image_micros FROM jobs WHERE id = :j", j=job_id)
    assert job == {"cost_micros": 3 * DEMO_HOLD, "hold_per_image_micros": DEMO_HOLD}
    assert gw.committed(key) == sum(r["amount_micros"] for r in ledger) == 3 * DEMO_HOLD

    view = (await gw.http.get(f"/v1/jobs/{job_id}", headers=key.auth)).json()
    assert view["cost_usd"] == "0.150000" and {i["cost_usd"] for i in view["images"]} == {"0.050000"}


async def test_a_key_markup_wins_over_the_default(gw: Gateway) -> None:
    key = await gw.create_key(markup="2")
    response = await gw.generate(key, {"model": "demo", "prompt": "marked up", "size": "64x64"})
    assert response.status_code == 200 and response.headers["x-imagegate-cost"] == "0.080000"
    assert gw.amounts(key) == {"hold": [80_000], "charge": [80_000], "release": [-80_000]}


async def test_a_budget_refuses_a_request_whose_hold_does_not_fit_and_stores_nothing(gw: Gateway) -> None:
    key = await gw.create_key(budget_usd="0.12")
    before = gw.count_rows()
    refused = await gw.generate(key, {"model": "demo", "prompt": "too dear", "n": 3, "size": "64x64"})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "$0.12" in error["message"]
    assert gw.count_rows() == before and gw.committed(key) == 0

    assert (await gw.generate(key, {"model": "demo", "prompt": "fits", "n": 2, "size": "64x64"})).status_code == 200
    assert gw.committed(key) == 2 * DEMO_HOLD
    refused_again = await gw.generate(key, {"model": "demo", "prompt": "one more", "size": "64x64"})
    assert refused_again.status_code == 429  # $0.10 spent, $0.05 more does not fit $0.12
    assert gw.committed(key) == 2 * DEMO_HOLD
    key_view = await gw.http.get(f"/admin/keys/{key.id}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert key_view.json()["committed_usd"] == "0.100000"


async def test_the_usage_report_equals_the_ledger(gw: Gateway) -> None:
    key = await gw.create_key(markup="1.5")
    for n in (2, 1):
        response = await gw.generate(key, {"model": "demo", "prompt": "count", "n": n, "size": "64x64"})
        assert response.status_code == 200
    charged = sum(gw.amounts(key)["charge"])
    assert charged == 3 * 60_000 == sum(r["amount_micros"] for r in gw.ledger(key))
    report = (await gw.http.get("/v1/usage", headers=key.auth)).json()
    totals = report["totals"]
    assert Decimal(totals["billed_usd"]) * 1_000_000 == charged
    assert "upstream_cost_usd" not in totals and "margin_usd" not in totals  # the reseller's, not the key's
    assert totals["images_succeeded"] == 3 and totals["images_failed"] == 0
    rows = [(r["model"], r["images_succeeded"], r["billed_usd"]) for r in report["data"]]
    assert rows == [("demo-image", 3, "0.180000")]
    admin = (await gw.http.get("/admin/usage", params={"key": key.id},
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()["totals"]
    assert Decimal(admin["billed_usd"]) * 1_000_000 == charged
    assert Decimal(admin["upstream_cost_usd"]) * 1_000_000 == 3 * DEMO_UPSTREAM_MICROS
    assert Decimal(admin["margin_usd"]) * 1_000_000 == charged - 3 * DEMO_UPSTREAM_MICROS


async def test_an_offered_fallback_without_a_price_stops_the_gateway_from_starting(tmp_path: Path) -> None:
    """``core.billing.ledger.quote`` leaves an unpriced fallback out of a job's routes, but a
    gateway never gets there: it refuses to start while an offered model has no price."""
    models = write_toml(tmp_path / "models.toml", """
[[models]]
id = "demo-primary"
provider = "demo"
upstream_model = "demo"
owned_by = "test"
created = 1795219200
fallbacks = ["demo-backup"]
[models.capabilities]
planner = "free_size"

[[models]]
id = "demo-backup"
provider = "demo"
upstream_model = "demo"
owned_by = "test"
created = 1795219200
[models.capabilities]
planner = "free_size"
""")
    prices = write_toml(tmp_path / "prices.toml", """
replace = true

[[models]]
id = "demo-image"
source = "test"
effective = 2026-11-21
per_image = { "*" = { "*" = "0.01" } }

[[models]]
id = "demo-primary"
source = "test"
effective = 2026-11-21
per_image = { "*" = { "*" = "0.02" } }
""")
    with pytest.raises(RuntimeError, match=r"no price for the offered models demo-backup \(add them"):
        async with running_gateway(tmp_path, models_file=models, prices_file=prices):
            pass
