"""The consent service over real gRPC: grants, revocation, listing, proxies, Check and
BreakGlass, and the audit events every change leaves.

The service runs in-process from its own ``open_service`` on a free port with an injected
clock, so expiry is tested by moving time rather than by waiting; the real audit service
runs beside it (consent records every change there first). Tests marked ``both_backends``
run again on the real Cassandra (a fresh keyspace each).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from engine_support import CASSANDRA
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import (
    NOT_SERVING,
    BearerAuth,
    RunningServices,
    assert_storage_unavailable,
    both_backends,
    cassandra_behind_proxy,
    failure,
    fields,
    store_rows,
    ts,
    wait_for_health,
)

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.names import PERSON_NAME_RULE, PERSON_TOKEN_RULE
from healthbank.contracts.principal import (
    SUBJECT_RULE,
    Principal,
    PrincipalKind,
    Purpose,
    principal_to_proto,
)
from healthbank.core.config import Settings
from healthbank.core.ids import is_ulid
from healthbank.crypto import build_key_provider, build_sealer
from services.audit.app import open_service as open_audit
from services.consent.app import SERVICE, SERVICE_NAME, open_service
from services.consent.registry import INVALIDATION_MARK_SECONDS, justification_aad
from services.consent.store_cassandra import MIGRATIONS

# The services these tests start on Cassandra: their keyspaces are migrated first.
CASSANDRA_SERVICES = ("consent",)
PERSON = "a1" * 32
OTHER_PERSON = "b2" * 32
HOSPITAL = "city-general"
START = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)

ALLERGY = common_pb2.RECORD_CATEGORY_ALLERGY
CONDITION = common_pb2.RECORD_CATEGORY_CONDITION
IMAGING = common_pb2.RECORD_CATEGORY_IMAGING

PATIENT = Principal(PrincipalKind.PATIENT, PERSON, purpose=Purpose.PATIENT_ACCESS)
OTHER_PATIENT = Principal(PrincipalKind.PATIENT, OTHER_PERSON, purpose=Purpose.PATIENT_ACCESS)
RECORD_LOOKUP = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
PRIVACY_OFFICER = Principal(PrincipalKind.PRIVACY_OFFICER, "po-1", purpose=Purpose.OPERATIONS)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL)
EMERGENCY = Principal(
    PrincipalKind.EMERGENCY, "er-doc-1", hospital_id="east-er", purpose=Purpose.EMERGENCY
)
# The patient's registered proxy (a parent, say), and someone who is nobody's proxy.
PROXY = Principal(PrincipalKind.PROXY, "guardian-17", purpose=Purpose.PATIENT_ACCESS)
STRANGER_PROXY = Principal(PrincipalKind.PROXY, "guardian-99", purpose=Purpose.PATIENT_ACCESS)


class Clock:
    """A UTC clock that moves only when a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Consent(BearerAuth):
    """A running consent service, its clock and a stub to call it with."""

    stub: consent_pb2_grpc.ConsentServiceAsyncStub
    channel: grpc.aio.Channel
    settings: Settings
    clock: Clock
    running: RunningServices

    async def create(
        self,
        principal: Principal = PATIENT,
        *,
        parent: str = f"persons/{PERSON}",
        request_id: str = "req-1",
        **grant: Any,
    ) -> consent_pb2.Grant:
        grant.setdefault("grantee_hospital_id", HOSPITAL)
        grant.setdefault("expire_time", ts(self.clock.now + timedelta(days=30)))
        response: consent_pb2.Grant = await self.stub.CreateGrant(
            consent_pb2.CreateGrantRequest(
                parent=parent, grant=consent_pb2.Grant(**grant), request_id=request_id
            ),
            metadata=self.auth(principal),
        )
        return response

    async def check(
        self,
        accessor: Principal | common_pb2.Principal = CLINICIAN,
        person_token: str = PERSON,
        categories: tuple[int, ...] = (),
    ) -> consent_pb2.CheckResponse:
        proto = (
            accessor if isinstance(accessor, common_pb2.Principal) else principal_to_proto(accessor)
        )
        response: consent_pb2.CheckResponse = await self.stub.Check(
            consent_pb2.CheckRequest(
                person_token=person_token,
                accessor=proto,
                categories=categories,  # type: ignore[arg-type]
            ),
            metadata=self.auth(RECORD_LOOKUP),
        )
        return response

    async def register_proxy(
        self, proxy_id: str = PROXY.subject, principal: Principal = PATIENT
    ) -> consent_pb2.Proxy:
        response: consent_pb2.Proxy = await self.stub.RegisterProxy(
            consent_pb2.RegisterProxyRequest(parent=f"persons/{PERSON}", proxy_id=proxy_id),
            metadata=self.auth(principal),
        )
        return response

    async def events(self, person_token: str = PERSON) -> list[audit_pb2.AccessEvent]:
        """The person's audit events, oldest first."""
        audit = audit_pb2_grpc.AuditServiceStub(self.running.channel("audit"))
        response = await audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}", page_size=500),
            metadata=self.auth(patient_of(person_token)),
        )
        return [logged.event for logged in reversed(response.events)]

    async def stop_audit(self) -> None:
        await self.running.hosts["audit"].stop(0)


