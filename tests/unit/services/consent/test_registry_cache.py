"""The grants cache in front of Check cannot outlive a revoke: neither a Check that read
the store just before the revoke nor a revoke retried after its invalidation failed leaves
the old grant cached (the chaos run found a history read after its grant was revoked)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.storage.cache import MemoryCache
from healthbank.storage.errors import StorageUnavailable
from services.consent.domain import Grant
from services.consent.registry import (
    INVALIDATION_MARK_SECONDS,
    ConsentRegistry,
    GrantDraft,
    grants_cache_key,
)
from services.consent.store import SqliteConsentStore

PERSON = "p" * 26
HOSPITAL = "hospital-b"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
PATIENT = Principal(PrincipalKind.PATIENT, PERSON)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL)


class Changes:
    """Accepts every change (the audit service's part is tested elsewhere)."""

    async def consent_changed(self, *_: Any) -> None:
        return None

    async def glass_broken(self, *_: Any) -> None:
        return None


class PausedReads(SqliteConsentStore):
    """A store whose next grants read pauses after reading, until ``resume`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.pause = False
        self.read_done = asyncio.Event()
        self.resume = asyncio.Event()

    async def grants_for_hospital(self, person_token: str, hospital_id: str) -> list[Grant]:
        grants = await super().grants_for_hospital(person_token, hospital_id)
        if self.pause:
            self.pause = False
            self.read_done.set()
            await self.resume.wait()
        return grants


class Clock:
    """The cache's monotonic seconds, moved by the test."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


class FailingOnce(MemoryCache):
    """A cache whose next invalidation fails (Redis unreachable at that moment)."""

    fail_next = False

    async def invalidate(self, key: str, ttl_seconds: float) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StorageUnavailable("redis cache: invalidation not confirmed (TimeoutError)")
        await super().invalidate(key, ttl_seconds)


async def registry_on(store: SqliteConsentStore, cache: MemoryCache) -> ConsentRegistry:
    await store.open()
    return ConsentRegistry(
        store, sealer=None, now=lambda: NOW, changes=Changes(), cache=cache, cache_ttl_seconds=30
    )  # type: ignore[arg-type]  # no free text is sealed here


async def grant(registry: ConsentRegistry) -> Grant:
    draft = GrantDraft(
        person_token=PERSON,
        grantee_hospital_id=HOSPITAL,
        grantee_clinician_id="",
        categories=frozenset(),
        valid_from=None,
        expire_time=NOW + timedelta(days=1),
        request_id="r-1",
    )
    return await registry.create_grant(PATIENT, draft)


async def test_a_check_that_read_before_a_revoke_cannot_cache_the_old_grant(
    tmp_path: Path,
) -> None:
    store = PausedReads(tmp_path / "consent.db")
    registry = await registry_on(store, MemoryCache(64))
    created = await grant(registry)
    store.pause = True
    racing = asyncio.create_task(registry.check(CLINICIAN, PERSON, []))
    await store.read_done.wait()  # it holds the active grant, not yet cached
    await registry.revoke_grant(PATIENT, PERSON, created.grant_id)
    store.resume.set()
    assert (await racing).permit  # it began before the revoke
    after = await registry.check(CLINICIAN, PERSON, [])
    assert not after.permit
    assert after.basis == "GRANT_REVOKED"


async def test_a_revoke_retried_after_a_failed_invalidation_forgets_the_grant(
    tmp_path: Path,
) -> None:
    clock = Clock()
    cache = FailingOnce(64, clock=clock)
    registry = await registry_on(SqliteConsentStore(tmp_path / "consent.db"), cache)
    created = await grant(registry)
    clock.now += INVALIDATION_MARK_SECONDS  # the creation's mark has expired
    assert (await registry.check(CLINICIAN, PERSON, [])).permit
    assert await cache.get(grants_cache_key(PERSON, HOSPITAL)) is not None  # cached
    cache.fail_next = True
    with pytest.raises(StorageUnavailable):
        await registry.revoke_grant(PATIENT, PERSON, created.grant_id)
    # Stored as revoked, but the cache still holds the grant: the caller retries.
    again = await registry.revoke_grant(PATIENT, PERSON, created.grant_id)
    assert again.revoke_time == NOW
    assert not (await registry.check(CLINICIAN, PERSON, [])).permit
