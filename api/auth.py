"""Who is calling: the API key from any of the headers clients use, checked against its hash.

Keys are answered from a short-lived cache in each API process (``IMAGEGATE_AUTH_CACHE_S``,
2 s by default), so that a request costs no database round trip to authenticate: a key created,
changed or revoked through this process's admin API is seen at once by it (the admin API drops the
entry), and by every other process (other API processes, ``imagegate keys`` from the command
line) within the cache's lifetime. Unknown secrets are not cached: a wrong key always reaches the
database, and cannot push real keys out of the cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request

from core import logcontext
from core.errors import AuthenticationError
from core.keys import extract_key, hash_secret
from core.models import ApiKey
from core.repo import keys


class KeyCache:
    """API keys by secret hash, each kept ``ttl_s`` seconds (least recently used go first)."""

    def __init__(self, *, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()

    def get(self, secret_hash: str) -> ApiKey | None:
        entry = self._entries.get(secret_hash)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.ttl_s:
            del self._entries[secret_hash]
            return None
        self._entries.move_to_end(secret_hash)
        return entry[1]

    def put(self, secret_hash: str, key: ApiKey) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[secret_hash] = (self._clock(), key)
        self._entries.move_to_end(secret_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """Drop a key (changed or revoked here) so the next request reads it again."""
        for secret_hash in [h for h, (_, key) in self._entries.items() if key.id == key_id]:
            del self._entries[secret_hash]


def secret_of(request: Request) -> str | None:
    return extract_key(
        authorization=request.headers.get("authorization"),
        x_api_key=request.headers.get("x-api-key"),
        x_goog_api_key=request.headers.get("x-goog-api-key"),
        query_key=request.query_params.get("key"),
    )


async def authenticate(request: Request, sessions: async_sessionmaker[AsyncSession], cache: KeyCache) -> ApiKey:
    secret = secret_of(request)
    if secret is None:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>', "
            "'x-api-key', 'x-goog-api-key' or '?key='.",
            code="missing_api_key",
        )
    return await key_for_secret(secret, sessions, cache)


async def key_for_secret(secret: str, sessions: async_sessionmaker[AsyncSession], cache: KeyCache) -> ApiKey:
    """The live key whose secret this is, or AuthenticationError (never echoing the secret)."""
    secret_hash = hash_secret(secret)
    key = cache.get(secret_hash)
    if key is None:
        async with sessions() as session:
            key = await session.scalar(keys.by_secret_hash(secret_hash))
        if key is None:
            # never echo the secret back
            raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
        cache.put(secret_hash, key)
    if key.revoked_at is not None:
        raise AuthenticationError("This API key has been revoked.", code="invalid_api_key")
    logcontext.bind(key_prefix=key.prefix)  # for the rest of this request (its own context)
    return key