def patient_of(person_token: str) -> Principal:
    return Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)


async def open_consent(exits: AsyncExitStack, settings: Settings, clock: Clock) -> Consent:
    """The audit service (embedded: only consent's backend is under test here, and a fresh
    audit keyspace per test would double the schema work), then consent on ``settings``
    recording its changes there."""
    running = RunningServices(exits)
    embedded = settings.model_copy(update={"storage_backend": "sqlite"})
    await running.start("audit", open_audit(embedded))
    clients = running.clients(settings, SERVICE)
    await running.start(SERVICE, open_service(settings, clients=clients, now=clock))
    channel = running.channel(SERVICE)
    await wait_for_health(channel, SERVICE_NAME)
    return Consent(consent_pb2_grpc.ConsentServiceStub(channel), channel, settings, clock, running)


async def stored_rows(settings: Settings, table: str) -> list[dict[str, Any]]:
    """Every row of one of the consent store's tables, read past the service."""
    return await store_rows(settings, table, "consent.db", SERVICE, MIGRATIONS)


@pytest.fixture
async def consent(settings: Settings) -> AsyncIterator[Consent]:
    async with AsyncExitStack() as exits:
        yield await open_consent(exits, settings, Clock(START))


# --- CreateGrant ---------------------------------------------------------------------------


@both_backends
async def test_patient_creates_a_grant(consent: Consent) -> None:
    expire = START + timedelta(days=90)
    grant = await consent.create(
        grantee_clinician_id="doc-7",
        categories=[IMAGING, ALLERGY],
        expire_time=ts(expire),
    )
    prefix = f"persons/{PERSON}/grants/"
    assert grant.name.startswith(prefix)
    assert is_ulid(grant.name.removeprefix(prefix))
    assert grant.person_token == PERSON
    assert grant.grantee_hospital_id == HOSPITAL
    assert grant.grantee_clinician_id == "doc-7"
    assert list(grant.categories) == [ALLERGY, IMAGING]
    # valid_from defaults to now; create_time is now.
    assert grant.valid_from.ToDatetime(tzinfo=UTC) == START
    assert grant.create_time.ToDatetime(tzinfo=UTC) == START
    assert grant.expire_time.ToDatetime(tzinfo=UTC) == expire
    assert not grant.HasField("revoke_time")


async def test_create_grant_keeps_an_explicit_valid_from(consent: Consent) -> None:
    later = START + timedelta(days=2)
    grant = await consent.create(valid_from=ts(later))
    assert grant.valid_from.ToDatetime(tzinfo=UTC) == later
    # Not valid yet: Check denies until it starts.
    assert (await consent.check()).decision == consent_pb2.DECISION_DENY
    consent.clock.advance(timedelta(days=2))
    assert (await consent.check()).decision == consent_pb2.DECISION_PERMIT


@both_backends
async def test_create_grant_is_idempotent_by_request_id(consent: Consent) -> None:
    first = await consent.create(request_id="retry-me")
    consent.clock.advance(timedelta(minutes=1))
    again = await consent.create(request_id="retry-me", grantee_hospital_id="elsewhere")
    assert again == first
    other = await consent.create(request_id="another")
    assert other.name != first.name
    # The same request id under another person is a different request.
    theirs = await consent.create(
        OTHER_PATIENT, parent=f"persons/{OTHER_PERSON}", request_id="retry-me"
    )
    assert theirs.person_token == OTHER_PERSON


@both_backends
async def test_concurrent_retries_create_one_grant(consent: Consent) -> None:
    grants = await asyncio.gather(*(consent.create(request_id="burst") for _ in range(10)))
    assert len({grant.name for grant in grants}) == 1
    # One grant, one event: the retries found the grant instead of recording their own.
    changes = [event.basis for event in await consent.events()]
    assert changes == ["GRANT_CREATED"]


async def test_a_service_may_not_create_grants_for_a_patient(consent: Consent) -> None:
    denied = await failure(consent.create(RECORD_LOOKUP))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert (await consent.check()).decision == consent_pb2.DECISION_DENY


async def test_create_grant_callers(consent: Consent) -> None:
    request = consent_pb2.CreateGrantRequest(
        parent=f"persons/{PERSON}",
        grant=consent_pb2.Grant(
            grantee_hospital_id=HOSPITAL, expire_time=ts(START + timedelta(days=1))
        ),
        request_id="r",
    )
    unauthenticated = await failure(consent.stub.CreateGrant(request))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
    for principal in (CLINICIAN, EMERGENCY, RECORD_LOOKUP):
        denied = await failure(consent.stub.CreateGrant(request, metadata=consent.auth(principal)))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    not_theirs = await failure(
        consent.stub.CreateGrant(request, metadata=consent.auth(OTHER_PATIENT))
    )
    assert not_theirs.code == grpc.StatusCode.PERMISSION_DENIED
    assert not_theirs.reason == "NOT_DATA_SUBJECT"


