"""The gRPC edge of the consent service: validation, proto <-> domain, status codes.

Every request is checked in full before anything is stored, so a caller learns every wrong
field at once (``BadRequest`` field violations named by proto field path).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import timestamp_pb2

from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.names import (
    HOSPITAL_ID_RULE,
    PERSON_NAME_RULE,
    PERSON_TOKEN_RULE,
    is_hospital_id,
    is_person_token,
    parse_person_name,
)
from healthbank.contracts.principal import (
    SUBJECT_RULE,
    InvalidPrincipal,
    Principal,
    is_principal_subject,
    principal_from_proto,
)
from healthbank.crypto import KeyProviderUnavailable
from healthbank.rpc import ServiceError, Violations, require_principal
from services.consent.domain import (
    KNOWN_CATEGORIES,
    MIN_JUSTIFICATION_LENGTH,
    REFUSAL_NOT_DATA_SUBJECT,
    REFUSAL_PROXY_NOT_REGISTERED,
    BreakGlassSession,
    Grant,
    GrantNotFound,
    NotPermitted,
    Proxy,
    ProxyNotFound,
    decode_page_token,
    encode_page_token,
    grant_period_problems,
    parse_grant_name,
    parse_proxy_name,
)
from services.consent.registry import ConsentRegistry, GrantDraft
from services.consent.research_desk import ResearchDesk
from services.consent.servicer_research import CommitteeEdge

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_JUSTIFICATION_LENGTH = 2000

# Client-chosen idempotency keys: visible ASCII, no spaces, bounded.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

_GRANT_NAME_RULE = "must be persons/{person_token}/grants/{grant_id}"
_PROXY_NAME_RULE = "must be persons/{person_token}/proxies/{proxy_id}"

_CATEGORY_RULE = "must list known record categories (not RECORD_CATEGORY_UNSPECIFIED)"


class ConsentServicer(CommitteeEdge, consent_pb2_grpc.ConsentServiceServicer):
    """consent.v1.ConsentService over a :class:`ConsentRegistry` and, for the committee's
    RPCs (:class:`CommitteeEdge`), a :class:`ResearchDesk`."""

    def __init__(
        self,
        registry: ConsentRegistry,
        now: Callable[[], datetime],
        desk: ResearchDesk,
        max_epsilon: float,
    ) -> None:
        """Serve ``registry`` and ``desk``; ``now`` is the clock request validation checks
        times against; ``max_epsilon`` bounds a research request's privacy budget."""
        self._registry = registry
        self._now = now
        self._desk = desk
        self._max_epsilon = max_epsilon

    async def CreateGrant(
        self, request: consent_pb2.CreateGrantRequest, context: Any
    ) -> consent_pb2.Grant:
        """Create a grant (idempotent by request_id for the parent)."""
        caller = require_principal()
        violations = Violations()
        person_token = _person_parent(request.parent, "parent", violations)
        if violations.require(request.request_id, "request_id"):
            violations.check(
                _REQUEST_ID.fullmatch(request.request_id) is not None,
                "request_id",
                "must be 1-128 visible ASCII characters",
            )
        draft_fields = _grant_fields(request, self._now(), violations)
        violations.raise_if_any()
        assert person_token is not None and draft_fields is not None  # checked above
        hospital_id, clinician_id, categories, valid_from, expire_time = draft_fields
        with _refusals():
            grant = await self._registry.create_grant(
                caller,
                GrantDraft(
                    person_token=person_token,
                    grantee_hospital_id=hospital_id,
                    grantee_clinician_id=clinician_id,
                    categories=categories,
                    valid_from=valid_from,
                    expire_time=expire_time,
                    request_id=request.request_id,
                ),
            )
        return _grant_proto(grant)

    async def RevokeGrant(
        self, request: consent_pb2.RevokeGrantRequest, context: Any
    ) -> consent_pb2.Grant:
        """Revoke a grant; revoking twice returns the same revoked grant."""
        caller = require_principal()
        violations = Violations()
        parsed = violations.parse(request.name, "name", parse_grant_name, _GRANT_NAME_RULE)
        violations.raise_if_any()
        assert parsed is not None
        person_token, grant_id = parsed
        try:
            with _refusals():
                grant = await self._registry.revoke_grant(caller, person_token, grant_id)
        except GrantNotFound:
            raise ServiceError.not_found("grant not found", reason="GRANT_NOT_FOUND") from None
        return _grant_proto(grant)

    async def ListGrants(
        self, request: consent_pb2.ListGrantsRequest, context: Any
    ) -> consent_pb2.ListGrantsResponse:
        """List a person's grants (revoked ones too), newest first, a page at a time."""
        caller = require_principal()
        violations = Violations()
        person_token = _person_parent(request.parent, "parent", violations)
        violations.check(request.page_size >= 0, "page_size", "must not be negative")
        after_grant_id: str | None = None
        if request.page_token and person_token is not None:
            after_grant_id = decode_page_token(request.page_token, person_token)
            violations.check(
                after_grant_id is not None,
                "page_token",
                "must be a next_page_token from a previous response for this parent",
            )
        violations.raise_if_any()
        assert person_token is not None
        # Larger pages are served as the maximum rather than refused (AIP-158).
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        with _refusals():
            grants, last_grant_id = await self._registry.list_grants(
                caller, person_token, page_size, after_grant_id
            )
        return consent_pb2.ListGrantsResponse(
            grants=[_grant_proto(grant) for grant in grants],
            next_page_token=(
                encode_page_token(person_token, last_grant_id) if last_grant_id else ""
            ),
        )

    async def Check(
        self, request: consent_pb2.CheckRequest, context: Any
    ) -> consent_pb2.CheckResponse:
        """Decide whether the accessor may read the person's records now."""
        violations = Violations()
        if violations.require(request.person_token, "person_token"):
            violations.check(
                is_person_token(request.person_token), "person_token", PERSON_TOKEN_RULE
            )
        accessor = _accessor(request, violations)
        categories = _categories(request.categories, "categories", violations)
        violations.raise_if_any()
        assert accessor is not None
        decision = await self._registry.check(accessor, request.person_token, categories)
        return consent_pb2.CheckResponse(
            decision=(
                consent_pb2.DECISION_PERMIT if decision.permit else consent_pb2.DECISION_DENY
            ),
            basis=decision.basis,
            authority_name=decision.authority_name,
            permitted_categories=_category_enums(decision.permitted_categories),
        )

    async def BreakGlass(
        self, request: consent_pb2.BreakGlassRequest, context: Any
    ) -> consent_pb2.BreakGlassResponse:
        """Open emergency access to a person for the calling emergency actor."""
        caller = require_principal()
        violations = Violations()
        if violations.require(request.person_token, "person_token"):
            violations.check(
                is_person_token(request.person_token), "person_token", PERSON_TOKEN_RULE
            )
        justification = request.justification.strip()
        if violations.require(justification, "justification"):
            violations.check(
                MIN_JUSTIFICATION_LENGTH <= len(justification) <= MAX_JUSTIFICATION_LENGTH,
                "justification",
                f"must be {MIN_JUSTIFICATION_LENGTH}-{MAX_JUSTIFICATION_LENGTH} characters",
            )
        violations.raise_if_any()
        try:
            session = await self._registry.break_glass(caller, request.person_token, justification)
        except KeyProviderUnavailable:
            raise ServiceError.unavailable(
                "the key provider is unavailable", reason="KEY_PROVIDER_UNAVAILABLE"
            ) from None
        return _break_glass_proto(session)

    async def RegisterProxy(
        self, request: consent_pb2.RegisterProxyRequest, context: Any
    ) -> consent_pb2.Proxy:
        """Register someone to manage the calling patient's grants (idempotent)."""
        caller = require_principal()
        violations = Violations()
        person_token = _person_parent(request.parent, "parent", violations)
        if violations.require(request.proxy_id, "proxy_id"):
            violations.check(is_principal_subject(request.proxy_id), "proxy_id", SUBJECT_RULE)
        violations.raise_if_any()
        assert person_token is not None
        with _refusals():
            proxy = await self._registry.register_proxy(caller, person_token, request.proxy_id)
        return _proxy_proto(proxy)

    async def RemoveProxy(
        self, request: consent_pb2.RemoveProxyRequest, context: Any
    ) -> consent_pb2.Proxy:
        """Remove one of the calling patient's proxies."""
        caller = require_principal()
        violations = Violations()
        parsed = violations.parse(request.name, "name", parse_proxy_name, _PROXY_NAME_RULE)
        violations.raise_if_any()
        assert parsed is not None
        person_token, proxy_id = parsed
        try:
            with _refusals():
                proxy = await self._registry.remove_proxy(caller, person_token, proxy_id)
        except ProxyNotFound:
            raise ServiceError.not_found("proxy not found", reason="PROXY_NOT_FOUND") from None
        return _proxy_proto(proxy)

    async def ListProxies(
        self, request: consent_pb2.ListProxiesRequest, context: Any
    ) -> consent_pb2.ListProxiesResponse:
        """The calling patient's proxies, oldest first."""
        caller = require_principal()
        violations = Violations()
        person_token = _person_parent(request.parent, "parent", violations)
        violations.raise_if_any()
        assert person_token is not None
        with _refusals():
            proxies = await self._registry.list_proxies(caller, person_token)
        return consent_pb2.ListProxiesResponse(proxies=[_proxy_proto(proxy) for proxy in proxies])


