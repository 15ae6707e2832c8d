"""The usage dashboard in a real headless Chromium (Debian's package, driven by Playwright), against
a distributed gateway (uvicorn, a Celery worker, PostgreSQL, Redis) whose upstreams are the fake
upstream: a person signs in with the login form, or a tool opens the page with a bearer header;
the page loads with no console error (a Content-Security-Policy violation is one), its charts and
tables show the numbers ``/v1/usage`` and ``/admin/usage`` return, a key sees only its own usage,
a wrong key is refused, and the key is never in the page, a URL, the history, the browser's
storage or a cookie. Each page is kept as a screenshot under ``test-artefacts/dashboard/`` (the
directory is printed at the end of the run; git ignores it). The last test reads the same numbers
over plain HTTP, so that PostgreSQL's side is checked where Chromium cannot be installed."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard_page import Page, read
from tests.e2e.installs import CHROMIUM_FLAGS, chromium
from tests.fakes.upstream import FakeUpstream
from tests.harness import ADMIN_KEY, Stack

pytestmark = pytest.mark.integration

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "dashboard"


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    path, why_not = chromium()
    if path is None:
        pytest.skip(
            f"Chromium is not available ({why_not}); tests/inproc/test_dashboard.py checks the page's "
            "numbers, keys and sessions over HTTP instead"
        )
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\ndashboard screenshots: {ARTEFACTS}")


@pytest.fixture(scope="module")
def accounts(gw: Stack, fake: FakeUpstream) -> dict[str, str]:
    """Two keys of their own: one with Gemini images (one of three failed) and a GPT image under a
    budget, one with a demo image."""
    suffix = uuid.uuid4().hex[:8]
    secrets = {
        "first": gw.create_key(f"dash-first-{suffix}", budget_usd="3", monthly_budget_usd="1"),
        "second": gw.create_key(f"dash-second-{suffix}"),
    }
    fake.reset()
    fake.add_fault("gemini", "status", status=400, times=1)
    for who, body in (
        ("first", {"model": "gemini-3.1-flash-image", "prompt": "three lighthouses", "n": 3}),
        ("first", {"model": "gpt-image-1.5", "prompt": "a fox", "quality": "low"}),
        ("second", {"model": "demo-image", "prompt": "a demo owl", "size": "256x256"}),
    ):
        answer = httpx.post(
            f"{gw.base_url}/v1/images/generations",
            json=body,
            timeout=120,
            headers={"Authorization": f"Bearer {secrets[who]}"},
        )
        assert answer.status_code == 200, answer.text
    fake.reset()
    return secrets


class Visit:
    """One browser context's page, with everything it logged and every URL it asked for."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, **context)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.urls: list[str] = []
        self.page.on(
            "console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        )
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.urls.append(r.url))

    def read(self) -> Page:
        return read(self.page.content())

    def open(self, url: str) -> Page:
        """Go to ``url``, wait for everything it loads, and read it."""
        self.page.goto(url)
        self.page.wait_for_load_state("networkidle")
        return self.read()

    def storage(self) -> dict[str, Any]:
        found: dict[str, Any] = self.page.evaluate(
            "() => ({local: Object.assign({}, localStorage), session: Object.assign({}, sessionStorage), "
            "cookie: document.cookie, history: history.length, location: location.href})"
        )
        return found

    def shot(self, name: str) -> Path:
        path = ARTEFACTS / f"{name}.png"
        # the thumbnails load lazily: bring them all in before the picture is taken
        self.page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        self.page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