async def test_create_grant_empty_request(consent: Consent) -> None:
    details = await failure(
        consent.stub.CreateGrant(consent_pb2.CreateGrantRequest(), metadata=consent.auth(PATIENT))
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == [
        ("parent", "is required"),
        ("request_id", "is required"),
        ("grant", "is required"),
    ]


async def test_create_grant_missing_grant_fields(consent: Consent) -> None:
    details = await failure(
        consent.stub.CreateGrant(
            consent_pb2.CreateGrantRequest(
                parent=f"persons/{PERSON}", grant=consent_pb2.Grant(), request_id="r"
            ),
            metadata=consent.auth(PATIENT),
        )
    )
    assert details.field_violations == [
        ("grant.grantee_hospital_id", "is required"),
        ("grant.expire_time", "is required"),
    ]


@pytest.mark.parametrize(
    ("grant", "violations"),
    [
        (
            {"expire_time": ts(START)},
            [("grant.expire_time", "must be in the future")],
        ),
        (
            {"expire_time": ts(START - timedelta(days=1))},
            [("grant.expire_time", "must be in the future")],
        ),
        (
            {"expire_time": ts(datetime(2040, 6, 1, 8, 0, 1, tzinfo=UTC))},
            [("grant.expire_time", "must be at most 10 years ahead")],
        ),
        (
            {
                "valid_from": ts(START + timedelta(days=40)),
                "expire_time": ts(START + timedelta(days=30)),
            },
            [("grant.valid_from", "must be before expire_time")],
        ),
        (
            {"expire_time": timestamp_pb2.Timestamp(seconds=2**40)},
            [("grant.expire_time", "must be a valid timestamp")],
        ),
        (
            {"categories": [common_pb2.RECORD_CATEGORY_UNSPECIFIED]},
            [
                (
                    "grant.categories",
                    "must list known record categories (not RECORD_CATEGORY_UNSPECIFIED)",
                )
            ],
        ),
        (
            {"grantee_hospital_id": "no spaces allowed"},
            [
                (
                    "grant.grantee_hospital_id",
                    "must be 1-64 characters of letters, digits, '.', '_' or '-'",
                )
            ],
        ),
        (
            {"grantee_clinician_id": "dr who"},
            [("grant.grantee_clinician_id", "must be 1-128 visible ASCII characters")],
        ),
    ],
)
async def test_create_grant_malformed_grant(
    consent: Consent, grant: dict[str, Any], violations: list[tuple[str, str]]
) -> None:
    details = await failure(consent.create(**grant))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == violations


async def test_ten_years_is_the_limit(consent: Consent) -> None:
    grant = await consent.create(expire_time=ts(datetime(2040, 6, 1, 8, 0, tzinfo=UTC)))
    assert grant.expire_time.ToDatetime(tzinfo=UTC).year == 2040


@pytest.mark.parametrize(
    "parent", ["persons/", "persons/xyz", PERSON, f"persons/{PERSON}/grants", "people/x"]
)
async def test_create_grant_malformed_parent(consent: Consent, parent: str) -> None:
    details = await failure(consent.create(parent=parent))
    assert details.field_violations == [("parent", PERSON_NAME_RULE)]


async def test_create_grant_malformed_request_id(consent: Consent) -> None:
    details = await failure(consent.create(request_id="has space"))
    assert details.field_violations == [("request_id", "must be 1-128 visible ASCII characters")]


# --- RevokeGrant ---------------------------------------------------------------------------


@both_backends
async def test_revoke_is_immediate_and_idempotent(consent: Consent) -> None:
    grant = await consent.create()
    assert (await consent.check()).decision == consent_pb2.DECISION_PERMIT
    consent.clock.advance(timedelta(hours=1))
    revoked = await consent.stub.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PATIENT)
    )
    assert revoked.revoke_time.ToDatetime(tzinfo=UTC) == START + timedelta(hours=1)
    decision = await consent.check()
    assert decision.decision == consent_pb2.DECISION_DENY
    assert decision.basis == "GRANT_REVOKED"

    consent.clock.advance(timedelta(hours=1))
    again = await consent.stub.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PATIENT)
    )
    assert again == revoked


