"""The key cache: a key read once answers the next requests without the database for its
lifetime, a key dropped (changed here) is read again, old entries and the least recently used go."""

from __future__ import annotations

from api.auth import KeyCache
from core.models import ApiKey


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key(key_id: str) -> ApiKey:
    return ApiKey(id=key_id, name=key_id, prefix="ig-", secret_hash=f"h-{key_id}")


def test_a_cached_key_lives_its_ttl_then_is_read_again() -> None:
    clock = Clock()
    cache = KeyCache(ttl_s=2, clock=clock)
    cache.put("h-a", key("a"))
    clock.now += 1.9
    assert cache.get("h-a") is not None
    clock.now += 0.2
    assert cache.get("h-a") is None


def test_forget_drops_every_entry_of_a_key() -> None:
    cache = KeyCache(ttl_s=60, clock=Clock())
    cache.put("h-a", key("a"))
    cache.put("h-b", key("b"))
    cache.forget("a")
    assert cache.get("h-a") is None and cache.get("h-b") is not None


def test_the_least_recently_used_go_first() -> None:
    cache = KeyCache(ttl_s=60, max_entries=2, clock=Clock())
    cache.put("h-a", key("a"))
    cache.put("h-b", key("b"))
    assert cache.get("h-a") is not None  # a is used: b is now the oldest
    cache.put("h-c", key("c"))
    assert [cache.get(h) is not None for h in ("h-a", "h-b", "h-c")] == [True, False, True]


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = KeyCache(ttl_s=0, clock=Clock())
    cache.put("h-a", key("a"))
    assert cache.get("h-a") is None
