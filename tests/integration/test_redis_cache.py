"""The Redis cache against the real Redis started by tools/engines: sharing between
processes, pub/sub invalidation of near caches, and serving through a Redis outage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import ModuleType

import pytest

from healthbank.storage.errors import StorageUnavailable
from healthbank.storage.redis_cache import RedisCache


@pytest.fixture
async def two_replicas(engines: dict[str, str]) -> AsyncIterator[tuple[RedisCache, RedisCache]]:
    first = await RedisCache(engines["HEALTHBANK_REDIS_URL"]).open()
    second = await RedisCache(engines["HEALTHBANK_REDIS_URL"]).open()
    await asyncio.sleep(0.2)  # both subscribed before the test publishes
    yield first, second
    await first.close()
    await second.close()


async def test_value_set_by_one_replica_is_read_by_another(
    two_replicas: tuple[RedisCache, RedisCache],
) -> None:
    first, second = two_replicas
    key = f"summary:{uuid.uuid4().hex}"
    await first.set(key, b"sealed-summary", ttl_seconds=30)
    assert await second.get(key) == b"sealed-summary"


async def test_delete_reaches_other_replicas_near_cache(
    two_replicas: tuple[RedisCache, RedisCache],
) -> None:
    first, second = two_replicas
    key = f"grants:{uuid.uuid4().hex}"
    await first.set(key, b"v1", ttl_seconds=30)
    assert await second.get(key) == b"v1"  # now in second's near cache too
    await first.delete(key)
    for _ in range(50):
        if await second.get(key) is None:
            break
        await asyncio.sleep(0.02)
    assert await second.get(key) is None


async def test_an_invalidation_reaches_other_replicas_and_blocks_a_racing_fill(
    two_replicas: tuple[RedisCache, RedisCache],
) -> None:
    first, second = two_replicas
    key = f"grants:{uuid.uuid4().hex}"
    await first.fill(key, b"active", ttl_seconds=30)
    assert await second.get(key) == b"active"  # in second's near cache too
    await first.invalidate(key, ttl_seconds=30)
    # second loaded "active" from the store before the revoke; its fill lands after.
    await second.fill(key, b"active", ttl_seconds=30)
    for _ in range(50):
        if await second.get(key) is None:
            break
        await asyncio.sleep(0.02)
    assert await second.get(key) is None
    assert await first.get(key) is None


async def test_ttl_expires(two_replicas: tuple[RedisCache, RedisCache]) -> None:
    first, second = two_replicas
    key = f"ttl:{uuid.uuid4().hex}"
    await first.set(key, b"short", ttl_seconds=0.2)
    await asyncio.sleep(0.4)
    assert await second.get(key) is None


async def test_redis_outage_means_misses_not_errors(
    engines: dict[str, str], engines_tool: ModuleType
) -> None:
    cache = await RedisCache(engines["HEALTHBANK_REDIS_URL"]).open()
    key = f"outage:{uuid.uuid4().hex}"
    tools = engines_tool
    try:
        await cache.set(key, b"before", ttl_seconds=60)
        tools.down(only="redis")
        assert not await cache.check()
        # Near-cached values are dropped: invalidations cannot be heard during an outage.
        assert await cache.get(key) is None
        await cache.set(key, b"during", ttl_seconds=60)  # skipped, no exception
        await cache.fill(key, b"during", ttl_seconds=60)
        await cache.delete(key)
        # An invalidation that cannot be confirmed is an error: a revoke is retried.
        with pytest.raises(StorageUnavailable):
            await cache.invalidate(key, ttl_seconds=60)
    finally:
        tools.up(only="redis")
    assert await cache.check()
    await cache.set(key, b"after", ttl_seconds=60)
    assert await cache.get(key) == b"after"
    await cache.close()
