"""Consent rules: grants, break-glass sessions and the policy decision.

Pure functions and value types: no gRPC, no storage. :func:`decide` is the policy decision
point every clinical read goes through; it denies unless a rule explicitly permits.

Person tokens, person names and hospital ids follow :mod:`healthbank.contracts.names`;
grants and break-glass sessions are resources under their person.

Record categories are the ``healthbank.common.v1.RecordCategory`` enum numbers (as in
``healthbank.records``); an empty category set means "all categories".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from healthbank.contracts.names import is_person_token, person_name
from healthbank.contracts.principal import (
    Principal,
    PrincipalKind,
    Purpose,
    is_principal_subject,
)
from healthbank.core.ids import is_ulid

# An emergency episode (arrival, stabilisation, handover to a ward) fits in a few hours;
# access without consent must not outlive it unreviewed. Longer care needs a new, separately
# justified session or the patient's consent.
BREAK_GLASS_DURATION = timedelta(hours=4)

# Grants must always expire; ten years bounds how long a forgotten grant stays open.
MAX_GRANT_YEARS = 10

MIN_JUSTIFICATION_LENGTH = 10

# Machine-readable decision bases (CheckResponse.basis).
BASIS_SELF = "SELF"
BASIS_BREAK_GLASS = "BREAK_GLASS"
BASIS_GRANT = "GRANT"
BASIS_NO_GRANT = "NO_GRANT"
BASIS_GRANT_EXPIRED = "GRANT_EXPIRED"
BASIS_GRANT_REVOKED = "GRANT_REVOKED"
BASIS_CATEGORY_NOT_GRANTED = "CATEGORY_NOT_GRANTED"

# Categories 1-8 of healthbank.common.v1.RecordCategory are records; 0 (unspecified) is
# never valid.
RECORD_CATEGORIES = frozenset(range(1, 9))
# RECORD_CATEGORY_PERSONAL_INSIGHTS: no record, the patient's opt-in to a service's analysis
# of their own data, granted to that service by name (ADR 30).
PERSONAL_INSIGHTS = 9
OPT_IN_CATEGORIES = frozenset({PERSONAL_INSIGHTS})
KNOWN_CATEGORIES = RECORD_CATEGORIES | OPT_IN_CATEGORIES

# Purposes a clinician's read under a patient grant may declare: grants are for care.
_CARE_PURPOSES = frozenset({Purpose.TREATMENT, Purpose.EMERGENCY})

_GRANT_NAME = re.compile(r"persons/([^/]+)/grants/([^/]+)")
_PROXY_NAME = re.compile(r"persons/([^/]+)/proxies/([^/]+)")

# What a consent change was, in its audit event's basis (ACTION_CONSENT_CHANGE).
CHANGE_GRANT_CREATED = "GRANT_CREATED"
CHANGE_GRANT_REVOKED = "GRANT_REVOKED"
CHANGE_PROXY_REGISTERED = "PROXY_REGISTERED"
CHANGE_PROXY_REMOVED = "PROXY_REMOVED"

# Why a caller may not manage a person's grants (the PERMISSION_DENIED reason).
REFUSAL_NOT_DATA_SUBJECT = "NOT_DATA_SUBJECT"
REFUSAL_PROXY_NOT_REGISTERED = "PROXY_NOT_REGISTERED"
REFUSAL_KIND_NOT_ALLOWED = "PRINCIPAL_KIND_NOT_ALLOWED"


def grant_name(person_token: str, grant_id: str) -> str:
    """Resource name of a grant: ``persons/{person_token}/grants/{grant_id}``."""
    return f"{person_name(person_token)}/grants/{grant_id}"


def parse_grant_name(name: str) -> tuple[str, str] | None:
    """(person_token, grant_id) of a grant name, or None when ``name`` is malformed."""
    match = _GRANT_NAME.fullmatch(name)
    if match is None or not is_person_token(match.group(1)) or not is_ulid(match.group(2)):
        return None
    return match.group(1), match.group(2)


def proxy_name(person_token: str, proxy_id: str) -> str:
    """Resource name of a proxy registration: ``persons/{person_token}/proxies/{proxy_id}``."""
    return f"{person_name(person_token)}/proxies/{proxy_id}"


def parse_proxy_name(name: str) -> tuple[str, str] | None:
    """(person_token, proxy_id) of a proxy name, or None when ``name`` is malformed."""
    match = _PROXY_NAME.fullmatch(name)
    if match is None or not is_person_token(match.group(1)):
        return None
    if not is_principal_subject(match.group(2)):
        return None
    return match.group(1), match.group(2)


def grant_manager_refusal(
    actor: Principal, person_token: str, *, registered_proxy: bool
) -> str | None:
    """Why ``actor`` may not create, revoke or list ``person_token``'s grants, or None.

    Consent is the patient's: the patient themself, or a proxy they registered
    (``registered_proxy``: the actor is a PROXY registered for this person). Nobody else,
    services included: a service acting "for" a patient is how a compromised one would
    forge consent.
    """
    if actor.kind == PrincipalKind.PATIENT:
        return None if actor.subject == person_token else REFUSAL_NOT_DATA_SUBJECT
    if actor.kind == PrincipalKind.PROXY:
        return None if registered_proxy else REFUSAL_PROXY_NOT_REGISTERED
    return REFUSAL_KIND_NOT_ALLOWED


def break_glass_name(person_token: str, session_id: str) -> str:
    """Resource name of a break-glass session: ``persons/{person_token}/breakGlass/{id}``."""
    return f"{person_name(person_token)}/breakGlass/{session_id}"


def max_grant_expiry(now: datetime) -> datetime:
    """The latest expire_time a grant created at ``now`` may have (ten calendar years on)."""
    try:
        return now.replace(year=now.year + MAX_GRANT_YEARS)
    except ValueError:
        # 29 February ten years on is not a date: end on the 28th instead.
        return now.replace(year=now.year + MAX_GRANT_YEARS, day=28)


class GrantNotFound(Exception):
    """The person has no grant with the given id."""


class ProxyNotFound(Exception):
    """The person has no proxy with the given id."""


class NotPermitted(Exception):
    """The caller may not make this change for this person; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def grant_period_problems(
    valid_from: datetime | None, expire_time: datetime, now: datetime
) -> list[tuple[str, str]]:
    """What is wrong with a new grant's validity period, as (field, rule) pairs.

    ``valid_from`` None means "from now". A grant must end in the future, at most ten
    years ahead, and after it starts.
    """
    problems: list[tuple[str, str]] = []
    if expire_time <= now:
        problems.append(("expire_time", "must be in the future"))
    elif expire_time > max_grant_expiry(now):
        problems.append(("expire_time", f"must be at most {MAX_GRANT_YEARS} years ahead"))
    if valid_from is not None and valid_from >= expire_time:
        problems.append(("valid_from", "must be before expire_time"))
    return problems