async def test_revoke_unknown_grant(consent: Consent) -> None:
    details = await failure(
        consent.stub.RevokeGrant(
            consent_pb2.RevokeGrantRequest(
                name=f"persons/{PERSON}/grants/01J0000000000000000000000A"
            ),
            metadata=consent.auth(PATIENT),
        )
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "GRANT_NOT_FOUND"


@both_backends
async def test_revoke_another_persons_grant_by_its_id_is_not_found(consent: Consent) -> None:
    grant = await consent.create()
    grant_id = grant.name.rsplit("/", 1)[1]
    details = await failure(
        consent.stub.RevokeGrant(
            consent_pb2.RevokeGrantRequest(name=f"persons/{OTHER_PERSON}/grants/{grant_id}"),
            metadata=consent.auth(OTHER_PATIENT),
        )
    )
    assert details.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("name", "violation"),
    [
        ("", ("name", "is required")),
        (f"persons/{PERSON}", ("name", "must be persons/{person_token}/grants/{grant_id}")),
        (
            f"persons/{PERSON}/grants/nope",
            ("name", "must be persons/{person_token}/grants/{grant_id}"),
        ),
    ],
)
async def test_revoke_malformed(consent: Consent, name: str, violation: tuple[str, str]) -> None:
    details = await failure(
        consent.stub.RevokeGrant(
            consent_pb2.RevokeGrantRequest(name=name), metadata=consent.auth(PATIENT)
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == [violation]


async def test_revoke_callers(consent: Consent) -> None:
    grant = await consent.create()
    request = consent_pb2.RevokeGrantRequest(name=grant.name)
    assert (await failure(consent.stub.RevokeGrant(request))).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    for principal in (OTHER_PATIENT, CLINICIAN, RECORD_LOOKUP, STRANGER_PROXY):
        denied = await failure(consent.stub.RevokeGrant(request, metadata=consent.auth(principal)))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- ListGrants ----------------------------------------------------------------------------


@both_backends
async def test_list_grants_newest_first_in_pages(consent: Consent) -> None:
    created = []
    for index in range(5):
        created.append(await consent.create(request_id=f"r{index}"))
        consent.clock.advance(timedelta(seconds=1))
    await consent.create(OTHER_PATIENT, parent=f"persons/{OTHER_PERSON}", request_id="x")

    names: list[str] = []
    page_token = ""
    pages = 0
    while True:
        page = await consent.stub.ListGrants(
            consent_pb2.ListGrantsRequest(
                parent=f"persons/{PERSON}", page_size=2, page_token=page_token
            ),
            metadata=consent.auth(PATIENT),
        )
        pages += 1
        assert len(page.grants) <= 2
        names.extend(grant.name for grant in page.grants)
        page_token = page.next_page_token
        if not page_token:
            break
    assert pages == 3
    assert names == [grant.name for grant in reversed(created)]


@both_backends
async def test_list_grants_default_page_and_revoked_state(consent: Consent) -> None:
    grant = await consent.create()
    await consent.stub.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PATIENT)
    )
    page = await consent.stub.ListGrants(
        consent_pb2.ListGrantsRequest(parent=f"persons/{PERSON}", page_size=1000),
        metadata=consent.auth(PATIENT),
    )
    assert [g.name for g in page.grants] == [grant.name]
    assert page.grants[0].HasField("revoke_time")
    assert page.next_page_token == ""


async def test_list_grants_of_nobody_is_empty(consent: Consent) -> None:
    page = await consent.stub.ListGrants(
        consent_pb2.ListGrantsRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PATIENT)
    )
    assert list(page.grants) == []
    assert page.next_page_token == ""