def usage(gw: Stack, path: str, secret: str, group_by: str, **params: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    answer = httpx.get(
        gw.base_url + path,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
        params={
            "since": (today - timedelta(days=29)).isoformat(),
            "until": today.isoformat(),
            "group_by": group_by,
            **params,
        },
    )
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def assert_shows(page: Page, gw: Stack, path: str, secret: str, metrics: tuple[str, ...], **params: str) -> None:
    """The page's spend and images per day, totals and per-model rows are the usage API's."""
    report = usage(gw, path, secret, "day", **params)
    by_day = {row["day"]: row for row in report["data"]}
    assert by_day, "no usage to show"
    for day, bar in page.bars["spend"].items():
        assert bar["billed_usd"] == (by_day[day]["billed_usd"] if day in by_day else "0.000000"), day
        if day in by_day:
            assert page.bars["images"][day] == {
                "images_succeeded": str(by_day[day]["images_succeeded"]),
                "images_failed": str(by_day[day]["images_failed"]),
            }
    assert {m: page.totals[m] for m in metrics} == {m: str(report["totals"][m]) for m in metrics}
    models = usage(gw, path, secret, "model", **params)["data"]
    assert {r["model"]: {m: str(r[m]) for m in metrics} for r in models} == {
        name: {m: row[m] for m in metrics} for name, row in page.tables["model"].items()
    }


def assert_clean(visit: Visit, *secrets: str) -> None:
    """No console error or warning, and no key anywhere the browser keeps or shows things."""
    assert visit.console == []
    kept = visit.storage()
    assert kept["local"] == {} and kept["session"] == {} and kept["cookie"] == ""  # the session cookie is HttpOnly
    content = visit.page.content()
    for secret in secrets:
        assert secret not in content and secret not in kept["location"]
        assert not any(secret in url for url in visit.urls)
        assert not any(secret in c["value"] for c in visit.context.cookies())


def test_a_key_signs_in_with_the_form_and_sees_its_own_usage(browser: Any, gw: Stack, accounts: dict[str, str]) -> None:
    visit = Visit(browser)
    try:
        visit.page.goto(gw.base_url + "/dashboard")
        assert visit.page.locator("form[action='/dashboard/login']").is_visible()
        visit.page.fill("#key", accounts["first"])
        with visit.page.expect_navigation():
            visit.page.click("button[type=submit]")
        visit.page.wait_for_load_state("networkidle")
        assert visit.page.url == gw.base_url + "/dashboard"
        page = visit.read()
        assert page.viewer == "key"
        metrics = ("images_succeeded", "images_failed", "billed_usd")
        assert_shows(page, gw, "/v1/usage", accounts["first"], metrics)
        assert page.totals["images_succeeded"] == "3" and page.totals["images_failed"] == "1"
        assert "Upstream" not in visit.page.content() and "upstream_cost_usd" not in page.totals
        # every thumbnail loaded, through the gateway's signed URLs
        widths = visit.page.eval_on_selector_all("td.thumbs img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 3 and all(w > 0 for w in widths)
        [cookie] = [c for c in visit.context.cookies() if c["name"] == "imagegate_dashboard"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
        # the chart's readout (the page's script) shows a bar's exact value
        today = datetime.now(UTC).date().isoformat()
        visit.page.hover(f"figure[data-chart=spend] g.bar[data-label='{today}']")
        readout = visit.page.text_content("figure[data-chart=spend] .readout") or ""
        assert readout == f"{today}: {page.bars['spend'][today]['billed_usd']}"
        assert_clean(visit, accounts["first"])
        visit.shot("key-signed-in")

        visit.page.click("form.signout button")
        visit.page.wait_for_load_state("networkidle")
        assert visit.page.locator("#key").is_visible() and visit.context.cookies() == []
    finally:
        visit.close()


def test_the_admin_key_in_a_header_shows_every_key(browser: Any, gw: Stack, accounts: dict[str, str]) -> None:
    visit = Visit(browser, extra_http_headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    try:
        page = visit.open(gw.base_url + "/dashboard")
        assert page.viewer == "admin"
        metrics = ("images_succeeded", "images_failed", "billed_usd", "upstream_cost_usd", "margin_usd")
        assert_shows(page, gw, "/admin/usage", ADMIN_KEY, metrics)
        # the top keys are the ten billed most, as /admin/usage has them (the stack is shared: other
        # tests' keys may be among them, and ours may not)
        by_key = {r["key"]: r for r in usage(gw, "/admin/usage", ADMIN_KEY, "key")["data"]}
        shown = page.tables["key"]
        assert len(shown) == min(10, len(by_key))
        assert all(
            {m: row[m] for m in metrics} == {m: str(by_key[name][m]) for m in metrics} for name, row in shown.items()
        )
        cut = min(Decimal(row["billed_usd"]) for row in shown.values())
        assert all(Decimal(r["billed_usd"]) <= cut for name, r in by_key.items() if name not in shown)
        assert page.tables["failures"]["gemini-3.1-flash-image"]["failure_rate"] != "0.0%"
        assert_clean(visit, ADMIN_KEY, *accounts.values())
        visit.shot("admin-every-key")

        # one key's page (the name is no secret: it may be in the URL)
        first = next(name for name in by_key if name.startswith("dash-first-"))
        assert_shows(
            visit.open(f"{gw.base_url}/dashboard?key_name={first}"), gw, "/admin/usage", ADMIN_KEY, metrics, key=first
        )
        assert visit.read().budgets[first][0][1] == "3.000000"
        assert_clean(visit, ADMIN_KEY)
    finally:
        visit.close()


def test_a_key_sees_nothing_of_another_key(browser: Any, gw: Stack, accounts: dict[str, str]) -> None:
    visit = Visit(browser, extra_http_headers={"Authorization": f"Bearer {accounts['second']}"})
    try:
        page = visit.open(gw.base_url + "/dashboard")
        assert page.viewer == "key" and page.totals["images_succeeded"] == "1"
        assert_shows(page, gw, "/v1/usage", accounts["second"], ("images_succeeded", "billed_usd"))
        assert list(page.tables["model"]) == ["demo-image"]
        own = httpx.get(gw.base_url + "/v1/jobs", headers={"Authorization": f"Bearer {accounts['second']}"}).json()
        assert page.jobs == [job["id"] for job in own["data"]]
        assert "dash-first-" not in visit.page.content()
        assert_clean(visit, accounts["second"], accounts["first"])
        visit.shot("key-own-usage-only")
    finally:
        visit.close()


def test_a_wrong_key_is_refused(browser: Any, gw: Stack) -> None:
    wrong = "ig-not-a-real-key-" + uuid.uuid4().hex
    visit = Visit(browser)
    try:
        visit.page.goto(gw.base_url + "/dashboard")
        visit.page.fill("#key", wrong)
        with visit.page.expect_navigation() as navigation:
            visit.page.click("button[type=submit]")
        # redirected: the page that says so is a GET, and no form holding the key stays in the history
        assert navigation.value.status == 401 and visit.page.url == gw.base_url + "/dashboard?signin=refused"
        assert "not accepted" in (visit.page.text_content(".message") or "")
        assert visit.read().viewer is None and visit.context.cookies() == []
        visit.console = [line for line in visit.console if "401" not in line]  # the refusal itself
        assert_clean(visit, wrong)
        visit.shot("wrong-key-refused")
    finally:
        visit.close()


def test_the_page_over_http_equals_the_usage_api_on_postgresql(gw: Stack, accounts: dict[str, str]) -> None:
    """The same numbers without a browser (also where Chromium cannot be installed): PostgreSQL's
    days, budgets and failure reasons, read from the HTML."""
    for secret, path, metrics in (
        (accounts["first"], "/v1/usage", ("images_succeeded", "images_failed", "billed_usd")),
        (
            ADMIN_KEY,
            "/admin/usage",
            ("images_succeeded", "images_failed", "billed_usd", "upstream_cost_usd", "margin_usd"),
        ),
    ):
        answer = httpx.get(gw.base_url + "/dashboard", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        assert answer.status_code == 200 and secret not in answer.text
        assert_shows(read(answer.text), gw, path, secret, metrics)
    own = read(httpx.get(gw.base_url + "/dashboard", headers={"Authorization": f"Bearer {accounts['first']}"}).text)
    assert [limit for _, limit in next(iter(own.budgets.values()))] == ["3.000000", "1.000000"]
    assert own.tables["failures"]["gemini-3.1-flash-image"]["failure_rate"] == "33.3%"
