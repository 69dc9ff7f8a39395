"""The Redis :class:`~healthbank.storage.cache.Cache`: shared by every replica, with a small
in-process near cache kept coherent over Redis pub/sub.

- ``get`` looks in the near cache, then in Redis; ``set`` writes both.
- ``delete`` removes the key from Redis and publishes it on :data:`INVALIDATION_CHANNEL`;
  every process (this one included) drops it from its near cache on that message. So a
  revoked grant or a new allergy is visible everywhere at once, not after a TTL.
- ``invalidate`` writes an invalidation mark instead (blocking ``fill`` for its TTL) and
  raises when Redis cannot confirm it: consent's revoke is not acknowledged before every
  replica would miss. The near cache takes a value only if no invalidation reached this
  process while it was being read, so a read racing a revoke cannot keep the old grant.
- Redis is an optimisation, never a dependency: when it is unreachable, reads miss (the
  caller goes to the store), writes are skipped, and the near cache is cleared (it can no
  longer hear invalidations). A warning is logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from healthbank.storage.cache import INVALIDATED, MemoryCache
from healthbank.storage.errors import StorageUnavailable

INVALIDATION_CHANNEL = "healthbank:cache:invalidate"
_KEY_PREFIX = "hb:"
_NEAR_TTL_SECONDS = 5.0
_log = logging.getLogger(__name__)


def _millis(ttl_seconds: float) -> int:
    """A positive TTL in whole milliseconds, as Redis's PX takes it (at least 1)."""
    return max(1, int(ttl_seconds * 1000))


class RedisCache:
    """Cache on Redis with a near cache; see the module docstring."""

    def __init__(
        self, url: str, *, near_entries: int = 1024, timeout_seconds: float = 0.25
    ) -> None:
        """Connect lazily to ``url``; Redis calls give up after ``timeout_seconds``."""
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._near = MemoryCache(near_entries)
        self._listener: asyncio.Task[None] | None = None
        self._healthy = True
        self._subscribed = False
        # Counts invalidations heard here (and outages): a value read from Redis enters the
        # near cache only if none arrived while it was being read.
        self._invalidations = 0

    async def open(self) -> RedisCache:
        """Start listening for invalidations (reconnects by itself after outages)."""
        self._listener = asyncio.create_task(self._listen(), name="redis-cache-invalidations")
        return self

    async def get(self, key: str) -> bytes | None:
        """See Cache.get."""
        # The near cache is trusted only while we can hear invalidations.
        near = await self._near.get(key) if self._subscribed else None
        if near is not None:
            return near
        invalidations = self._invalidations
        try:
            # decode_responses is off, so Redis answers bytes (the stub says bytes | str).
            value = cast(bytes | None, await self._redis.get(_KEY_PREFIX + key))
        except (RedisError, OSError) as error:
            await self._outage(error)
            return None
        self._recovered()
        if not value:  # absent, or the invalidation mark
            return None
        if invalidations == self._invalidations:
            await self._near.set(key, value, _NEAR_TTL_SECONDS)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """See Cache.set."""
        if ttl_seconds <= 0:
            return
        try:
            await self._redis.set(_KEY_PREFIX + key, value, px=_millis(ttl_seconds))
        except (RedisError, OSError) as error:
            await self._outage(error)
            return
        self._recovered()
        await self._near.set(key, value, min(ttl_seconds, _NEAR_TTL_SECONDS))

    async def fill(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """See Cache.fill (SET NX: a value or an invalidation mark already there wins)."""
        if ttl_seconds <= 0:
            return
        invalidations = self._invalidations
        try:
            stored = await self._redis.set(
                _KEY_PREFIX + key, value, px=_millis(ttl_seconds), nx=True
            )
        except (RedisError, OSError) as error:
            await self._outage(error)
            return
        self._recovered()
        if stored and invalidations == self._invalidations:
            await self._near.set(key, value, min(ttl_seconds, _NEAR_TTL_SECONDS))

    async def invalidate(self, key: str, ttl_seconds: float) -> None:
        """See Cache.invalidate: the mark in Redis, then every near cache told."""
        self._invalidations += 1
        await self._near.delete(key)
        try:
            if ttl_seconds > 0:
                await self._redis.set(_KEY_PREFIX + key, INVALIDATED, px=_millis(ttl_seconds))
            else:
                await self._redis.delete(_KEY_PREFIX + key)
            await self._redis.publish(INVALIDATION_CHANNEL, key)
        except (RedisError, OSError) as error:
            await self._outage(error)
            raise StorageUnavailable(
                f"redis cache: invalidation not confirmed ({type(error).__name__})"
            ) from error
        self._recovered()

    async def delete(self, key: str) -> None:
        """See Cache.delete: everywhere, including other processes' near caches."""
        self._invalidations += 1
        await self._near.delete(key)
        try:
            await self._redis.delete(_KEY_PREFIX + key)
            await self._redis.publish(INVALIDATION_CHANNEL, key)
        except (RedisError, OSError) as error:
            await self._outage(error)
            return
        self._recovered()

    async def close(self) -> None:
        """See Cache.close."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()
        await self._near.close()

    async def check(self) -> bool:
        """True when Redis answers PING now (reported, never required, by health)."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError) as error:
            await self._outage(error)
            return False

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(INVALIDATION_CHANNEL)
                    self._subscribed = True
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._invalidations += 1
                            await self._near.delete(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                self._subscribed = False
                await self._outage(error)
                await asyncio.sleep(1.0)

    async def _outage(self, error: BaseException) -> None:
        # Invalidations may be missed while Redis is away: the near cache cannot be trusted.
        self._invalidations += 1
        await self._near.clear()
        if self._healthy:
            self._healthy = False
            _log.warning(
                "redis cache unavailable (%s); serving without cache", type(error).__name__
            )

    def _recovered(self) -> None:
        if not self._healthy:
            self._healthy = True
            _log.info("redis cache available again")