async def test_list_grants_malformed(consent: Consent) -> None:
    details = await failure(
        consent.stub.ListGrants(consent_pb2.ListGrantsRequest(), metadata=consent.auth(PATIENT))
    )
    assert details.field_violations == [("parent", "is required")]

    details = await failure(
        consent.stub.ListGrants(
            consent_pb2.ListGrantsRequest(
                parent=f"persons/{PERSON}", page_size=-1, page_token="garbage!"
            ),
            metadata=consent.auth(PATIENT),
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == ["page_size", "page_token"]


async def test_list_grants_token_from_another_list_is_invalid(consent: Consent) -> None:
    for index in range(2):
        await consent.create(OTHER_PATIENT, parent=f"persons/{OTHER_PERSON}", request_id=f"{index}")
    page = await consent.stub.ListGrants(
        consent_pb2.ListGrantsRequest(parent=f"persons/{OTHER_PERSON}", page_size=1),
        metadata=consent.auth(OTHER_PATIENT),
    )
    assert page.next_page_token
    details = await failure(
        consent.stub.ListGrants(
            consent_pb2.ListGrantsRequest(
                parent=f"persons/{PERSON}", page_token=page.next_page_token
            ),
            metadata=consent.auth(PATIENT),
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == ["page_token"]


async def test_list_grants_callers(consent: Consent) -> None:
    request = consent_pb2.ListGrantsRequest(parent=f"persons/{PERSON}")
    assert (await failure(consent.stub.ListGrants(request))).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    for principal in (OTHER_PATIENT, CLINICIAN, EMERGENCY, RECORD_LOOKUP, STRANGER_PROXY):
        denied = await failure(consent.stub.ListGrants(request, metadata=consent.auth(principal)))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- Check ---------------------------------------------------------------------------------


@both_backends
async def test_check_permits_under_a_grant(consent: Consent) -> None:
    grant = await consent.create(categories=[ALLERGY, CONDITION])
    decision = await consent.check(categories=(ALLERGY, IMAGING))
    assert decision.decision == consent_pb2.DECISION_PERMIT
    assert decision.basis == "GRANT"
    assert decision.authority_name == grant.name
    assert list(decision.permitted_categories) == [ALLERGY]


async def test_check_category_not_granted(consent: Consent) -> None:
    await consent.create(categories=[ALLERGY])
    decision = await consent.check(categories=(IMAGING,))
    assert decision.decision == consent_pb2.DECISION_DENY
    assert decision.basis == "CATEGORY_NOT_GRANTED"


async def test_check_denies_by_default(consent: Consent) -> None:
    decision = await consent.check()
    assert decision.decision == consent_pb2.DECISION_DENY
    assert decision.basis == "NO_GRANT"
    other_hospital = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id="elsewhere")
    await consent.create()
    assert (await consent.check(other_hospital)).basis == "NO_GRANT"


@both_backends
async def test_check_grant_expires(consent: Consent) -> None:
    await consent.create(expire_time=ts(START + timedelta(days=1)))
    consent.clock.advance(timedelta(days=1) - timedelta(microseconds=1))
    assert (await consent.check()).decision == consent_pb2.DECISION_PERMIT
    consent.clock.advance(timedelta(microseconds=1))
    decision = await consent.check()
    assert decision.decision == consent_pb2.DECISION_DENY
    assert decision.basis == "GRANT_EXPIRED"


async def test_check_clinician_specific_grant(consent: Consent) -> None:
    await consent.create(grantee_clinician_id="doc-9")
    assert (await consent.check()).decision == consent_pb2.DECISION_DENY
    doc_9 = Principal(PrincipalKind.CLINICIAN, "doc-9", hospital_id=HOSPITAL)
    assert (await consent.check(doc_9)).decision == consent_pb2.DECISION_PERMIT


async def test_check_self(consent: Consent) -> None:
    decision = await consent.check(PATIENT)
    assert decision.decision == consent_pb2.DECISION_PERMIT
    assert decision.basis == "SELF"
    assert (await consent.check(OTHER_PATIENT)).decision == consent_pb2.DECISION_DENY


async def test_check_services_are_not_clinical_readers(consent: Consent) -> None:
    await consent.create()
    decision = await consent.check(RECORD_LOOKUP)
    assert decision.decision == consent_pb2.DECISION_DENY
    assert decision.basis == "NO_GRANT"


async def test_check_empty_request(consent: Consent) -> None:
    details = await failure(
        consent.stub.Check(consent_pb2.CheckRequest(), metadata=consent.auth(RECORD_LOOKUP))
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == [
        ("person_token", "is required"),
        ("accessor", "is required"),
    ]


async def test_check_incomplete_accessor(consent: Consent) -> None:
    details = await failure(
        consent.stub.Check(
            consent_pb2.CheckRequest(
                person_token="not-a-token",
                accessor=common_pb2.Principal(hospital_id="bad id"),
                categories=[common_pb2.RECORD_CATEGORY_UNSPECIFIED],
            ),
            metadata=consent.auth(RECORD_LOOKUP),
        )
    )
    assert fields(details) == [
        "person_token",
        "accessor.kind",
        "accessor.subject",
        "accessor.hospital_id",
        "accessor.purpose",
        "categories",
    ]


async def test_check_clinician_needs_a_hospital(consent: Consent) -> None:
    accessor = common_pb2.Principal(
        kind=common_pb2.PRINCIPAL_KIND_CLINICIAN,
        subject="doc-7",
        purpose=common_pb2.PURPOSE_OF_USE_TREATMENT,
    )
    details = await failure(consent.check(accessor))
    assert details.field_violations == [("accessor.hospital_id", "is required for clinicians")]


async def test_check_unknown_enum_numbers(consent: Consent) -> None:
    accessor = common_pb2.Principal(
        kind=99,  # type: ignore[arg-type]
        subject="doc-7",
        hospital_id=HOSPITAL,
        purpose=42,  # type: ignore[arg-type]
    )
    details = await failure(consent.check(accessor, categories=(77,)))
    assert fields(details) == ["accessor.kind", "accessor.purpose", "categories"]


async def test_check_callers(consent: Consent) -> None:
    request = consent_pb2.CheckRequest(person_token=PERSON, accessor=principal_to_proto(CLINICIAN))
    assert (await failure(consent.stub.Check(request))).code == grpc.StatusCode.UNAUTHENTICATED
    for principal in (CLINICIAN, PATIENT, EMERGENCY):
        denied = await failure(consent.stub.Check(request, metadata=consent.auth(principal)))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- BreakGlass ----------------------------------------------------------------------------


@both_backends
async def test_break_glass_opens_four_hours_of_access(consent: Consent) -> None:
    assert (await consent.check(EMERGENCY)).decision == consent_pb2.DECISION_DENY
    justification = "Unconscious after a road accident, allergies unknown."
    session = await consent.stub.BreakGlass(
        consent_pb2.BreakGlassRequest(person_token=PERSON, justification=justification),
        metadata=consent.auth(EMERGENCY),
    )
    prefix = f"persons/{PERSON}/breakGlass/"
    assert session.name.startswith(prefix)
    assert is_ulid(session.name.removeprefix(prefix))
    assert session.expire_time.ToDatetime(tzinfo=UTC) == START + timedelta(hours=4)

    decision = await consent.check(EMERGENCY, categories=(ALLERGY,))
    assert decision.decision == consent_pb2.DECISION_PERMIT
    assert decision.basis == "BREAK_GLASS"
    assert decision.authority_name == session.name
    # Only the actor who broke the glass, and only for that person.
    colleague = Principal(PrincipalKind.EMERGENCY, "er-doc-2", purpose=Purpose.EMERGENCY)
    assert (await consent.check(colleague)).decision == consent_pb2.DECISION_DENY
    assert (
        await consent.check(EMERGENCY, person_token=OTHER_PERSON)
    ).decision == consent_pb2.DECISION_DENY

    consent.clock.advance(timedelta(hours=4))
    assert (await consent.check(EMERGENCY)).decision == consent_pb2.DECISION_DENY

    # The free-text justification is stored sealed, bound to its session.
    if consent.settings.storage_backend == "sqlite":
        files = consent.settings.data_dir.glob("consent.db*")
        assert justification.encode() not in b"".join(path.read_bytes() for path in files)
    (stored,) = await stored_rows(consent.settings, "break_glass_sessions")
    assert justification not in repr(stored)
    sealed = stored["sealed_justification"]
    sealer = build_sealer(consent.settings, build_key_provider(consent.settings))
    assert await sealer.open(sealed, justification_aad(session.name)) == justification.encode()


@pytest.mark.parametrize(
    ("request_fields", "violations"),
    [
        ({}, [("person_token", "is required"), ("justification", "is required")]),
        (
            {"person_token": "ABC", "justification": "too short"},
            [
                ("person_token", PERSON_TOKEN_RULE),
                ("justification", "must be 10-2000 characters"),
            ],
        ),
        (
            {"person_token": PERSON, "justification": "          "},
            [("justification", "is required")],
        ),
        (
            {"person_token": PERSON, "justification": "x" * 2001},
            [("justification", "must be 10-2000 characters")],
        ),
    ],
)
async def test_break_glass_malformed(
    consent: Consent, request_fields: dict[str, str], violations: list[tuple[str, str]]
) -> None:
    details = await failure(
        consent.stub.BreakGlass(
            consent_pb2.BreakGlassRequest(**request_fields), metadata=consent.auth(EMERGENCY)
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == violations


async def test_break_glass_callers(consent: Consent) -> None:
    request = consent_pb2.BreakGlassRequest(person_token=PERSON, justification="cardiac arrest")
    unauthenticated = await failure(consent.stub.BreakGlass(request))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
    for principal in (CLINICIAN, PATIENT, RECORD_LOOKUP):
        denied = await failure(consent.stub.BreakGlass(request, metadata=consent.auth(principal)))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- proxies ------------------------------------------------------------------------------


@both_backends
async def test_a_registered_proxy_manages_the_patients_grants_until_removed(
    consent: Consent,
) -> None:
    registered = await consent.register_proxy()
    assert registered.name == f"persons/{PERSON}/proxies/{PROXY.subject}"
    assert registered.create_time.ToDatetime(tzinfo=UTC) == START
    listed = await consent.stub.ListProxies(
        consent_pb2.ListProxiesRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PATIENT)
    )
    assert list(listed.proxies) == [registered]

    grant = await consent.create(PROXY, request_id="by-proxy")
    assert (await consent.check()).decision == consent_pb2.DECISION_PERMIT
    revoked = await consent.stub.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PROXY)
    )
    assert revoked.HasField("revoke_time")
    # The proxy sees the grants and revocations, like the patient.
    page = await consent.stub.ListGrants(
        consent_pb2.ListGrantsRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PROXY)
    )
    assert list(page.grants) == [revoked]

    removed = await consent.stub.RemoveProxy(
        consent_pb2.RemoveProxyRequest(name=registered.name), metadata=consent.auth(PATIENT)
    )
    assert removed == registered
    refused = await failure(consent.create(PROXY, request_id="after-removal"))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "PROXY_NOT_REGISTERED"
    listed = await consent.stub.ListProxies(
        consent_pb2.ListProxiesRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PATIENT)
    )
    assert list(listed.proxies) == []


async def test_a_proxy_acts_only_for_the_person_who_registered_them(consent: Consent) -> None:
    await consent.register_proxy()
    grant = await consent.create(OTHER_PATIENT, parent=f"persons/{OTHER_PERSON}")
    attempts = [
        consent.create(STRANGER_PROXY, request_id="stranger"),
        consent.create(PROXY, parent=f"persons/{OTHER_PERSON}", request_id="other-person"),
        consent.stub.RevokeGrant(
            consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PROXY)
        ),
        consent.stub.ListGrants(
            consent_pb2.ListGrantsRequest(parent=f"persons/{OTHER_PERSON}"),
            metadata=consent.auth(PROXY),
        ),
    ]
    for attempt in attempts:
        refused = await failure(attempt)
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
        assert refused.reason == "PROXY_NOT_REGISTERED"
    assert (await consent.check(person_token=OTHER_PERSON)).decision == (
        consent_pb2.DECISION_PERMIT
    )
    page = await consent.stub.ListGrants(
        consent_pb2.ListGrantsRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PATIENT)
    )
    assert list(page.grants) == []


