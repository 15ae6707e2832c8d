"""CORS: pages of other origins may call the API from a browser (SillyTavern extensions such as
SillyImages, web UIs calling with their user's key).

Starlette's ``CORSMiddleware`` answers every preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) before routing and authentication, and adds the CORS headers
to every answer, errors included: it wraps every other middleware, and the errors are rendered
inside it (:class:`api.errors.UnexpectedErrors`). Allowed: the origins of
``IMAGEGATE_CORS_ORIGINS`` (``*`` by default: keys are bearer tokens, which a page must hold
itself, not cookies, so credentials are never allowed), the methods of the API, any request
header a preflight names (``authorization``, ``x-api-key``, ``x-goog-api-key``, ``content-type``,
``anthropic-version``, ``anthropic-beta``, ``idempotency-key``, the SDKs' ``x-stainless-*``...).
Exposed: the job's ``x-imagegate-*`` headers and the ones clients read to retry (see
https://fetch.spec.whatwg.org/#http-cors-protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
EXPOSED = (
    "x-imagegate-job-id", "x-imagegate-cost", "x-imagegate-served-by", "x-imagegate-images",
    "x-imagegate-applied", "request-id", "location", "preference-applied", "retry-after", "retry-after-ms",
    "x-should-retry", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests", "x-ratelimit-limit-images", "x-ratelimit-remaining-images",
    "x-ratelimit-reset-images",
)
PREFLIGHT_MAX_AGE_S = 600


def add_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Wrap ``app`` (as its outermost middleware) in CORS for ``origins``."""
    app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=list(METHODS),
                       allow_headers=["*"], expose_headers=list(EXPOSED), allow_credentials=False,
                       max_age=PREFLIGHT_MAX_AGE_S)
