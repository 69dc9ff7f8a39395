"""Opening a store or a cache on the backend the settings select: a SQLite file or a
Cassandra keyspace; an in-process cache or Redis."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar, cast

from healthbank.core.config import Settings
from healthbank.core.telemetry import business_metrics
from healthbank.storage.cache import Cache, CountedCache, MemoryCache

__all__ = ["Unopened", "open_cache", "open_store"]

StoreT = TypeVar("StoreT")
StoreT_co = TypeVar("StoreT_co", covariant=True)


class Unopened(Protocol[StoreT_co]):
    """A store built but not yet connected; ``open()`` connects, migrates and returns it."""

    async def open(self) -> StoreT_co:
        """Connect, apply pending migrations and return the usable store."""
        ...


async def open_store(
    settings: Settings,
    concern: str,
    *,
    sqlite: Callable[[Path], Unopened[StoreT]],
    cassandra: str,
) -> StoreT:
    """Open (and migrate) the store of ``concern`` on ``settings.storage_backend``.

    SQLite: ``sqlite(<data_dir>/<concern>.db)``. Cassandra: ``cassandra`` names the store
    class as ``"module:Class"``, built on the keyspace ``<prefix>_<concern>`` with the
    module's ``MIGRATIONS``.
    """
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.storage.cassandra import keyspace_for

        module_name, _, class_name = cassandra.partition(":")
        module = importlib.import_module(module_name)
        store_class = getattr(module, class_name)
        keyspace = keyspace_for(settings, concern, module.MIGRATIONS)
        return cast(StoreT, await store_class(keyspace).open())
    return await sqlite(settings.data_dir / f"{concern}.db").open()


async def open_cache(settings: Settings, *, max_entries: int = 4096) -> Cache:
    """The cache the settings select: in-process (embedded) or Redis with pub/sub; counted."""
    inner: Cache
    if settings.cache_backend == "redis":
        # Imported only here: the embedded default never loads the Redis client.
        from healthbank.storage.redis_cache import RedisCache

        inner = await RedisCache(settings.redis_url, near_entries=max_entries).open()
    else:
        inner = MemoryCache(max_entries)
    return CountedCache(inner, business_metrics().cache_lookups)