async def test_only_the_patient_registers_and_removes_proxies(consent: Consent) -> None:
    registered = await consent.register_proxy()
    # Registering again returns the first registration.
    consent.clock.advance(timedelta(hours=1))
    assert await consent.register_proxy() == registered
    register = consent_pb2.RegisterProxyRequest(parent=f"persons/{PERSON}", proxy_id="x-1")
    remove = consent_pb2.RemoveProxyRequest(name=registered.name)
    listing = consent_pb2.ListProxiesRequest(parent=f"persons/{PERSON}")
    for principal, reason in (
        (OTHER_PATIENT, "NOT_DATA_SUBJECT"),
        (PROXY, "PRINCIPAL_KIND_NOT_ALLOWED"),
        (CLINICIAN, "PRINCIPAL_KIND_NOT_ALLOWED"),
        (RECORD_LOOKUP, "SERVICE_NOT_ALLOWED"),
    ):
        for call in (
            consent.stub.RegisterProxy(register, metadata=consent.auth(principal)),
            consent.stub.RemoveProxy(remove, metadata=consent.auth(principal)),
            consent.stub.ListProxies(listing, metadata=consent.auth(principal)),
        ):
            refused = await failure(call)
            assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)
    unauthenticated = await failure(consent.stub.RegisterProxy(register))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED

    unknown = await failure(
        consent.stub.RemoveProxy(
            consent_pb2.RemoveProxyRequest(name=f"persons/{PERSON}/proxies/nobody"),
            metadata=consent.auth(PATIENT),
        )
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "PROXY_NOT_FOUND")