_PAGE_TOKEN_PREFIX = "grants.v1"


def encode_page_token(person_token: str, last_grant_id: str) -> str:
    """An opaque page token continuing a person's grant list after ``last_grant_id``.

    The grant id is the clustering key of a person's grants (newest first) on Cassandra and
    the primary key on SQLite, so the next page is one range read on either backend.
    """
    raw = f"{_PAGE_TOKEN_PREFIX}:{person_token}:{last_grant_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(page_token: str, person_token: str) -> str | None:
    """The grant id a page token continues after, or None when it is not a token issued
    for this person's list (malformed, tampered with, or from another list)."""
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    prefix, _, rest = raw.partition(":")
    token, _, grant_id = rest.partition(":")
    if prefix != _PAGE_TOKEN_PREFIX or token != person_token or not is_ulid(grant_id):
        return None
    return grant_id


@dataclass(frozen=True)
class Grant:
    """A patient's permission for a hospital (or one clinician there) to read their records."""

    grant_id: str
    person_token: str
    grantee_hospital_id: str
    grantee_clinician_id: str
    categories: frozenset[int]
    valid_from: datetime
    expire_time: datetime
    create_time: datetime
    request_id: str
    revoke_time: datetime | None = None

    @property
    def name(self) -> str:
        """Resource name of this grant."""
        return grant_name(self.person_token, self.grant_id)

    def is_revoked(self, now: datetime) -> bool:
        """True once the grant has been revoked (as of ``now``)."""
        return self.revoke_time is not None and self.revoke_time <= now

    def is_expired(self, now: datetime) -> bool:
        """True from expire_time on."""
        return now >= self.expire_time

    def is_active(self, now: datetime) -> bool:
        """True while the grant permits access: started, not expired, not revoked."""
        return self.valid_from <= now and not self.is_expired(now) and not self.is_revoked(now)

    def applies_to(self, accessor: Principal) -> bool:
        """True if the grant names the accessor's hospital (and clinician, if it names one)."""
        if not accessor.hospital_id or accessor.hospital_id != self.grantee_hospital_id:
            return False
        return not self.grantee_clinician_id or self.grantee_clinician_id == accessor.subject

    def covered(self, requested: frozenset[int]) -> frozenset[int] | None:
        """The requested categories this grant covers; None means "all of them".

        An empty ``requested`` asks for all categories; an empty grant covers all.
        """
        if not self.categories:
            return None
        if not requested:
            return self.categories
        return self.categories & requested


@dataclass(frozen=True)
class Proxy:
    """Someone the patient registered to manage their grants (a PROXY principal's subject)."""

    person_token: str
    proxy_id: str
    create_time: datetime

    @property
    def name(self) -> str:
        """Resource name of this registration."""
        return proxy_name(self.person_token, self.proxy_id)


