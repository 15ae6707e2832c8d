"""Who is looking at the dashboard: the admin key or one API key, from a bearer header or from the
session cookie the login form sets.

The cookie never holds a key. It holds a token ``<subject>.<expires>.<signature>``: the subject is
``admin`` or a key's id, ``expires`` a Unix time, and the signature an HMAC-SHA256 of both and of
what binds the token to its key (the admin key's hash, or the API key's secret hash), under a key
derived from the gateway's URL-signing key (shared by every API process, see
:func:`core.signing.load_or_create_signing_key`). So a token opens the dashboard only until it
expires, only while its key is live (a revoked key's tokens stop at once), and no longer once the
operator changes the admin key. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it) and ``Secure`` when the gateway is reached over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from starlette.requests import Request

from api.auth import key_for_secret
from api.state import AppState
from core.errors import AuthenticationError
from core.keys import extract_key
from core.models import ApiKey
from core.repo import keys
from core.text import ascii_int

COOKIE = "imagegate_dashboard"
SESSION_TTL_S = 8 * 3600
"""How long a login lasts: a working day."""
ADMIN = "admin"


@dataclass(frozen=True)
class Viewer:
    """The admin (``key`` None: every key's usage, with upstream costs and margins) or one key."""

    key: ApiKey | None

    @property
    def is_admin(self) -> bool:
        return self.key is None

    @property
    def subject(self) -> str:
        return ADMIN if self.key is None else self.key.id


def _session_key(state: AppState) -> bytes:
    # its own key, so that no file URL's signature is ever a valid session token, or the reverse
    return hmac.new(state.signing_key, b"imagegate dashboard session", hashlib.sha256).digest()


def _admin_binding(state: AppState) -> str | None:
    configured = state.settings.admin_key
    return hashlib.sha256(configured.get_secret_value().encode()).hexdigest() if configured else None


def _signature(state: AppState, subject: str, expires: int, binding: str) -> str:
    return hmac.new(_session_key(state), f"{subject}:{expires}:{binding}".encode(), hashlib.sha256).hexdigest()


def issue(state: AppState, viewer: Viewer, *, now: float | None = None) -> str:
    """A session token for ``viewer``, valid :data:`SESSION_TTL_S` seconds."""
    expires = int((now if now is not None else time.time()) + SESSION_TTL_S)
    binding = _admin_binding(state) if viewer.key is None else viewer.key.secret_hash
    assert binding is not None, "no admin session without an admin key"
    return f"{viewer.subject}.{expires}.{_signature(state, viewer.subject, expires, binding)}"


async def from_token(state: AppState, token: str) -> Viewer | None:
    """The viewer a session token names, if it is this gateway's, unexpired, and its key still live."""
    subject, _, rest = token.partition(".")
    expires_text, _, signature = rest.partition(".")
    expires = ascii_int(expires_text, max_digits=12)
    if not subject or expires is None or expires < time.time() or not signature.isascii():
        return None
    key = None
    if subject == ADMIN:
        binding = _admin_binding(state)
    else:
        async with state.sessions() as session:
            key = await session.scalar(keys.by_id(subject))
        binding = key.secret_hash if key is not None and key.revoked_at is None else None
    if binding is None or not hmac.compare_digest(_signature(state, subject, expires, binding), signature):
        return None
    return Viewer(key=key)


async def from_secret(state: AppState, secret: str) -> Viewer:
    """The viewer a key's secret makes (the admin key, or a live API key); AuthenticationError otherwise."""
    configured = state.settings.admin_key
    if configured is not None and hmac.compare_digest(secret.encode(), configured.get_secret_value().encode()):
        return Viewer(key=None)
    return Viewer(key=await key_for_secret(secret, state.sessions, state.keys))


def bearer(request: Request) -> str | None:
    """A key sent in a header (``Authorization: Bearer`` or ``x-api-key``), never one in the URL."""
    return extract_key(
        authorization=request.headers.get("authorization"),
        x_api_key=request.headers.get("x-api-key"),
        x_goog_api_key=None,
        query_key=None,
    )


async def viewer_of(request: Request, state: AppState) -> Viewer | None:
    """The viewer of a request: its bearer key (refused with AuthenticationError when wrong), else its
    session cookie (None when missing, expired or no longer valid)."""
    secret = bearer(request)
    if secret is not None:
        return await from_secret(state, secret)
    token = request.cookies.get(COOKIE)
    return await from_token(state, token) if token else None


def secure_cookie(request: Request, state: AppState) -> bool:
    """Whether the cookie must be ``Secure``: the request came over HTTPS, or the gateway's public
    URL is HTTPS (behind a proxy that ends TLS)."""
    return request.url.scheme == "https" or state.settings.resolved_public_url.startswith("https://")


__all__ = [
    "COOKIE",
    "SESSION_TTL_S",
    "AuthenticationError",
    "Viewer",
    "bearer",
    "from_secret",
    "from_token",
    "issue",
    "secure_cookie",
    "viewer_of",
]
