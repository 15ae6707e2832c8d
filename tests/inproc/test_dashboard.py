"""The usage dashboard (``/dashboard``) on the embedded app in this process, its upstreams the fake
upstream: the page's charts, totals and tables say what ``GET /v1/usage`` and ``GET /admin/usage``
say for the same days, a key sees its own usage only and never the upstream's cost or the margin,
and a key reaches the page in a header or through the login form, never in a URL or in the cookie.
``tests/e2e/test_dashboard_browser.py`` opens the same page in Chromium."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from api.dashboard import session
from api.dashboard.session import COOKIE, SESSION_TTL_S, Viewer
from core.signing import KEY_FILE
from tests.dashboard_page import Page, read
from tests.fakes.upstream import FakeUpstream
from tests.inproc.gateway import ADMIN_KEY, Gateway, Key, running_gateway

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
GROUPS = ("model", "size", "quality")


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> AsyncIterator[Gateway]:
    tmp = tmp_path_factory.mktemp("dashboard")
    async with running_gateway(tmp, **fake.gateway_settings(tmp)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
async def keys(gw: Gateway, fake: FakeUpstream) -> dict[str, Key]:
    """Two keys' usage: alpha's Gemini images (one of four failed) and low-quality GPT images,
    beta's medium-quality GPT image and a demo image."""
    fake.reset()
    alpha = await gw.create_key("alpha", budget_usd="5", monthly_budget_usd="2")
    beta = await gw.create_key("beta", markup="2")
    fake.add_fault("gemini", "status", status=400, times=1)
    requests = [
        (alpha, {"model": "gemini-3.1-flash-image", "prompt": "four lighthouses", "n": 4}),
        (alpha, {"model": "gpt-image-1.5", "prompt": "two foxes", "n": 2, "quality": "low"}),
        (beta, {"model": "gpt-image-1.5", "prompt": "one owl", "quality": "medium"}),
        (beta, {"model": "demo-image", "prompt": "a demo", "size": "64x64"}),
    ]
    for key, body in requests:
        response = await gw.generate(key, body)
        assert response.status_code == 200, response.text
    fake.reset()
    return {"alpha": alpha, "beta": beta}


def days() -> tuple[str, str]:
    """The dashboard's default period: the 30 UTC days to today."""
    today = datetime.now(UTC).date()
    return (today - timedelta(days=29)).isoformat(), today.isoformat()