@dataclass(frozen=True)
class BreakGlassSession:
    """Emergency access to one person, opened by one emergency actor, for a short time."""

    session_id: str
    person_token: str
    opened_by: str
    hospital_id: str
    open_time: datetime
    expire_time: datetime
    # The justification is free text that may mention the patient: kept sealed.
    sealed_justification: bytes

    @property
    def name(self) -> str:
        """Resource name of this session."""
        return break_glass_name(self.person_token, self.session_id)

    def is_open(self, now: datetime) -> bool:
        """True while the session grants access."""
        return self.open_time <= now < self.expire_time


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`.

    ``permitted_categories`` is the part of the request the accessor may read, ascending. It
    is empty on deny, and on permit only when "all categories" were asked for and allowed.
    """

    permit: bool
    basis: str
    authority_name: str = ""
    permitted_categories: tuple[int, ...] = ()


def _deny(basis: str) -> Decision:
    return Decision(permit=False, basis=basis)


def decide(
    grants: Iterable[Grant],
    break_glass_sessions: Iterable[BreakGlassSession],
    accessor: Principal,
    person_token: str,
    categories: Iterable[int],
    now: datetime,
) -> Decision:
    """Decide whether ``accessor`` may read ``person_token``'s records in ``categories`` now.

    Rules, in order: the patient themself (SELF); an emergency actor inside a break-glass
    session they opened for this person (BREAK_GLASS); a clinician (or emergency actor) of a
    hospital holding an active grant that covers some of the categories (GRANT, permitted
    categories = the covered ones). Anything else is denied with the most specific reason:
    a covering grant that was revoked, then one that expired, then grants that exist but
    cover none of the categories, else NO_GRANT. A service may only learn the patient's
    opt-in to its own analysis: an active grant naming the service (as grantee) covering the
    opt-in categories asked for (ADR 30). Researchers and committee members are not clinical
    readers and are always denied.
    """
    requested = frozenset(categories)
    if accessor.kind == PrincipalKind.PATIENT:
        if accessor.subject == person_token:
            return Decision(
                permit=True, basis=BASIS_SELF, permitted_categories=tuple(sorted(requested))
            )
        return _deny(BASIS_NO_GRANT)
    if accessor.kind == PrincipalKind.EMERGENCY:
        session = _open_session(break_glass_sessions, accessor, person_token, now)
        if session is not None:
            return Decision(
                permit=True,
                basis=BASIS_BREAK_GLASS,
                authority_name=session.name,
                permitted_categories=tuple(sorted(requested)),
            )
    elif accessor.kind == PrincipalKind.SERVICE:
        if not requested or not requested <= OPT_IN_CATEGORIES:
            return _deny(BASIS_NO_GRANT)
        opt_ins = [
            grant
            for grant in grants
            if grant.person_token == person_token and grant.grantee_hospital_id == accessor.subject
        ]
        return _decide_by_grants(opt_ins, requested, now)
    elif accessor.kind != PrincipalKind.CLINICIAN:
        return _deny(BASIS_NO_GRANT)
    if accessor.purpose not in _CARE_PURPOSES:
        return _deny(BASIS_NO_GRANT)
    applicable = [
        grant
        for grant in grants
        if grant.person_token == person_token and grant.applies_to(accessor)
    ]
    return _decide_by_grants(applicable, requested, now)


def _open_session(
    sessions: Iterable[BreakGlassSession], accessor: Principal, person_token: str, now: datetime
) -> BreakGlassSession | None:
    """The open session for this person opened by this accessor, latest expiry first."""
    matching = [
        session
        for session in sessions
        if session.person_token == person_token
        and session.opened_by == accessor.subject
        and session.is_open(now)
    ]
    return max(matching, key=lambda session: session.expire_time, default=None)


def _decide_by_grants(grants: list[Grant], requested: frozenset[int], now: datetime) -> Decision:
    """Permit on the active grants covering the request, else explain the denial."""
    covering: list[tuple[Grant, frozenset[int] | None]] = []
    for grant in grants:
        covered = grant.covered(requested)
        if covered is None or covered:
            covering.append((grant, covered))
    active = [(grant, covered) for grant, covered in covering if grant.is_active(now)]
    if active:
        return _permit_by_grants(active, requested)
    if any(grant.is_revoked(now) for grant, _ in covering):
        return _deny(BASIS_GRANT_REVOKED)
    if any(grant.is_expired(now) for grant, _ in covering):
        return _deny(BASIS_GRANT_EXPIRED)
    if any(grant.is_active(now) for grant in grants):
        return _deny(BASIS_CATEGORY_NOT_GRANTED)
    return _deny(BASIS_NO_GRANT)


def _permit_by_grants(
    active: list[tuple[Grant, frozenset[int] | None]], requested: frozenset[int]
) -> Decision:
    """Permit the union of what the active grants cover; name the grant covering most."""

    def breadth(item: tuple[Grant, frozenset[int] | None]) -> tuple[int, str]:
        grant, covered = item
        # A grant for all categories beats any partial one; then the newest wins.
        return (len(KNOWN_CATEGORIES) + 1 if covered is None else len(covered), grant.grant_id)

    authority, _ = max(active, key=breadth)
    if not requested and any(covered is None for _, covered in active):
        # "All categories" asked for and granted: empty means all.
        permitted: frozenset[int] = frozenset()
    else:
        # A grant for all categories covers the whole request.
        permitted = frozenset().union(
            *(requested if covered is None else covered for _, covered in active)
        )
    return Decision(
        permit=True,
        basis=BASIS_GRANT,
        authority_name=authority.name,
        permitted_categories=tuple(sorted(permitted)),
    )
