"""Billing for real: prices, the ledger, hard budgets under concurrency, rate limits, idempotent
submits and the usage reports, on PostgreSQL with a real worker and the fake upstream."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.test_jobs import poll
from tests.fakes.upstream import FakeUpstream
from tests.harness import ADMIN_KEY, Stack

pytestmark = pytest.mark.integration

ADMIN = ADMIN_KEY
MICRO = Decimal("1000000")


@pytest.fixture(scope="module")
def admin(gw: Stack) -> httpx.Client:
    assert gw.env.get("IMAGEGATE_ADMIN_KEY") == ADMIN
    return httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)


def new_key(admin: httpx.Client, name: str, **limits: Any) -> str:
    response = admin.post("/admin/keys", json={"name": name, **limits})
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def gen(gw: Stack, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/v1/images/generations", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}", **headers})


def rows(gw: Stack, sql: str, **params: Any) -> list[Any]:
    engine = gw.db()
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).mappings())
    finally:
        engine.dispose()


def key_id(gw: Stack, secret: str) -> str:
    found = rows(gw, "SELECT id FROM api_keys WHERE secret_hash = :h", h=hashlib.sha256(secret.encode()).hexdigest())
    return str(found[0]["id"])


def ledger_sum(gw: Stack, kid: str, kind: str | None = None) -> int:
    sql = "SELECT COALESCE(SUM(amount_micros), 0) AS s FROM ledger_entries WHERE api_key_id = :k"
    if kind:
        sql += " AND kind = :kind"
    return int(rows(gw, sql, k=kid, kind=kind)[0]["s"])


def by_hand(tokens: int, usd_per_million: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd_per_million) / MICRO


def test_a_gemini_image_is_billed_exactly_from_its_usage(
    gw: Stack, admin: httpx.Client, upstream: FakeUpstream
) -> None:
    secret = new_key(admin, "exact", markup="1.25")
    response = gen(gw, secret, {"model": "gemini-3-pro-image", "prompt": "an exact lighthouse"})
    assert response.status_code == 200, response.text
    job_id = response.headers["x-imagegate-job-id"]
    image = rows(gw, "SELECT * FROM job_images WHERE job_id = :j", j=job_id)[0]
    # Gemini 3 Pro Image list prices (https://ai.google.dev/gemini-api/docs/pricing):
    # $2/M input, $120/M image out, $12/M text out
    upstream_usd = (by_hand(image["input_tokens"], "2") + by_hand(image["output_image_tokens"], "120")
                    + by_hand(image["output_tokens"] - image["output_image_tokens"], "12"))
    upstream_micros = int((upstream_usd * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    billed_micros = int((upstream_usd * Decimal("1.25") * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert image["output_image_tokens"] == 1120 and image["input_tokens"] > 0
    assert image["upstream_cost_micros"] == upstream_micros
    assert image["cost_micros"] == billed_micros
    kid = key_id(gw, secret)
    assert ledger_sum(gw, kid) == billed_micros  # the hold is released in full
    assert ledger_sum(gw, kid, "charge") == billed_micros
    assert response.headers["x-imagegate-cost"] == f"{Decimal(billed_micros) / MICRO:.6f}"
    charge = rows(gw, "SELECT * FROM ledger_entries WHERE job_id = :j AND kind = 'charge'", j=job_id)[0]
    pricing = charge["pricing"] if isinstance(charge["pricing"], dict) else json.loads(charge["pricing"])
    assert pricing["markup"] == "1.25" and set(pricing["routes"]) == {"gemini-3-pro-image"}
    assert charge["upstream_cost_micros"] == upstream_micros


def test_ten_images_with_three_failed_bill_seven(gw: Stack, admin: httpx.Client, upstream: FakeUpstream) -> None:
    secret = new_key(admin, "seven-of-ten")
    upstream.add_fault("gemini", "status", status=400, times=3)
    response = gen(gw, secret, {"model": "gemini-3.1-flash-image", "prompt": "ten", "n": 10})
    assert response.status_code == 200 and len(response.json()["data"]) == 7
    job_id = response.headers["x-imagegate-job-id"]
    images = rows(gw, "SELECT status, cost_micros FROM job_images WHERE job_id = :j", j=job_id)
    delivered = sum(i["cost_micros"] for i in images if i["status"] == "succeeded")
    assert [i["status"] for i in images].count("succeeded") == 7
    assert all(i["cost_micros"] == 0 for i in images if i["status"] == "failed")
    kinds = rows(gw, "SELECT kind, COUNT(*) AS c, SUM(amount_micros) AS s FROM ledger_entries "
                     "WHERE job_id = :j GROUP BY kind", j=job_id)
    summary = {r["kind"]: (r["c"], int(r["s"])) for r in kinds}
    assert summary["charge"] == (7, delivered)
    assert summary["release"][0] == 10 and summary["hold"][0] == 1
    assert summary["hold"][1] + summary["release"][1] == 0
    assert ledger_sum(gw, key_id(gw, secret)) == delivered
    job = rows(gw, "SELECT cost_micros FROM jobs WHERE id = :j", j=job_id)[0]
    assert job["cost_micros"] == delivered


def test_concurrent_requests_cannot_overspend_the_budget(
    gw: Stack, admin: httpx.Client, upstream: FakeUpstream
) -> None:
    body = {"model": "gemini-3.1-flash-image", "prompt": "budget", "image_size": "512"}
    probe = new_key(admin, "budget-probe")
    job = httpx.post(f"{gw.base_url}/v1/jobs", headers={"Authorization": f"Bearer {probe}"}, json=body).json()
    probed = rows(gw, "SELECT hold_per_image_micros FROM jobs WHERE id = :j", j=job["id"])
    hold = int(probed[0]["hold_per_image_micros"])
    assert hold > 0
    poll(gw, probe, job["id"], until={"succeeded", "failed"})
    budget = Decimal(hold * 10) / MICRO
    secret = new_key(admin, "budget-ten", budget_usd=str(budget))
    upstream.reset()

    async def one(client: httpx.AsyncClient) -> int:
        response = await client.post("/v1/images/generations", json=body)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "insufficient_quota"
        return response.status_code

    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=120, limits=limits,
                                     headers={"Authorization": f"Bearer {secret}"}) as client:
            return await asyncio.gather(*[one(client) for _ in range(200)])

    statuses = asyncio.run(storm())
    assert statuses.count(200) <= 10 and set(statuses) <= {200, 429}
    assert statuses.count(200) >= 1
    kid = key_id(gw, secret)
    delivered = rows(gw, "SELECT COUNT(*) AS c FROM job_images i JOIN jobs j ON j.id = i.job_id "
                         "WHERE j.api_key_id = :k AND i.status = 'succeeded'", k=kid)[0]["c"]
    assert delivered == statuses.count(200) <= 10
    assert upstream.count("gemini") == delivered
    assert ledger_sum(gw, kid) <= hold * 10
    assert ledger_sum(gw, kid) == ledger_sum(gw, kid, "charge")


def test_rate_limit_answers_429_with_retry_after(gw: Stack, admin: httpx.Client) -> None:
    secret = new_key(admin, "rpm-two", rpm=2)
    body = {"model": "demo", "prompt": "fast", "size": "64x64"}
    assert [gen(gw, secret, body).status_code for _ in range(2)] == [200, 200]
    refused = gen(gw, secret, body)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_images_per_minute_counts_images(gw: Stack, admin: httpx.Client) -> None:
    secret = new_key(admin, "ipm-five", images_per_minute=5)
    assert gen(gw, secret, {"model": "demo", "prompt": "four", "n": 4, "size": "64x64"}).status_code == 200
    assert gen(gw, secret, {"model": "demo", "prompt": "two", "n": 2, "size": "64x64"}).status_code == 429
    assert gen(gw, secret, {"model": "demo", "prompt": "one", "n": 1, "size": "64x64"}).status_code == 200


def test_idempotent_replay_makes_one_upstream_call_and_one_charge(
    gw: Stack, admin: httpx.Client, upstream: FakeUpstream
) -> None:
    secret = new_key(admin, "idempotent")
    body = {"model": "gemini-3.1-flash-image", "prompt": "only once"}
    first = gen(gw, secret, body, **{"Idempotency-Key": "order-42"})
    second = gen(gw, secret, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == second.status_code == 200
    assert first.headers["x-imagegate-job-id"] == second.headers["x-imagegate-job-id"]
    assert first.json()["data"] == second.json()["data"]
    assert upstream.count("gemini") == 1
    kid = key_id(gw, secret)
    assert len(rows(gw, "SELECT id FROM ledger_entries WHERE api_key_id = :k AND kind = 'charge'", k=kid)) == 1
    conflict = gen(gw, secret, {**body, "prompt": "something else"}, **{"Idempotency-Key": "order-42"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"


def test_a_key_limited_to_some_models(gw: Stack, admin: httpx.Client) -> None:
    secret = new_key(admin, "demo-only", models=["demo-image"])
    assert gen(gw, secret, {"model": "demo", "prompt": "ok", "size": "64x64"}).status_code == 200
    refused = gen(gw, secret, {"model": "gemini-3-pro-image", "prompt": "no"})
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"


def test_usage_reports_equal_the_ledger(gw: Stack, admin: httpx.Client, upstream: FakeUpstream) -> None:
    secret = new_key(admin, "reported")
    for body in ({"model": "gemini-3-pro-image", "prompt": "a", "n": 2},
                 {"model": "gpt-image-1.5", "prompt": "b", "size": "1024x1536", "quality": "low"},
                 {"model": "demo", "prompt": "c", "size": "64x64"}):
        assert gen(gw, secret, body).status_code == 200
    kid = key_id(gw, secret)
    charged = ledger_sum(gw, kid, "charge")
    assert charged == ledger_sum(gw, kid) > 0

    mine = httpx.get(f"{gw.base_url}/v1/usage", headers={"Authorization": f"Bearer {secret}"}).json()
    assert Decimal(mine["totals"]["billed_usd"]) * MICRO == charged
    assert mine["totals"]["images_succeeded"] == 4
    assert {r["model"] for r in mine["data"]} == {"gemini-3-pro-image", "gpt-image-1.5", "demo-image"}
    # a key sees what it pays, never what the upstream cost the reseller or the margin
    for shown in (mine["totals"], *mine["data"]):
        assert "upstream_cost_usd" not in shown and "margin_usd" not in shown
    mine_csv = httpx.get(f"{gw.base_url}/v1/usage", params={"format": "csv"},
                         headers={"Authorization": f"Bearer {secret}"}).text
    assert mine_csv.splitlines()[0].split(",") == ["day", "model", "images_succeeded", "images_failed",
                                                    "input_tokens", "output_tokens", "billed_usd"]

    admin_json = admin.get("/admin/usage", params={"key": "reported", "group_by": "key,model,size,quality"}).json()
    assert Decimal(admin_json["totals"]["billed_usd"]) * MICRO == charged
    upstream_total = sum(int(r["upstream_cost_micros"]) for r in rows(
        gw, "SELECT upstream_cost_micros FROM ledger_entries WHERE api_key_id = :k AND kind = 'charge'", k=kid))
    assert Decimal(admin_json["totals"]["upstream_cost_usd"]) * MICRO == upstream_total
    assert Decimal(admin_json["totals"]["margin_usd"]) * MICRO == charged - upstream_total

    text = admin.get("/admin/usage", params={"key": "reported", "format": "csv"}).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert sum(Decimal(r["billed_usd"]) for r in table) * MICRO == charged
    assert sum(int(r["images_succeeded"]) for r in table) == 4

    cli = json.loads(gw.cli("usage", "--key", "reported", "--format", "json"))
    assert Decimal(cli["totals"]["billed_usd"]) * MICRO == charged


def test_admin_api_needs_the_admin_key(gw: Stack) -> None:
    assert httpx.get(f"{gw.base_url}/admin/keys").status_code == 401
    assert httpx.get(f"{gw.base_url}/admin/keys", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_budget_refusals_in_each_dialect(gw: Stack, admin: httpx.Client) -> None:
    secret = new_key(admin, "broke", budget_usd="0")
    auth = {"Authorization": f"Bearer {secret}"}
    openai_answer = httpx.post(f"{gw.base_url}/v1/images/generations", headers=auth,
                               json={"model": "gemini-3-pro-image", "prompt": "x"})
    assert openai_answer.status_code == 429
    assert openai_answer.json()["error"]["type"] == "insufficient_quota"
    anthropic_answer = httpx.post(f"{gw.base_url}/v1/messages", headers={**auth, "anthropic-version": "2023-06-01"},
                                  json={"model": "gemini-3-pro-image", "max_tokens": 10,
                                        "messages": [{"role": "user", "content": "x"}]})
    assert anthropic_answer.status_code == 402
    assert anthropic_answer.json()["error"]["type"] == "billing_error"
    google_answer = httpx.post(f"{gw.base_url}/v1beta/models/gemini-3-pro-image:generateContent", headers=auth,
                               json={"contents": [{"parts": [{"text": "x"}]}]})
    assert google_answer.status_code == 429
    assert google_answer.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "RetryInfo" not in google_answer.text


def test_a_monthly_budget_is_a_hard_cap_too(gw: Stack, admin: httpx.Client, upstream: FakeUpstream) -> None:
    body = {"model": "gemini-3.1-flash-image", "prompt": "monthly", "image_size": "512"}
    probe = new_key(admin, "monthly-probe")
    assert gen(gw, probe, body).status_code == 200
    hold = int(rows(gw, "SELECT hold_per_image_micros FROM jobs j JOIN api_keys k ON k.id = j.api_key_id "
                        "WHERE k.name = 'monthly-probe'")[0]["hold_per_image_micros"])
    secret = new_key(admin, "monthly-one", monthly_budget_usd=str(Decimal(hold * 3 // 2) / MICRO))
    assert gen(gw, secret, body).status_code == 200
    refused = gen(gw, secret, body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota" and "monthly" in refused.json()["error"]["message"]
    # raising the cap through the admin API lets the key go on
    assert admin.patch("/admin/keys/monthly-one", json={"monthly_budget_usd": "100"}).status_code == 200
    assert gen(gw, secret, body).status_code == 200
