"""A small key-value cache for derived data (emergency summaries, consent decisions).

:class:`Cache` is the narrow interface services depend on; :class:`MemoryCache` is the
embedded default (in-process LRU with per-entry TTL). A Redis implementation of the same
protocol (with pub/sub invalidation on revoke) replaces it at scale, so the protocol only
speaks bytes and seconds: nothing Python-specific crosses it.

Values are opaque bytes. Callers cache only sealed (encrypted) or non-identifying data,
because a shared cache is outside the vault's envelope encryption.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import Counter

from healthbank.core.telemetry import traced

__all__ = ["Cache", "CountedCache", "MemoryCache", "emergency_summary_key"]

INVALIDATED = b""
"""The stored invalidation mark: empty values are reserved for it and read as a miss."""


@runtime_checkable
class Cache(Protocol):
    """Bytes keyed by strings, each with a time to live."""

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds`` (<= 0 stores nothing)."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error when absent)."""
        ...

    async def fill(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store ``value`` unless ``key`` holds a value or an invalidation mark.

        For data loaded from the store after a miss: a load that raced an
        :meth:`invalidate` cannot put the data it read before the change back.
        """
        ...

    async def invalidate(self, key: str, ttl_seconds: float) -> None:
        """Replace ``key`` by an invalidation mark for ``ttl_seconds``: reads miss, and no
        :meth:`fill` lands until it expires. Raises StorageUnavailable when the mark cannot
        be confirmed, so a change that must show at once (a revoked grant) is not
        acknowledged before it does."""
        ...

    async def close(self) -> None:
        """Release connections; the cache is unusable afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class _Entry:
    value: bytes
    expires_at: float


class MemoryCache:
    """In-process LRU cache with per-entry TTL: the embedded default :class:`Cache`.

    ``clock`` returns monotonic seconds; tests inject a fake one. At most ``max_entries``
    values are kept; storing one more evicts the least recently used.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Create an empty cache holding at most ``max_entries`` values."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._closed = False

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        """See :meth:`Cache.get`; a hit makes ``key`` the most recently used."""
        self._ensure_open()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value or None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """See :meth:`Cache.set`."""
        self._ensure_open()
        if not isinstance(value, bytes) or not value:
            raise TypeError("cache values must be non-empty bytes")
        if ttl_seconds <= 0:
            # A zero TTL means "do not cache" (settings.cache_ttl_seconds = 0 turns caching off).
            self._entries.pop(key, None)
            return
        self._entries[key] = _Entry(value, self._clock() + ttl_seconds)
        self._entries.move_to_end(key)
        self._evict()

    async def delete(self, key: str) -> None:
        """See :meth:`Cache.delete`."""
        self._ensure_open()
        self._entries.pop(key, None)

    async def fill(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """See :meth:`Cache.fill`."""
        self._ensure_open()
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= self._clock():
            await self.set(key, value, ttl_seconds)

    async def invalidate(self, key: str, ttl_seconds: float) -> None:
        """See :meth:`Cache.invalidate`."""
        self._ensure_open()
        self._entries.pop(key, None)
        if ttl_seconds > 0:
            self._entries[key] = _Entry(INVALIDATED, self._clock() + ttl_seconds)
            self._evict()

    async def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    async def close(self) -> None:
        """See :meth:`Cache.close`; drops every entry."""
        self._entries.clear()
        self._closed = True

    def _evict(self) -> None:
        # Expired entries go first so a burst of short-lived values does not push out live ones.
        if len(self._entries) <= self._max_entries:
            return
        now = self._clock()
        for key in [k for k, entry in self._entries.items() if entry.expires_at <= now]:
            del self._entries[key]
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("cache is closed")


class CountedCache:
    """A :class:`Cache` that counts its reads as hits and misses (healthbank.cache.lookups)
    and traces each operation (spans ``cache get|set|delete``, never the key)."""

    def __init__(self, inner: Cache, lookups: Counter) -> None:
        """Count the reads of ``inner`` on ``lookups``."""
        self._inner = inner
        self._lookups = lookups

    async def get(self, key: str) -> bytes | None:
        """See :meth:`Cache.get`; counted with result hit or miss (never the key)."""
        with traced("cache get") as span:
            value = await self._inner.get(key)
            span.set_attribute("cache.hit", value is not None)
        self._lookups.add(1, {"result": "miss" if value is None else "hit"})
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """See :meth:`Cache.set`."""
        with traced("cache set", {"cache.value_bytes": len(value)}):
            await self._inner.set(key, value, ttl_seconds)

    async def delete(self, key: str) -> None:
        """See :meth:`Cache.delete`."""
        with traced("cache delete"):
            await self._inner.delete(key)

    async def fill(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """See :meth:`Cache.fill`."""
        with traced("cache fill", {"cache.value_bytes": len(value)}):
            await self._inner.fill(key, value, ttl_seconds)

    async def invalidate(self, key: str, ttl_seconds: float) -> None:
        """See :meth:`Cache.invalidate`."""
        with traced("cache invalidate"):
            await self._inner.invalidate(key, ttl_seconds)

    async def close(self) -> None:
        """See :meth:`Cache.close`."""
        await self._inner.close()


def emergency_summary_key(person_token: str) -> str:
    """Cache key of a person's emergency summary: filled by record-lookup and used only
    while the person's facts version (RecordStore.facts_version) is the one it was computed
    at, so a new allergy shows at once even where ingest cannot reach record-lookup's cache
    (the embedded default: one in-process cache per service); ingest deletes it too."""
    return f"emergency-summary:{person_token}"
