"""``/dashboard``: the usage dashboard, a server-rendered page (Jinja2, autoescaped) with its
stylesheet and one small script, shipped in this package.

A key reaches the page in a header (``Authorization: Bearer`` or ``x-api-key``) or through the
login form, which posts it once; the answer sets the session cookie (:mod:`api.dashboard.session`)
and redirects, so the key is never in a URL, the history, the page or the browser's storage. A
key sent in the URL (``?key=``, which the API accepts elsewhere) is refused here. Every page is
answered with a Content-Security-Policy that allows this origin's script, style and images only,
no inline script or style, no framing, and forms posting only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.dashboard import data, session
from api.dashboard.session import COOKIE, SESSION_TTL_S, Viewer
from api.deps import StateDep
from api.state import AppState
from core import key_service
from core.errors import AuthenticationError, InvalidRequestError, NotFoundError
from core.models.types import utcnow

HERE = Path(__file__).parent
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files under ``static/`` the page loads: nothing else of the directory is served."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter(prefix="/dashboard", tags=["Dashboard"], include_in_schema=False)


def _page(name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status, headers=PAGE_HEADERS)


def _login(*, status: int = 200, message: str | None = None, forget: bool = False) -> HTMLResponse:
    response = _page("login.html", status=status, message=message)
    if forget:
        response.delete_cookie(COOKIE, path="/dashboard")
    return response


def _same_origin(request: Request, state: AppState) -> bool:
    """Whether a form post comes from this gateway's own page (or from no page at all, as curl's):
    a login or logout posted by another site's page is refused. Browsers say so in
    ``Sec-Fetch-Site``; older ones only send ``Origin``, which must then be this gateway's, as the
    request reached it or as the public URL names it (behind a proxy that ends TLS)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    own = {str(request.base_url).rstrip("/"), state.settings.resolved_public_url.rstrip("/")}
    return origin is None or origin in own


REFUSED = "That key was not accepted: it is not a live API key or the admin key."
SIGN_IN_ANSWERS = {"refused": (401, REFUSED), "empty": (400, "Enter an API key, or the admin key.")}
"""What the login page says after a sign-in that did not open the dashboard (``?signin=``)."""


def _back_to_sign_in(answer: str) -> Response:
    """A refused sign-in is answered as an accepted one is, by a redirect (303): the page that says
    so is then a plain GET, and the browser keeps no form holding the key to post again."""
    return RedirectResponse(f"/dashboard?signin={answer}", status_code=303, headers={"Cache-Control": "no-store"})


def _cross_site(what: str) -> HTMLResponse:
    return _page(
        "error.html",
        status=403,
        title="Use the dashboard's own page",
        message=f"This {what} was sent by another site's page, and was refused.",
    )


@router.get("")
async def dashboard(request: Request, state: StateDep) -> Response:
    if "key" in request.query_params:
        return _page(
            "error.html",
            status=400,
            title="A key never goes in a URL",
            message="The dashboard does not take a key in its address (addresses are kept in the "
            "history and in logs). Open /dashboard and sign in with the form, or send the key "
            "in an Authorization header.",
        )
    try:
        viewer = await session.viewer_of(request, state)
    except AuthenticationError:
        return _login(status=401, message=REFUSED)
    if viewer is None:
        attempt = SIGN_IN_ANSWERS.get(request.query_params.get("signin", ""))
        if attempt is not None:
            return _login(status=attempt[0], message=attempt[1])
        had_cookie = COOKIE in request.cookies
        return _login(message="Your session has ended: sign in again." if had_cookie else None, forget=had_cookie)
    today = utcnow().date()
    try:
        period = data.parse_period(request.query_params.get("since"), request.query_params.get("until"), today=today)
        scope = await _scope(state, viewer, request.query_params.get("key_name"))
    except (InvalidRequestError, NotFoundError) as exc:
        return _page("error.html", status=exc.status, title="That view cannot be shown", message=exc.message)
    view = await data.load(state, viewer, period, scope=scope)
    return _page("dashboard.html", view=view, presets=data.presets(today), today=today.isoformat())


async def _scope(state: AppState, viewer: Viewer, key_name: str | None) -> Any:
    """The key whose usage is shown: the viewer's own, the one the admin chose, or None (all keys)."""
    if not viewer.is_admin:
        if key_name:
            raise InvalidRequestError("Invalid parameter 'key_name': only the admin chooses a key.", param="key_name")
        return viewer.key
    if not key_name:
        return None
    async with state.sessions() as db:
        return await key_service.find_key(db, key_name)


@router.post("/login")
async def login(request: Request, state: StateDep) -> Response:
    if not _same_origin(request, state):
        return _cross_site("sign-in")
    form = await request.form()
    secret = form.get("key")
    if not isinstance(secret, str) or not secret.strip():
        return _back_to_sign_in("empty")
    try:
        viewer = await session.from_secret(state, secret.strip())
    except AuthenticationError:
        return _back_to_sign_in("refused")
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        COOKIE,
        session.issue(state, viewer),
        max_age=SESSION_TTL_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=session.secure_cookie(request, state),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/logout")
async def logout(request: Request, state: StateDep) -> Response:
    if not _same_origin(request, state):
        return _cross_site("sign-out")
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC.get(name)
    if media_type is None:
        raise NotFoundError(f"No dashboard file '{name}'.", param="name", code="file_not_found")
    return FileResponse(
        HERE / "static" / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
