"""MemoryCache: LRU eviction, TTL expiry and the Cache protocol."""

from __future__ import annotations

import pytest

from healthbank.storage.cache import Cache, MemoryCache


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_cache_satisfies_protocol() -> None:
    assert isinstance(MemoryCache(4), Cache)


async def test_get_returns_what_was_set() -> None:
    cache = MemoryCache(4)
    await cache.set("summary:a", b"sealed-a", ttl_seconds=30)
    assert await cache.get("summary:a") == b"sealed-a"
    assert await cache.get("summary:b") is None


async def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(4, clock=clock)
    await cache.set("k", b"v", ttl_seconds=30)
    clock.now += 29.9
    assert await cache.get("k") == b"v"
    clock.now += 0.1
    assert await cache.get("k") is None
    assert len(cache) == 0


async def test_set_overwrites_and_renews_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(4, clock=clock)
    await cache.set("k", b"old", ttl_seconds=10)
    clock.now += 8
    await cache.set("k", b"new", ttl_seconds=10)
    clock.now += 8
    assert await cache.get("k") == b"new"


async def test_least_recently_used_is_evicted() -> None:
    cache = MemoryCache(2)
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.get("a") == b"1"  # a is now more recent than b
    await cache.set("c", b"3", 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == b"1"
    assert await cache.get("c") == b"3"


async def test_expired_entries_are_evicted_before_live_ones() -> None:
    clock = FakeClock()
    cache = MemoryCache(2, clock=clock)
    await cache.set("live", b"1", 60)
    await cache.set("short", b"2", 1)
    await cache.get("short")  # most recently used, but about to expire
    clock.now += 2
    await cache.set("new", b"3", 60)
    assert await cache.get("live") == b"1"
    assert await cache.get("new") == b"3"


async def test_zero_ttl_stores_nothing_and_drops_old_value() -> None:
    cache = MemoryCache(2)
    await cache.set("k", b"v", 60)
    await cache.set("k", b"w", 0)
    assert await cache.get("k") is None


async def test_delete_forgets_key() -> None:
    cache = MemoryCache(2)
    await cache.set("k", b"v", 60)
    await cache.delete("k")
    await cache.delete("absent")
    assert await cache.get("k") is None


async def test_values_must_be_bytes() -> None:
    cache = MemoryCache(2)
    with pytest.raises(TypeError):
        await cache.set("k", "text", 60)  # type: ignore[arg-type]


async def test_closed_cache_refuses_use() -> None:
    cache = MemoryCache(2)
    await cache.set("k", b"v", 60)
    await cache.close()
    with pytest.raises(RuntimeError):
        await cache.get("k")


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryCache(0)


async def test_fill_does_not_overwrite_a_value() -> None:
    cache = MemoryCache(4)
    await cache.set("k", b"newer", 60)
    await cache.fill("k", b"loaded", 60)
    assert await cache.get("k") == b"newer"


async def test_fill_stores_when_absent() -> None:
    cache = MemoryCache(4)
    await cache.fill("k", b"loaded", 60)
    assert await cache.get("k") == b"loaded"


async def test_an_invalidation_keeps_a_racing_fill_out_until_it_expires() -> None:
    clock = FakeClock()
    cache = MemoryCache(4, clock=clock)
    await cache.set("grants", b"active grant", 60)
    # A reader missed and loaded the active grant from the store; then the grant is
    # revoked and the key invalidated; only then does the reader's fill arrive.
    await cache.invalidate("grants", 30)
    await cache.fill("grants", b"active grant", 60)
    assert await cache.get("grants") is None
    clock.now += 31
    await cache.fill("grants", b"revoked grant", 60)
    assert await cache.get("grants") == b"revoked grant"


async def test_empty_values_are_reserved_for_the_invalidation_mark() -> None:
    cache = MemoryCache(2)
    with pytest.raises(TypeError):
        await cache.set("k", b"", 60)
