"""The consent registry: grants, revocation, proxies, break-glass and decisions over the store.

Holds no protocol concerns: callers pass validated domain values and get domain values back.

Every change (a grant created or revoked, a proxy registered or removed, a break-glass
session opened) is appended to the audit log *before* it is stored, with the caller as the
actor: no audit, no change. When the log cannot record it the :class:`ChangeLog` raises and
nothing is stored. A repeated request that changes nothing (a retried CreateGrant, a second
revoke, a second registration) returns what exists without a new event.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.core.ids import MonotonicUlidGenerator
from healthbank.crypto import Sealer
from healthbank.storage.cache import Cache
from services.consent.domain import (
    BREAK_GLASS_DURATION,
    CHANGE_GRANT_CREATED,
    CHANGE_GRANT_REVOKED,
    CHANGE_PROXY_REGISTERED,
    CHANGE_PROXY_REMOVED,
    REFUSAL_KIND_NOT_ALLOWED,
    REFUSAL_NOT_DATA_SUBJECT,
    BreakGlassSession,
    Decision,
    Grant,
    GrantNotFound,
    NotPermitted,
    Proxy,
    ProxyNotFound,
    break_glass_name,
    decide,
    grant_manager_refusal,
)
from services.consent.store import ConsentStore


@dataclass(frozen=True)
class GrantDraft:
    """What a caller asks for when creating a grant (validated by the caller)."""

    person_token: str
    grantee_hospital_id: str
    grantee_clinician_id: str
    categories: frozenset[int]
    valid_from: datetime | None
    expire_time: datetime
    request_id: str


class ChangeLog(Protocol):
    """Where consent records its changes (the audit service); each call appends one event
    and raises when it cannot (the change must then not happen)."""

    async def consent_changed(
        self, actor: Principal, person_token: str, resource_name: str, change: str
    ) -> None:
        """Record that ``actor`` made ``change`` (``CHANGE_*``) to ``resource_name``."""
        ...

    async def glass_broken(self, actor: Principal, person_token: str, session_name: str) -> None:
        """Record that ``actor`` opened the break-glass session ``session_name``."""
        ...


def grants_cache_key(person_token: str, hospital_id: str) -> str:
    """Cache key of a person's grants to one hospital (tokens and ids only, no PHI)."""
    return f"consent-grants:{person_token}:{hospital_id}"


def grants_to_json(grants: Sequence[Grant]) -> bytes:
    """Grants as cache bytes."""
    return json.dumps(
        [
            {
                "grant_id": g.grant_id,
                "person_token": g.person_token,
                "grantee_hospital_id": g.grantee_hospital_id,
                "grantee_clinician_id": g.grantee_clinician_id,
                "categories": sorted(g.categories),
                "valid_from": g.valid_from.isoformat(),
                "expire_time": g.expire_time.isoformat(),
                "create_time": g.create_time.isoformat(),
                "request_id": g.request_id,
                "revoke_time": g.revoke_time.isoformat() if g.revoke_time else None,
            }
            for g in grants
        ]
    ).encode()


def grants_from_json(raw: bytes) -> list[Grant]:
    """Inverse of grants_to_json."""
    return [
        Grant(
            grant_id=g["grant_id"],
            person_token=g["person_token"],
            grantee_hospital_id=g["grantee_hospital_id"],
            grantee_clinician_id=g["grantee_clinician_id"],
            categories=frozenset(g["categories"]),
            valid_from=datetime.fromisoformat(g["valid_from"]),
            expire_time=datetime.fromisoformat(g["expire_time"]),
            create_time=datetime.fromisoformat(g["create_time"]),
            request_id=g["request_id"],
            revoke_time=datetime.fromisoformat(g["revoke_time"]) if g["revoke_time"] else None,
        )
        for g in json.loads(raw)
    ]


INVALIDATION_MARK_SECONDS = 2.0
"""How long a grant change keeps Check's fills out of the grants cache: twice as long as a
fill may take after its store read began (slower ones are not cached), so no Check that read
the grants before the change can cache them after it."""


def justification_aad(session_name: str) -> bytes:
    """Associated data binding a sealed justification to its break-glass session."""
    return f"break-glass-justification:{session_name}".encode()