async def test_malformed_proxy_requests_name_every_field(consent: Consent) -> None:
    empty = await failure(
        consent.stub.RegisterProxy(
            consent_pb2.RegisterProxyRequest(), metadata=consent.auth(PATIENT)
        )
    )
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.field_violations == [("parent", "is required"), ("proxy_id", "is required")]
    bad = await failure(
        consent.stub.RegisterProxy(
            consent_pb2.RegisterProxyRequest(parent="people/x", proxy_id="has space"),
            metadata=consent.auth(PATIENT),
        )
    )
    assert bad.field_violations == [("parent", PERSON_NAME_RULE), ("proxy_id", SUBJECT_RULE)]
    for name in ("", f"persons/{PERSON}/grants/x", f"persons/{PERSON}/proxies/a b"):
        details = await failure(
            consent.stub.RemoveProxy(
                consent_pb2.RemoveProxyRequest(name=name), metadata=consent.auth(PATIENT)
            )
        )
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fields(details) == ["name"]
    listing = await failure(
        consent.stub.ListProxies(consent_pb2.ListProxiesRequest(), metadata=consent.auth(PATIENT))
    )
    assert listing.field_violations == [("parent", "is required")]


# --- audit of every change -------------------------------------------------------------------


def summary(event: audit_pb2.AccessEvent) -> tuple[str, str, str, bool]:
    """(action, actor subject, basis, flagged) of an event."""
    return (
        audit_pb2.Action.Name(event.action),
        event.actor.subject,
        event.basis,
        event.flagged_for_review,
    )