async def page_of(gw: Gateway, headers: dict[str, str], **params: str) -> Page:
    response = await gw.http.get("/dashboard", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return read(response.text)


async def usage(gw: Gateway, path: str, headers: dict[str, str], group_by: str, **params: str) -> dict[str, Any]:
    since, until = days()
    params = {"since": since, "until": until, "group_by": group_by, **params}
    response = await gw.http.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def login(gw: Gateway, secret: str, **headers: str) -> httpx.Response:
    """Post the login form; the client keeps no cookie (each test sends the one it means to)."""
    response = await gw.http.post("/dashboard/login", data={"key": secret}, headers=headers)
    gw.http.cookies.clear()
    return response


async def with_cookie(gw: Gateway, token: str, path: str = "/dashboard", method: str = "GET") -> httpx.Response:
    return await gw.http.request(method, path, headers={"Cookie": f"{COOKIE}={token}"})


def assert_page_matches(page: Page, reports: dict[str, dict[str, Any]], metrics: tuple[str, ...]) -> None:
    """The page's charts, totals and tables equal the usage reports by day and by each group."""
    by_day = {row["day"]: row for row in reports["day"]["data"]}
    assert len(page.bars["spend"]) == 30 and set(by_day) <= set(page.bars["spend"])
    for day, bar in page.bars["spend"].items():
        assert bar == {"billed_usd": by_day[day]["billed_usd"] if day in by_day else "0.000000"}, day
        counts = page.bars["images"][day]
        row = by_day.get(day, {"images_succeeded": 0, "images_failed": 0})
        assert counts == {"images_succeeded": str(row["images_succeeded"]), "images_failed": str(row["images_failed"])}
    totals = reports["day"]["totals"]
    for metric in metrics:
        assert page.totals[metric] == str(totals[metric]), metric
    for group in GROUPS:
        shown = page.tables[group]
        expected = {str(r[group]) if r[group] is not None else "": r for r in reports[group]["data"]}
        assert set(shown) == set(expected), group
        for name, row in expected.items():
            assert {m: shown[name][m] for m in metrics} == {m: str(row[m]) for m in metrics}, (group, name)


async def test_a_keys_page_shows_what_its_usage_api_returns_and_no_upstream_cost(
    gw: Gateway, keys: dict[str, Key]
) -> None:
    alpha = keys["alpha"]
    response = await gw.http.get("/dashboard", headers=alpha.auth)
    page = read(response.text)
    assert page.viewer == "key"
    reports = {g: await usage(gw, "/v1/usage", alpha.auth, g) for g in ("day", *GROUPS)}
    assert reports["day"]["totals"]["images_succeeded"] == 5 and reports["day"]["totals"]["images_failed"] == 1
    assert_page_matches(page, reports, ("images_succeeded", "images_failed", "billed_usd"))
    assert page.totals["failure_rate"] == "16.7%"  # 1 of 6
    assert page.tables["failures"]["gemini-3.1-flash-image"]["failure_rate"] == "25.0%"
    # what the reseller pays upstream and keeps is the operator's, as in /v1/usage
    assert "upstream_cost_usd" not in page.totals and "margin_usd" not in page.totals
    assert "Upstream" not in response.text and "Margin" not in response.text and "key" not in page.tables


async def test_the_admin_page_shows_what_the_admin_usage_api_returns(gw: Gateway, keys: dict[str, Key]) -> None:
    page = await page_of(gw, ADMIN)
    assert page.viewer == "admin"
    reports = {g: await usage(gw, "/admin/usage", ADMIN, g) for g in ("day", *GROUPS)}
    metrics = ("images_succeeded", "images_failed", "billed_usd", "upstream_cost_usd", "margin_usd")
    assert_page_matches(page, reports, metrics)
    by_key = (await usage(gw, "/admin/usage", ADMIN, "key"))["data"]
    assert {name: row["billed_usd"] for name, row in page.tables["key"].items()} == {
        r["key"]: r["billed_usd"] for r in by_key
    }
    billed = [row["billed_usd"] for row in page.tables["key"].values()]
    assert billed == sorted(billed, key=float, reverse=True)  # top keys first

    # the admin's view of one key is that key's /admin/usage
    scoped = await page_of(gw, ADMIN, key_name="beta")
    reports = {g: await usage(gw, "/admin/usage", ADMIN, g, key="beta") for g in ("day", *GROUPS)}
    assert_page_matches(scoped, reports, metrics)
    assert "key" not in scoped.tables


async def test_a_key_sees_only_its_own_jobs_images_and_budget(gw: Gateway, keys: dict[str, Key]) -> None:
    for name, key in keys.items():
        page = await page_of(gw, key.auth)
        listed = (await gw.http.get("/v1/jobs", headers=key.auth)).json()["data"]
        assert page.jobs == [job["id"] for job in listed]  # newest first, all of them
        own = set()
        for job_id in page.jobs:
            own |= {
                image["id"]
                for image in (await gw.http.get(f"/v1/jobs/{job_id}", headers=key.auth)).json()["images"]
                if image["status"] == "succeeded"
            }
        shown = {src.split("?")[0].rsplit("/", 1)[1] for src in page.images}
        assert shown and shown <= own
        assert set(page.tables["budgets"]) == {name}
        other = "beta" if name == "alpha" else "alpha"
        assert other not in (await gw.http.get("/dashboard", headers=key.auth)).text


async def test_thumbnails_are_the_gateways_own_signed_urls(gw: Gateway, keys: dict[str, Key]) -> None:
    page = await page_of(gw, keys["alpha"].auth)
    assert len(page.images) == 3 + 2  # the jobs' delivered images
    for src in page.images:
        assert src.startswith("/v1/files/img_") and "signature=" in src and keys["alpha"].secret not in src
        image = await gw.http.get(src)  # no key: the signature opens it
        assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
        forged = await gw.http.get(src[:-1] + ("0" if src[-1] != "0" else "1"))
        assert forged.status_code == 401


async def test_budget_use_per_key_is_the_keys_committed_spend(gw: Gateway, keys: dict[str, Key]) -> None:
    page = await page_of(gw, ADMIN)
    alpha = (await gw.http.get("/admin/keys/alpha", headers=ADMIN)).json()
    assert page.budgets["alpha"] == [
        (alpha["committed_usd"], alpha["budget_usd"]),
        (alpha["committed_usd"], alpha["monthly_budget_usd"]),
    ]  # all spent this month
    assert "beta" not in page.budgets  # no budget to use


async def test_the_login_form_sets_a_session_cookie_holding_no_key(gw: Gateway, keys: dict[str, Key]) -> None:
    alpha = keys["alpha"]
    answer = await login(gw, alpha.secret)
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert f"Max-Age={SESSION_TTL_S}" in cookie and "Secure" not in cookie  # plain HTTP here
    token = answer.cookies[COOKIE]
    assert alpha.secret not in token and alpha.secret[8:] not in cookie
    opened = await with_cookie(gw, token)
    assert opened.status_code == 200 and read(opened.text).viewer == "key" and alpha.secret not in opened.text

    admin = await login(gw, ADMIN_KEY)
    assert read((await with_cookie(gw, admin.cookies[COOKIE])).text).viewer == "admin"

    out = await with_cookie(gw, token, "/dashboard/logout", "POST")
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


async def test_a_wrong_key_is_refused_and_never_echoed(gw: Gateway) -> None:
    wrong = "ig-this-is-not-a-key-0123456789"
    # a refused sign-in redirects too, so the browser keeps no form holding the key to post again
    by_form = await login(gw, wrong)
    assert by_form.status_code == 303 and by_form.headers["location"] == "/dashboard?signin=refused"
    assert "set-cookie" not in by_form.headers
    said = await gw.http.get(by_form.headers["location"])
    assert said.status_code == 401 and "not accepted" in said.text and wrong not in said.text
    assert read(said.text).viewer is None
    by_header = await gw.http.get("/dashboard", headers={"Authorization": f"Bearer {wrong}"})
    assert by_header.status_code == 401 and wrong not in by_header.text and read(by_header.text).viewer is None
    empty = await login(gw, "  ")
    assert empty.status_code == 303 and empty.headers["location"] == "/dashboard?signin=empty"
    said = await gw.http.get(empty.headers["location"])
    assert said.status_code == 400 and "Enter an API key" in said.text
    nothing = await gw.http.get("/dashboard")
    assert (
        nothing.status_code == 200 and 'action="/dashboard/login"' in nothing.text and read(nothing.text).viewer is None
    )


async def test_a_key_in_the_url_is_refused(gw: Gateway, keys: dict[str, Key]) -> None:
    response = await gw.http.get("/dashboard", params={"key": keys["alpha"].secret})
    assert response.status_code == 400 and keys["alpha"].secret not in response.text
    assert read(response.text).viewer is None


async def test_a_login_posted_by_another_sites_page_is_refused(gw: Gateway, keys: dict[str, Key]) -> None:
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        response = await login(gw, keys["alpha"].secret, **headers)
        assert response.status_code == 403 and "set-cookie" not in response.headers
    same = await login(gw, keys["alpha"].secret, **{"Sec-Fetch-Site": "same-origin", "Origin": "http://imagegate.test"})
    assert same.status_code == 303


def _state(gw: Gateway) -> Any:
    """What :mod:`api.dashboard.session` reads of the app's state, rebuilt from its data dir."""
    signing_key = (Path(gw.settings.data_dir) / KEY_FILE).read_text().strip().encode()
    return SimpleNamespace(signing_key=signing_key, settings=gw.settings)


async def test_a_session_ends_when_it_expires_is_tampered_with_or_its_key_is_revoked(gw: Gateway) -> None:
    state = _state(gw)
    fresh = session.issue(state, Viewer(key=None))
    assert read((await with_cookie(gw, fresh)).text).viewer == "admin"
    expired = session.issue(state, Viewer(key=None), now=time.time() - SESSION_TTL_S - 5)
    tampered = fresh[:-1] + ("0" if fresh[-1] != "0" else "1")
    for token in (expired, tampered, "admin", "admin.99999999999.", "key_x.1.2"):
        response = await with_cookie(gw, token)
        assert response.status_code == 200 and read(response.text).viewer is None, token
        assert "session has ended" in response.text and f'{COOKIE}=""' in response.headers["set-cookie"]

    gamma = await gw.create_key("gamma")
    token = (await login(gw, gamma.secret)).cookies[COOKIE]
    assert read((await with_cookie(gw, token)).text).viewer == "key"
    assert (await gw.http.post(f"/admin/keys/{gamma.id}/revoke", headers=ADMIN)).status_code == 200
    assert read((await with_cookie(gw, token)).text).viewer is None
    # a token of one key does not open another's: the signature binds the key's secret
    subject, expires, signature = token.split(".")
    assert read((await with_cookie(gw, f"admin.{expires}.{signature}")).text).viewer is None
    assert subject == gamma.id


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-13-01"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2026-12-01T00:00"}, "since"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "since"),
        ({"since": "2024-01-01", "until": "2026-01-01"}, "since"),
        ({"until": "9999-12-31"}, "until"),
        ({"key_name": "no-such-key"}, "no-such-key"),
    ],
)
async def test_a_bad_period_or_key_is_an_error_page_naming_it(gw: Gateway, params: dict[str, str], field: str) -> None:
    response = await gw.http.get("/dashboard", headers=ADMIN, params=params)
    assert response.status_code in (400, 404) and f"'{field}'" in unescape(response.text), response.text
    assert response.headers["content-type"].startswith("text/html")