class ConsentRegistry:
    """Creates, revokes and lists grants, opens break-glass sessions and decides access."""

    def __init__(
        self,
        store: ConsentStore,
        sealer: Sealer,
        now: Callable[[], datetime],
        changes: ChangeLog,
        cache: Cache | None = None,
        cache_ttl_seconds: float = 0.0,
    ) -> None:
        """Use ``store`` for persistence, ``sealer`` for free text, ``now`` as the clock,
        ``changes`` to record every change first, and ``cache`` (Redis at scale) for the
        grants Check reads, invalidated on every change."""
        self._store = store
        self._changes = changes
        self._sealer = sealer
        self._now = now
        self._cache = cache
        self._cache_ttl = cache_ttl_seconds
        # Monotonic ids keep "newest first" exact even for grants made in one millisecond.
        self._new_id = MonotonicUlidGenerator()
        # Retries of one CreateGrant racing in this process take turns, so only the first
        # records and stores a grant and the others find it (one event per grant).
        self._creating: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def require_grant_manager(self, actor: Principal, person_token: str) -> None:
        """Return if ``actor`` may manage ``person_token``'s grants (the patient, or a proxy
        they registered); raise NotPermitted otherwise."""
        registered = (
            actor.kind == PrincipalKind.PROXY
            and await self._store.get_proxy(person_token, actor.subject) is not None
        )
        refusal = grant_manager_refusal(actor, person_token, registered_proxy=registered)
        if refusal is not None:
            raise NotPermitted(refusal)

    async def create_grant(self, actor: Principal, draft: GrantDraft) -> Grant:
        """Record and store a grant for ``draft``, or return the one an earlier try with its
        request id created. Raises NotPermitted for a caller who may not manage grants."""
        await self.require_grant_manager(actor, draft.person_token)
        turn = self._creating.setdefault((draft.person_token, draft.request_id), asyncio.Lock())
        async with turn:
            return await self._create_once(actor, draft)

    async def _create_once(self, actor: Principal, draft: GrantDraft) -> Grant:
        earlier = await self._store.grant_for_request(draft.person_token, draft.request_id)
        if earlier is not None:
            return earlier
        now = self._now()
        grant = Grant(
            grant_id=self._new_id(now),
            person_token=draft.person_token,
            grantee_hospital_id=draft.grantee_hospital_id,
            grantee_clinician_id=draft.grantee_clinician_id,
            categories=draft.categories,
            valid_from=draft.valid_from or now,
            expire_time=draft.expire_time,
            create_time=now,
            request_id=draft.request_id,
        )
        await self._changes.consent_changed(
            actor, grant.person_token, grant.name, CHANGE_GRANT_CREATED
        )
        created = await self._store.create_grant(grant)
        await self._forget_grants(created)
        return created

    async def revoke_grant(self, actor: Principal, person_token: str, grant_id: str) -> Grant:
        """Record and revoke the grant now (idempotent: a revoked grant keeps its first
        revoke time, and revoking it again records nothing).

        Raises NotPermitted for a caller who may not manage grants, GrantNotFound when the
        person has no such grant.
        """
        await self.require_grant_manager(actor, person_token)
        current = await self._store.get_grant(person_token, grant_id)
        if current is None:
            raise GrantNotFound(grant_id)
        if current.revoke_time is not None:
            # A retry after an attempt that died between store and cache: forget again.
            await self._forget_grants(current)
            return current
        await self._changes.consent_changed(actor, person_token, current.name, CHANGE_GRANT_REVOKED)
        grant = await self._store.revoke_grant(person_token, grant_id, self._now())
        if grant is None:
            raise GrantNotFound(grant_id)
        # The next Check must deny at once, on every replica.
        await self._forget_grants(grant)
        return grant

    async def list_grants(
        self, actor: Principal, person_token: str, page_size: int, after_grant_id: str | None
    ) -> tuple[list[Grant], str | None]:
        """A page of the person's grants, newest first, and the last id if more follow.

        Raises NotPermitted for a caller who may not manage the person's grants.
        """
        await self.require_grant_manager(actor, person_token)
        # One extra row tells whether another page exists without a second query.
        rows = await self._store.list_grants(person_token, page_size + 1, after_grant_id)
        page = rows[:page_size]
        has_more = len(rows) > page_size
        return page, (page[-1].grant_id if has_more and page else None)

    async def check(
        self, accessor: Principal, person_token: str, categories: Iterable[int]
    ) -> Decision:
        """Decide whether ``accessor`` may read the person's records in ``categories`` now."""
        now = self._now()
        grants: list[Grant] = []
        sessions: list[BreakGlassSession] = []
        # Load only what a rule could use: grants for the accessor's hospital (a service's
        # opt-ins), and the accessor's own break-glass sessions.
        if accessor.kind in (PrincipalKind.CLINICIAN, PrincipalKind.EMERGENCY):
            if accessor.hospital_id:
                grants = await self._grants_for_hospital(person_token, accessor.hospital_id)
            if accessor.kind == PrincipalKind.EMERGENCY:
                sessions = await self._store.break_glass_sessions(
                    person_token, accessor.subject, now
                )
        elif accessor.kind == PrincipalKind.SERVICE:
            # Opt-ins are grants naming the service where a hospital would stand.
            grants = await self._grants_for_hospital(person_token, accessor.subject)
        return decide(grants, sessions, accessor, person_token, categories, now)

    async def _grants_for_hospital(self, person_token: str, hospital_id: str) -> list[Grant]:
        """The grants Check needs, through the cache; the decision itself is never cached,
        so expiry is judged against the clock on every call."""
        key = grants_cache_key(person_token, hospital_id)
        cached = await self._cache.get(key) if self._cache is not None else None
        if cached is not None:
            return grants_from_json(cached)
        loaded_at = time.monotonic()
        grants = await self._store.grants_for_hospital(person_token, hospital_id)
        # fill, not set: a change stored after our read has left a mark that keeps what
        # we read out of the cache. A read slower than half the mark's life is not cached
        # at all (the mark may be gone by the time it would land).
        elapsed = time.monotonic() - loaded_at
        if self._cache is not None and elapsed < INVALIDATION_MARK_SECONDS / 2:
            await self._cache.fill(key, grants_to_json(grants), self._cache_ttl)
        return grants

    async def _forget_grants(self, grant: Grant) -> None:
        """Called after every grant change is stored; raises StorageUnavailable (the change
        is then retried) when the cache cannot confirm it forgot the old grants."""
        if self._cache is not None:
            await self._cache.invalidate(
                grants_cache_key(grant.person_token, grant.grantee_hospital_id),
                INVALIDATION_MARK_SECONDS,
            )

    async def break_glass(
        self, opened_by: Principal, person_token: str, justification: str
    ) -> BreakGlassSession:
        """Open a break-glass session for ``opened_by`` on the person, lasting
        :data:`BREAK_GLASS_DURATION`; the justification is stored sealed."""
        now = self._now()
        session_id = self._new_id(now)
        sealed = await self._sealer.seal(
            justification.encode("utf-8"),
            justification_aad(break_glass_name(person_token, session_id)),
        )
        session = BreakGlassSession(
            session_id=session_id,
            person_token=person_token,
            opened_by=opened_by.subject,
            hospital_id=opened_by.hospital_id,
            open_time=now,
            expire_time=now + BREAK_GLASS_DURATION,
            sealed_justification=sealed,
        )
        await self._changes.glass_broken(opened_by, person_token, session.name)
        await self._store.add_break_glass(session)
        return session

    async def register_proxy(self, actor: Principal, person_token: str, proxy_id: str) -> Proxy:
        """Record and register ``proxy_id`` for the person (the patient only); a second
        registration returns the first and records nothing."""
        _require_data_subject(actor, person_token)
        existing = await self._store.get_proxy(person_token, proxy_id)
        if existing is not None:
            return existing
        proxy = Proxy(person_token=person_token, proxy_id=proxy_id, create_time=self._now())
        await self._changes.consent_changed(
            actor, person_token, proxy.name, CHANGE_PROXY_REGISTERED
        )
        return await self._store.add_proxy(proxy)

    async def remove_proxy(self, actor: Principal, person_token: str, proxy_id: str) -> Proxy:
        """Record and remove a registered proxy (the patient only); ProxyNotFound if none."""
        _require_data_subject(actor, person_token)
        proxy = await self._store.get_proxy(person_token, proxy_id)
        if proxy is None:
            raise ProxyNotFound(proxy_id)
        await self._changes.consent_changed(actor, person_token, proxy.name, CHANGE_PROXY_REMOVED)
        await self._store.remove_proxy(person_token, proxy_id)
        return proxy

    async def list_proxies(self, actor: Principal, person_token: str) -> list[Proxy]:
        """The person's proxies, oldest first (the patient only)."""
        _require_data_subject(actor, person_token)
        return await self._store.list_proxies(person_token)


def _require_data_subject(actor: Principal, person_token: str) -> None:
    """Only the patient themself chooses who acts for them (a proxy cannot add another)."""
    if actor.kind != PrincipalKind.PATIENT:
        raise NotPermitted(REFUSAL_KIND_NOT_ALLOWED)
    if actor.subject != person_token:
        raise NotPermitted(REFUSAL_NOT_DATA_SUBJECT)
