"""Who is calling: the API key from any of the headers clients use, checked against its hash."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request

from core.errors import AuthenticationError
from core.keys import extract_key, hash_secret
from core.models import ApiKey
from core.repo import keys


async def authenticate(request: Request, sessions: async_sessionmaker[AsyncSession]) -> ApiKey:
    secret = extract_key(
        authorization=request.headers.get("authorization"),
        x_api_key=request.headers.get("x-api-key"),
        x_goog_api_key=request.headers.get("x-goog-api-key"),
        query_key=request.query_params.get("key"),
    )
    if secret is None:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>', "
            "'x-api-key', 'x-goog-api-key' or '?key='.",
            code="missing_api_key",
        )
    async with sessions() as session:
        key = await session.scalar(keys.by_secret_hash(hash_secret(secret)))
    if key is None:
        # never echo the secret back
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    if key.revoked_at is not None:
        raise AuthenticationError("This API key has been revoked.", code="invalid_api_key")
    return key