@contextmanager
def _refusals() -> Iterator[None]:
    """The registry's person-level refusals as PERMISSION_DENIED with their reason."""
    try:
        yield
    except NotPermitted as refused:
        raise ServiceError.permission_denied(
            _REFUSAL_MESSAGES.get(refused.reason, "the caller may not manage this consent"),
            reason=refused.reason,
        ) from None


_REFUSAL_MESSAGES = {
    REFUSAL_NOT_DATA_SUBJECT: "a patient may manage only their own consent",
    REFUSAL_PROXY_NOT_REGISTERED: "the caller is not a registered proxy of this person",
}


def _person_parent(parent: str, field: str, violations: Violations) -> str | None:
    """The person token of a ``persons/{token}`` parent, recording a violation if malformed."""
    return violations.parse(parent, field, parse_person_name, PERSON_NAME_RULE)


def _grant_fields(
    request: consent_pb2.CreateGrantRequest, now: datetime, violations: Violations
) -> tuple[str, str, frozenset[int], datetime | None, datetime] | None:
    """Validate ``request.grant``: (hospital, clinician, categories, valid_from, expire_time)."""
    if not request.HasField("grant"):
        violations.add("grant", "is required")
        return None
    grant = request.grant
    if violations.require(grant.grantee_hospital_id, "grant.grantee_hospital_id"):
        violations.check(
            is_hospital_id(grant.grantee_hospital_id),
            "grant.grantee_hospital_id",
            HOSPITAL_ID_RULE,
        )
    if grant.grantee_clinician_id:
        violations.check(
            # Matched against accessor subjects, so it follows their rule.
            is_principal_subject(grant.grantee_clinician_id),
            "grant.grantee_clinician_id",
            SUBJECT_RULE,
        )
    categories = _categories(grant.categories, "grant.categories", violations)
    valid_from = None
    if grant.HasField("valid_from"):
        valid_from = _datetime(grant.valid_from)
        violations.check(valid_from is not None, "grant.valid_from", "must be a valid timestamp")
    expire_time = None
    if not grant.HasField("expire_time"):
        violations.add("grant.expire_time", "is required")
    else:
        expire_time = _datetime(grant.expire_time)
        violations.check(expire_time is not None, "grant.expire_time", "must be a valid timestamp")
    if expire_time is None:
        return None
    for field, rule in grant_period_problems(valid_from, expire_time, now):
        violations.add(f"grant.{field}", rule)
    return (
        grant.grantee_hospital_id,
        grant.grantee_clinician_id,
        categories,
        valid_from,
        expire_time,
    )