async def test_a_key_cannot_choose_another_key(gw: Gateway, keys: dict[str, Key]) -> None:
    response = await gw.http.get("/dashboard", headers=keys["beta"].auth, params={"key_name": "alpha"})
    assert response.status_code == 400 and "'key_name'" in unescape(response.text) and "alpha" not in response.text


async def test_an_earlier_period_shows_no_usage(gw: Gateway, keys: dict[str, Key]) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=40)).isoformat()
    page = await page_of(gw, ADMIN, since=day, until=day)
    assert page.bars["spend"] == {day: {"billed_usd": "0.000000"}} and page.totals["billed_usd"] == "0.000000"
    assert "model" not in page.tables and page.jobs  # recent jobs are the newest, whatever the period


async def test_every_page_has_a_strict_content_security_policy_and_no_inline_code(
    gw: Gateway, keys: dict[str, Key]
) -> None:
    for headers in (ADMIN, keys["alpha"].auth, {}):
        response = await gw.http.get("/dashboard", headers=headers)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
        assert response.headers["cache-control"] == "no-store" and response.headers["referrer-policy"] == "no-referrer"
        page = read(response.text)
        assert page.scripts == [("/dashboard/static/dashboard.js", "")] and page.style_attributes == 0
        assert all(url.startswith("/") for url in page.urls)  # nothing from another origin
    for name, kind in (
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        asset = await gw.http.get(f"/dashboard/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    for name in ("../router.py", "%2e%2e%2frouter.py", "nope.js"):
        assert (await gw.http.get(f"/dashboard/static/{name}")).status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        "since=%00",
        "until=2026-12-0%001",
        "key_name=%00",
        "key_name=%ED%A0%80",
        "since=%FF%FE",
        "since=" + "9" * 5000,
        "key_name=" + "x" * 5000,
        "since=0000-01-01",
        "since=2026-02-30",
        "until=+2026-12-01",
        "since=%E2%80%AE2026-12-01",
    ],
)
async def test_hostile_queries_are_answered_never_with_a_500(gw: Gateway, query: str) -> None:
    response = await gw.http.get(f"/dashboard?{query}", headers=ADMIN)
    assert response.status_code in (400, 404), response.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"key=%00", "application/x-www-form-urlencoded"),
        (b"key=%ED%A0%80", "application/x-www-form-urlencoded"),
        (b'{"key": "ig-x"}', "application/json"),
        (b"", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "text/plain"),
        (b"key=" + b"a" * 200_000, "application/x-www-form-urlencoded"),
    ],
)
async def test_hostile_logins_are_refused_never_with_a_500_nor_a_cookie(
    gw: Gateway, body: bytes, content_type: str
) -> None:
    response = await gw.http.post("/dashboard/login", content=body, headers={"Content-Type": content_type})
    gw.http.cookies.clear()
    assert response.status_code == 413 or response.headers["location"] in (
        "/dashboard?signin=refused",
        "/dashboard?signin=empty",
    ), response.text
    assert "set-cookie" not in response.headers


async def test_names_and_prompts_are_shown_as_text_never_as_markup(gw: Gateway) -> None:
    name = '<img src=x onerror="alert(1)">&amp;'
    key = await gw.create_key(name)
    response = await gw.generate(
        key, {"model": "demo-image", "prompt": "</td><script>alert(2)</script>", "size": "64x64"}
    )
    assert response.status_code == 200, response.text
    for headers in (ADMIN, key.auth):
        html = (await gw.http.get("/dashboard", headers=headers)).text
        assert "<img src=x" not in html and "<script>alert" not in html
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;amp;" in html and "&lt;script&gt;alert(2)" in html
        assert read(html).scripts == [("/dashboard/static/dashboard.js", "")]