@both_backends
async def test_every_change_is_audited_once_with_the_caller_as_actor(consent: Consent) -> None:
    grant = await consent.create(request_id="once")
    assert await consent.create(request_id="once") == grant  # a retry records nothing new
    await consent.stub.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PATIENT)
    )
    await consent.stub.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PATIENT)
    )
    proxy = await consent.register_proxy()
    await consent.register_proxy()
    by_proxy = await consent.create(PROXY, request_id="by-proxy")
    await consent.stub.RemoveProxy(
        consent_pb2.RemoveProxyRequest(name=proxy.name), metadata=consent.auth(PATIENT)
    )
    session = await consent.stub.BreakGlass(
        consent_pb2.BreakGlassRequest(person_token=PERSON, justification="cardiac arrest, ER"),
        metadata=consent.auth(EMERGENCY),
    )
    # Refused attempts change nothing and record nothing here.
    await failure(consent.create(STRANGER_PROXY, request_id="refused"))

    events = await consent.events()
    assert [summary(event) for event in events] == [
        ("ACTION_CONSENT_CHANGE", PATIENT.subject, "GRANT_CREATED", False),
        ("ACTION_CONSENT_CHANGE", PATIENT.subject, "GRANT_REVOKED", False),
        ("ACTION_CONSENT_CHANGE", PATIENT.subject, "PROXY_REGISTERED", False),
        ("ACTION_CONSENT_CHANGE", PROXY.subject, "GRANT_CREATED", False),
        ("ACTION_CONSENT_CHANGE", PATIENT.subject, "PROXY_REMOVED", False),
        ("ACTION_BREAK_GLASS", EMERGENCY.subject, "BREAK_GLASS", True),
    ]
    named = [event.resource_names[-1] for event in events]
    assert named == [grant.name, grant.name, proxy.name, by_proxy.name, proxy.name, session.name]
    assert {event.recorded_by for event in events} == {SERVICE}
    assert events[3].actor.kind == common_pb2.PRINCIPAL_KIND_PROXY
    assert events[5].actor.kind == common_pb2.PRINCIPAL_KIND_EMERGENCY


async def test_no_audit_no_change(consent: Consent) -> None:
    """When audit cannot record a change, consent makes none and answers UNAVAILABLE."""
    grant = await consent.create(request_id="before")
    await consent.register_proxy()
    await consent.stop_audit()
    attempts = [
        consent.create(request_id="during"),
        consent.stub.RevokeGrant(
            consent_pb2.RevokeGrantRequest(name=grant.name), metadata=consent.auth(PATIENT)
        ),
        consent.register_proxy("parent-3"),
        consent.stub.RemoveProxy(
            consent_pb2.RemoveProxyRequest(name=f"persons/{PERSON}/proxies/{PROXY.subject}"),
            metadata=consent.auth(PATIENT),
        ),
        consent.stub.BreakGlass(
            consent_pb2.BreakGlassRequest(person_token=PERSON, justification="cardiac arrest"),
            metadata=consent.auth(EMERGENCY),
        ),
    ]
    for attempt in attempts:
        refused = await failure(attempt)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "AUDIT_UNAVAILABLE",
        )
        assert refused.retry_delay is not None
    page = await consent.stub.ListGrants(
        consent_pb2.ListGrantsRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PATIENT)
    )
    assert [(g.name, g.HasField("revoke_time")) for g in page.grants] == [(grant.name, False)]
    proxies = await consent.stub.ListProxies(
        consent_pb2.ListProxiesRequest(parent=f"persons/{PERSON}"), metadata=consent.auth(PATIENT)
    )
    assert [proxy.proxy_id for proxy in proxies.proxies] == [PROXY.subject]
    assert (await consent.check(EMERGENCY)).decision == consent_pb2.DECISION_DENY
    assert await stored_rows(consent.settings, "break_glass_sessions") == []


# --- health ------------------------------------------------------------------------------------


@both_backends
async def test_health_reports_serving(consent: Consent) -> None:
    health: Any = health_pb2_grpc.HealthStub(consent.channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# --- storage outage ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [CASSANDRA], indirect=True)
async def test_cassandra_down_is_unavailable_and_not_serving(settings: Settings) -> None:
    async with (
        cassandra_behind_proxy(settings, CASSANDRA_SERVICES) as (proxy, through_proxy),
        AsyncExitStack() as exits,
    ):
        consent = await open_consent(exits, through_proxy, Clock(START))
        channel = consent.channel
        grant = await consent.create()
        # The creation's invalidation mark keeps fills out for a moment; then one caches.
        await asyncio.sleep(INVALIDATION_MARK_SECONDS)
        assert (await consent.check()).decision == consent_pb2.DECISION_PERMIT

        await proxy.cut()

        # Check answers from the cached grants: no grant can change while the store
        # is down (revoke and create fail below), so the cached answer is current.
        assert (await consent.check()).decision == consent_pb2.DECISION_PERMIT
        # Changes cannot be made: UNAVAILABLE, retryable, nothing written.
        refused = [
            await failure(
                consent.stub.RevokeGrant(
                    consent_pb2.RevokeGrantRequest(name=grant.name),
                    metadata=consent.auth(PATIENT),
                )
            ),
            await failure(consent.create(request_id="during-outage")),
        ]
        for details in refused:
            assert_storage_unavailable(details)
        await wait_for_health(channel, SERVICE_NAME, NOT_SERVING)
    # Read directly (not through the cut path): nothing refused was written.
    (stored,) = await stored_rows(settings, "grants")
    assert stored["revoke_time"] is None
    assert stored["request_id"] == "req-1"