def _categories(values: Iterable[int], field: str, violations: Violations) -> frozenset[int]:
    categories = frozenset(values)
    violations.check(categories <= KNOWN_CATEGORIES, field, _CATEGORY_RULE)
    return categories


def _category_enums(categories: Iterable[int]) -> list[common_pb2.RecordCategory]:
    # Domain categories are the enum numbers already; only the static type differs.
    return cast(list[common_pb2.RecordCategory], list(categories))


def _accessor(request: consent_pb2.CheckRequest, violations: Violations) -> Principal | None:
    """The accessor as a domain Principal, recording every problem with it."""
    if not request.HasField("accessor"):
        violations.add("accessor", "is required")
        return None
    try:
        accessor = principal_from_proto(request.accessor)
    except InvalidPrincipal as invalid:
        for field, rule in invalid.violations:
            violations.add(f"accessor.{field}", rule)
        accessor = None
    # Grants name hospitals: a clinician without one could never be matched to a grant.
    if request.accessor.kind == common_pb2.PRINCIPAL_KIND_CLINICIAN:
        violations.check(
            bool(request.accessor.hospital_id),
            "accessor.hospital_id",
            "is required for clinicians",
        )
    return accessor


def _datetime(timestamp: timestamp_pb2.Timestamp) -> datetime | None:
    """The UTC datetime of a proto Timestamp, or None when it is out of range."""
    try:
        return timestamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def _grant_proto(grant: Grant) -> consent_pb2.Grant:
    message = consent_pb2.Grant(
        name=grant.name,
        person_token=grant.person_token,
        grantee_hospital_id=grant.grantee_hospital_id,
        grantee_clinician_id=grant.grantee_clinician_id,
        categories=_category_enums(sorted(grant.categories)),
        valid_from=_timestamp(grant.valid_from),
        expire_time=_timestamp(grant.expire_time),
        create_time=_timestamp(grant.create_time),
    )
    if grant.revoke_time is not None:
        message.revoke_time.CopyFrom(_timestamp(grant.revoke_time))
    return message


def _proxy_proto(proxy: Proxy) -> consent_pb2.Proxy:
    return consent_pb2.Proxy(
        name=proxy.name,
        person_token=proxy.person_token,
        proxy_id=proxy.proxy_id,
        create_time=_timestamp(proxy.create_time),
    )


def _break_glass_proto(session: BreakGlassSession) -> consent_pb2.BreakGlassResponse:
    return consent_pb2.BreakGlassResponse(
        name=session.name, expire_time=_timestamp(session.expire_time)
    )
