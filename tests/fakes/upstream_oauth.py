"""Google service accounts and the OAuth2 JWT-bearer token endpoint of the fake upstream
(https://developers.google.com/identity/protocols/oauth2/service-account): RS256 signatures are
verified for real with ``cryptography``."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.upstream_common import FakeRequest, FakeResponse, Reject, json_response, oauth_error

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOCK_SKEW_S = 300
# google-auth always signs aud = Google's token endpoint, whatever token_uri says; Google accepts it.
GOOGLE_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")


@dataclass
class ServiceAccount:
    client_email: str
    private_key_id: str
    project_id: str
    token_uri: str
    public_key: rsa.RSAPublicKey


@dataclass
class IssuedToken:
    token: str
    client_email: str
    project_id: str
    expires_at: float  # time.time()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jwt(info: dict[str, Any], claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An RS256 JWT signed with a service-account dict's private key (for tests and tools)."""
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    head = header if header is not None else {"alg": "RS256", "typ": "JWT", "kid": info["private_key_id"]}
    signing_input = _b64url(json.dumps(head).encode()) + "." + _b64url(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


def assertion_for(
    info: dict[str, Any], *, scope: str = CLOUD_PLATFORM, lifetime_s: int = 3600, **overrides: Any
) -> str:
    """The JWT-bearer assertion google-auth would send for ``info`` (claims overridable)."""
    now = int(time.time())
    claims = {
        "iss": info["client_email"],
        "scope": scope,
        "aud": info["token_uri"],
        "iat": now,
        "exp": now + lifetime_s,
        **overrides,
    }
    return sign_jwt(info, claims)


class OAuthServer:
    """Service accounts this fake knows, and the access tokens it issued."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._accounts: dict[str, ServiceAccount] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self._serial = 0

    # --- service accounts ---------------------------------------------------------------------
    def new_service_account(self, project_id: str, token_uri: str) -> dict[str, Any]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        with self._lock:
            self._serial += 1
            serial = self._serial
        client_email = f"fake-upstream-{serial}@{project_id}.iam.gserviceaccount.com"
        key_id = secrets.token_hex(20)
        account = ServiceAccount(client_email, key_id, project_id, token_uri, key.public_key())
        with self._lock:
            self._accounts[client_email] = account
        client_id = str(100000000000000000000 + secrets.randbelow(10**20))
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": client_email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + client_email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        }

    # --- tokens -------------------------------------------------------------------------------
    def check_token(self, token: str | None) -> tuple[str, IssuedToken | None]:
        """("ok"|"expired"|"unknown", the issued token)."""
        with self._lock:
            issued = self._tokens.get(token or "")
        if issued is None:
            return "unknown", None
        if time.time() >= issued.expires_at:
            return "expired", issued
        return "ok", issued

    def expire_all(self) -> None:
        with self._lock:
            for issued in self._tokens.values():
                issued.expires_at = 0.0

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()

    def handle_token(self, req: FakeRequest, form: dict[str, list[str]] | None) -> FakeResponse:
        """POST /token: verify the assertion and issue ``ya29.<random>``; raises Reject."""

        def refuse(error: str, description: str, violation: str, status: int = 400) -> Reject:
            return Reject(json_response(status, oauth_error(error, description)), [violation])

        if req.method != "POST":
            raise refuse(
                "invalid_request", "Method not allowed", f"token endpoint called with {req.method}", 405
            )
        if req.content_type != "application/x-www-form-urlencoded" or form is None:
            raise refuse(
                "invalid_request",
                "Invalid request",
                f"Content-Type must be application/x-www-form-urlencoded, got {req.content_type!r}",
            )
        unknown = sorted(set(form) - {"grant_type", "assertion"})
        if unknown:
            raise refuse("invalid_request", "Invalid request", f"unknown form fields {unknown}")
        grant = form.get("grant_type", [""])
        if grant != [JWT_BEARER]:
            raise refuse(
                "unsupported_grant_type",
                "Invalid grant_type: " + ",".join(grant),
                f"grant_type must be {JWT_BEARER}, got {grant}",
            )
        assertion = form.get("assertion", [])
        if len(assertion) != 1:
            raise refuse(
                "invalid_request",
                "Missing required parameter: assertion",
                "exactly one assertion is required",
            )
        account = self._verify(assertion[0], refuse)
        token = "ya29." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = IssuedToken(
                token, account.client_email, account.project_id, time.time() + self.ttl_s
            )
        return json_response(200, {"access_token": token, "expires_in": self.ttl_s, "token_type": "Bearer"})

    def _verify(self, jwt: str, refuse: Any) -> ServiceAccount:
        pieces = jwt.split(".")
        if len(pieces) != 3:
            raise refuse("invalid_grant", "Invalid JWT: not three segments", "assertion is not a JWS")
        try:
            header = json.loads(_b64url_decode(pieces[0]))
            claims = json.loads(_b64url_decode(pieces[1]))
            signature = _b64url_decode(pieces[2])
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise refuse("invalid_grant", "Invalid JWT", f"assertion does not decode ({exc})") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise refuse("invalid_grant", "Invalid JWT", "JWT header/claims are not JSON objects")
        if header.get("alg") != "RS256":
            raise refuse("invalid_grant", "Invalid JWT", f"JWT alg must be RS256, got {header.get('alg')!r}")
        with self._lock:
            account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            raise refuse(
                "invalid_grant",
                "Invalid JWT Signature.",
                f"JWT iss {claims.get('iss')!r} is not a service account of this fake",
            )
        if "kid" in header and header["kid"] != account.private_key_id:
            raise refuse(
                "invalid_grant",
                "Invalid JWT Signature.",
                f"JWT kid {header['kid']!r} != private_key_id {account.private_key_id!r}",
            )
        try:
            account.public_key.verify(
                signature, f"{pieces[0]}.{pieces[1]}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError) as exc:
            raise refuse(
                "invalid_grant",
                "Invalid JWT Signature.",
                "JWT signature does not verify with the service account's key",
            ) from exc
        if claims.get("aud") not in (account.token_uri, *GOOGLE_AUDIENCES):
            raise refuse(
                "invalid_grant",
                "Invalid JWT: Failed audience check.",
                f"JWT aud {claims.get('aud')!r} is neither token_uri {account.token_uri!r} "
                f"nor {GOOGLE_AUDIENCES[0]}",
            )
        scope = claims.get("scope")
        if not isinstance(scope, str) or CLOUD_PLATFORM not in scope.split():
            raise refuse(
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
                f"JWT scope {scope!r} does not contain {CLOUD_PLATFORM}",
            )
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise refuse("invalid_grant", "Invalid JWT: missing iat/exp", "JWT iat and exp must be numbers")
        if exp <= now:
            raise refuse(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                "in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
                f"JWT expired (exp {exp} <= now {int(now)})",
            )
        if iat > now + CLOCK_SKEW_S or exp - iat > 3600:
            raise refuse(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                "in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
                f"JWT iat/exp out of range (iat {iat}, exp {exp}, now {int(now)})",
            )
        return account
