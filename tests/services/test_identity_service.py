"""The identity service over real gRPC: Resolve, LookupByNationalId, GetPerson.

The service runs in-process from its own ``open_service`` on a free port beside the real
audit service (every read of the index is audited), with the local keyring and SQLite
stores in a temporary data dir; calls carry signed principal tokens. Tests marked
``both_backends`` run again on the real Cassandra (fresh keyspaces each).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
from engine_support import CASSANDRA
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import (
    NOT_SERVING,
    BearerAuth,
    RunningServices,
    assert_storage_unavailable,
    both_backends,
    cassandra_behind_proxy,
    failure,
    store_rows,
    wait_for_health,
)

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.contracts.names import PERSON_NAME_RULE
from healthbank.contracts.natid import make_national_id
from healthbank.contracts.principal import (
    Principal,
    PrincipalKind,
    encode_token,
    principal_from_proto,
)
from healthbank.core.config import Settings
from healthbank.crypto import TamperedPayload, build_key_provider, build_sealer
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import ErrorDetails, error_details
from healthbank.rpc.clients import open_channel
from services.audit.app import open_service as open_audit
from services.identity import matching
from services.identity.app import SERVICE, SERVICE_NAME, open_service
from services.identity.domain import Demographics, demographics_aad
from services.identity.store_cassandra import MIGRATIONS

# The services these tests start on Cassandra: their keyspaces are migrated first.
CASSANDRA_SERVICES = ("identity", "audit")
NATIONAL_ID = make_national_id("110101", date(1980, 5, 17), 123)
OTHER_NATIONAL_ID = make_national_id("440305", date(1992, 11, 2), 456)
# Same body as NATIONAL_ID with the check character changed: fails only the check digit.
BAD_CHECK_DIGIT = NATIONAL_ID[:-1] + ("0" if NATIONAL_ID[-1] != "0" else "1")

INGEST = Principal(PrincipalKind.SERVICE, "ingest")
RECORD_LOOKUP = Principal(PrincipalKind.SERVICE, "record-lookup")
PRIVACY_OFFICER = Principal(PrincipalKind.PRIVACY_OFFICER, "po-1")
EMERGENCY = Principal(PrincipalKind.EMERGENCY, "er-doc-1", hospital_id="city-general")
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id="city-general")
PATIENT = Principal(PrincipalKind.PATIENT, "a" * 64)


@dataclass
class Identity(BearerAuth):
    """A running identity service (beside the audit service) and stubs to call them with."""

    stub: identity_pb2_grpc.IdentityServiceAsyncStub
    channel: grpc.aio.Channel
    settings: Settings
    running: RunningServices | None = None

    async def resolve(
        self, principal: Principal = INGEST, **fields: Any
    ) -> identity_pb2.ResolveResponse:
        request = identity_pb2.ResolveRequest(**fields)
        response: identity_pb2.ResolveResponse = await self.stub.Resolve(
            request, metadata=self.auth(principal)
        )
        return response

    async def lookup(self, national_id: str, principal: Principal = RECORD_LOOKUP) -> str:
        response = await self.stub.LookupByNationalId(
            identity_pb2.LookupByNationalIdRequest(national_id=national_id),
            metadata=self.auth(principal),
        )
        return str(response.person_token)

    async def get_person(
        self, person_token: str, principal: Principal = PRIVACY_OFFICER
    ) -> identity_pb2.Person:
        person: identity_pb2.Person = await self.stub.GetPerson(
            identity_pb2.GetPersonRequest(name=f"persons/{person_token}"),
            metadata=self.auth(principal),
        )
        return person

    async def access_events(self, person_token: str) -> list[audit_pb2.AccessEvent]:
        """What the audit log lists for the person (asked as the patient), oldest first."""
        assert self.running is not None
        audit = audit_pb2_grpc.AuditServiceStub(self.running.channel("audit"))
        response = await audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}"),
            metadata=self.auth(Principal(PrincipalKind.PATIENT, person_token)),
        )
        return [logged.event for logged in reversed(response.events)]


@pytest.fixture
async def identity(settings: Settings) -> AsyncIterator[Identity]:
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("audit", open_audit(settings))
        clients = running.clients(settings, SERVICE)
        await running.start(SERVICE, open_service(settings, clients=clients))
        channel = running.channel(SERVICE)
        await wait_for_health(channel, SERVICE_NAME)
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        yield Identity(stub, channel, settings, running)


async def stored_rows(settings: Settings, table: str) -> list[dict[str, Any]]:
    """Every row of one of the identity store's tables, read past the service."""
    return await store_rows(settings, table, "identity.db", SERVICE, MIGRATIONS)


async def stored_bytes(settings: Settings) -> bytes:
    """What the store holds, as bytes to search for plaintext in."""
    if settings.storage_backend == "sqlite":
        return b"".join(path.read_bytes() for path in settings.data_dir.glob("identity.db*"))
    rows = [
        row
        for table in ("persons", "national_ids", "mrn_hash_links", "person_mrn_hashes")
        for row in await stored_rows(settings, table)
    ]
    return b"".join(
        value if isinstance(value, bytes) else str(value).encode()
        for row in rows
        for value in row.values()
    )


def assert_no_national_id(details: ErrorDetails) -> None:
    text = details.message + repr(details.field_violations) + repr(details.metadata)
    for national_id in (NATIONAL_ID, OTHER_NATIONAL_ID, BAD_CHECK_DIGIT):
        assert national_id not in text
        assert national_id[:17] not in text


# --- Resolve -------------------------------------------------------------------------------


@both_backends
async def test_resolve_creates_then_matches(identity: Identity) -> None:
    created = await identity.resolve(hospital_id="h1", mrn="MRN-1", national_id=NATIONAL_ID)
    assert created.match_method == identity_pb2.MATCH_METHOD_CREATED
    assert len(created.person_token) == 64
    assert NATIONAL_ID not in created.person_token

    again = await identity.resolve(hospital_id="h1", mrn="MRN-1", national_id=NATIONAL_ID)
    assert again.person_token == created.person_token
    assert again.match_method == identity_pb2.MATCH_METHOD_HOSPITAL_MRN

    by_mrn_only = await identity.resolve(hospital_id="h1", mrn="MRN-1")
    assert by_mrn_only.person_token == created.person_token
    assert by_mrn_only.match_method == identity_pb2.MATCH_METHOD_HOSPITAL_MRN

    other_hospital = await identity.resolve(hospital_id="h2", mrn="9", national_id=NATIONAL_ID)
    assert other_hospital.person_token == created.person_token
    assert other_hospital.match_method == identity_pb2.MATCH_METHOD_NATIONAL_ID


async def test_resolve_normalizes_the_national_id(identity: Identity) -> None:
    with_x = make_national_id("110101", date(1975, 1, 1), 1)
    # Find a sequence whose check character is X, to exercise the lower-case form.
    seq = 1
    while not with_x.endswith("X"):
        seq += 1
        with_x = make_national_id("110101", date(1975, 1, 1), seq)
    first = await identity.resolve(hospital_id="h1", mrn="A", national_id=with_x)
    spaced = f" {with_x[:6]} {with_x[6:14]} {with_x[14:].lower()} "
    second = await identity.resolve(hospital_id="h2", mrn="B", national_id=spaced)
    assert second.person_token == first.person_token
    assert second.match_method == identity_pb2.MATCH_METHOD_NATIONAL_ID


async def test_different_people_get_different_tokens(identity: Identity) -> None:
    one = await identity.resolve(hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
    two = await identity.resolve(hospital_id="h1", mrn="2", national_id=OTHER_NATIONAL_ID)
    assert one.person_token != two.person_token


@both_backends
async def test_resolve_refuses_to_move_an_mrn(identity: Identity) -> None:
    await identity.resolve(hospital_id="h1", mrn="MRN-1", national_id=NATIONAL_ID)
    details = await failure(
        identity.resolve(hospital_id="h1", mrn="MRN-1", national_id=OTHER_NATIONAL_ID)
    )
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "MRN_LINKED_TO_OTHER_PERSON"
    assert_no_national_id(details)


@both_backends
async def test_a_patient_without_a_national_id_is_found_by_record_number(
    identity: Identity,
) -> None:
    created = await identity.resolve(hospital_id="h1", mrn="NEWBORN-1")
    assert created.match_method == identity_pb2.MATCH_METHOD_CREATED
    assert len(created.person_token) == 64
    again = await identity.resolve(hospital_id="h1", mrn="NEWBORN-1")
    assert again.person_token == created.person_token
    assert again.match_method == identity_pb2.MATCH_METHOD_HOSPITAL_MRN
    # The same record number at another hospital is another patient.
    elsewhere = await identity.resolve(hospital_id="h2", mrn="NEWBORN-1")
    assert elsewhere.person_token != created.person_token


@both_backends
async def test_a_national_id_sent_later_is_attached_to_the_person(identity: Identity) -> None:
    created = await identity.resolve(hospital_id="h1", mrn="UNKNOWN-7")
    details = await failure(
        identity.stub.LookupByNationalId(
            identity_pb2.LookupByNationalIdRequest(national_id=NATIONAL_ID),
            metadata=identity.auth(RECORD_LOOKUP),
        )
    )
    assert details.code == grpc.StatusCode.NOT_FOUND

    linked = await identity.resolve(hospital_id="h1", mrn="UNKNOWN-7", national_id=NATIONAL_ID)
    assert linked.person_token == created.person_token
    assert await identity.lookup(NATIONAL_ID) == created.person_token
    from_elsewhere = await identity.resolve(hospital_id="h2", mrn="B-1", national_id=NATIONAL_ID)
    assert from_elsewhere.person_token == created.person_token
    assert from_elsewhere.match_method == identity_pb2.MATCH_METHOD_NATIONAL_ID


@both_backends
async def test_a_national_id_held_by_another_person_is_refused_not_merged(
    identity: Identity,
) -> None:
    by_id = await identity.resolve(hospital_id="h2", mrn="B-1", national_id=NATIONAL_ID)
    by_mrn = await identity.resolve(hospital_id="h1", mrn="A-1")
    details = await failure(identity.resolve(hospital_id="h1", mrn="A-1", national_id=NATIONAL_ID))
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "MRN_LINKED_TO_OTHER_PERSON"
    assert details.retry_delay is None
    assert_no_national_id(details)
    assert "A-1" not in details.message
    # Nothing moved; the pair waits for review in the pending merges.
    assert await identity.lookup(NATIONAL_ID) == by_id.person_token
    assert (await identity.resolve(hospital_id="h1", mrn="A-1")).person_token == by_mrn.person_token
    merges = await stored_rows(identity.settings, "pending_merges")
    assert [
        (row["mrn_person_token"], row["national_id_person_token"], row["hospital_id"])
        for row in merges
    ] == [(by_mrn.person_token, by_id.person_token, "h1")]


@both_backends
async def test_hospitals_registering_one_national_id_at_once_get_one_person(
    identity: Identity,
) -> None:
    results = await asyncio.gather(
        *(
            identity.resolve(hospital_id=f"h{index % 5}", mrn=f"M-{index}", national_id=NATIONAL_ID)
            for index in range(15)
        )
    )
    (token,) = {result.person_token for result in results}
    methods = [result.match_method for result in results]
    assert methods.count(identity_pb2.MATCH_METHOD_CREATED) == 1
    assert await identity.lookup(NATIONAL_ID) == token
    assert len((await identity.get_person(token)).links) == 15


async def test_resolve_empty_request_lists_every_missing_field(identity: Identity) -> None:
    details = await failure(identity.resolve())
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == [("hospital_id", "is required"), ("mrn", "is required")]


async def test_resolve_malformed_fields(identity: Identity) -> None:
    details = await failure(
        identity.resolve(
            hospital_id="bad hospital",
            mrn="x" * 65,
            national_id=BAD_CHECK_DIGIT,
            demographics=identity_pb2.Demographics(birth_date="17/05/1980", sex="yes"),
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = dict(details.field_violations)
    assert set(fields) == {
        "hospital_id",
        "mrn",
        "national_id",
        "demographics.birth_date",
        "demographics.sex",
    }
    assert fields["national_id"] == "check digit mismatch"
    assert fields["mrn"] == "must be at most 64 characters"
    assert_no_national_id(details)


@pytest.mark.parametrize(
    ("national_id", "reason"),
    [
        ("12345", "must be 18 characters, got 5"),
        ("11010119800517ABCD", "must be 17 digits followed by a digit or X"),
        (NATIONAL_ID.replace("11", "99", 1), "region code is not a known province"),
    ],
)
async def test_resolve_reports_why_a_national_id_is_invalid(
    identity: Identity, national_id: str, reason: str
) -> None:
    details = await failure(identity.resolve(hospital_id="h1", mrn="1", national_id=national_id))
    assert details.field_violations == [("national_id", reason)]
    assert national_id not in details.message + repr(details.field_violations)


async def test_resolve_mrn_must_be_printable(identity: Identity) -> None:
    details = await failure(
        identity.resolve(hospital_id="h1", mrn="MRN\n1", national_id=NATIONAL_ID)
    )
    assert [field for field, _ in details.field_violations] == ["mrn"]


async def test_resolve_needs_a_service_caller(identity: Identity) -> None:
    unauthenticated = await failure(
        identity.stub.Resolve(
            identity_pb2.ResolveRequest(hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
        )
    )
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
    for principal in (CLINICIAN, EMERGENCY, PATIENT):
        denied = await failure(
            identity.resolve(principal, hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
        )
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


async def test_resolve_rejects_a_forged_token(identity: Identity) -> None:
    forged = encode_token(INGEST, b"not-the-secret")
    details = await failure(
        identity.stub.Resolve(
            identity_pb2.ResolveRequest(hospital_id="h1", mrn="1", national_id=NATIONAL_ID),
            metadata=(("authorization", f"Bearer {forged}"),),
        )
    )
    assert details.code == grpc.StatusCode.UNAUTHENTICATED


@both_backends
async def test_national_id_mrn_and_demographics_are_never_stored_in_clear(
    identity: Identity,
) -> None:
    demographics = identity_pb2.Demographics(
        family_name="Zhangsanfeng",
        given_name="Wudangpai",
        birth_date="1980-05-17",
        sex="male",
        phone="13912345678",
    )
    response = await identity.resolve(
        hospital_id="h1", mrn="MRN-5550123", national_id=NATIONAL_ID, demographics=demographics
    )
    await identity.resolve(hospital_id="h2", mrn="NOID-7770456")
    stored = await stored_bytes(identity.settings)
    assert response.person_token.encode() in stored
    secrets = ("MRN-5550123", "5550123", "NOID-7770456", "7770456", NATIONAL_ID)
    for secret in (*secrets, "Zhangsanfeng", "Wudangpai", "13912345678", "1980-05-17"):
        assert secret.encode() not in stored

    # The sealed profile opens only for its own person.
    persons = await stored_rows(identity.settings, "persons")
    (person,) = [row for row in persons if row["person_token"] == response.person_token]
    sealed = person["sealed_demographics"]
    sealer = build_sealer(identity.settings, build_key_provider(identity.settings))
    opened = await sealer.open(sealed, demographics_aad(response.person_token))
    assert Demographics.from_bytes(opened).family_name == "Zhangsanfeng"
    with pytest.raises(TamperedPayload):
        await sealer.open(sealed, demographics_aad("f" * 64))


@both_backends
async def test_twenty_concurrent_resolves_make_one_person(identity: Identity) -> None:
    same_mrn = await asyncio.gather(
        *(
            identity.resolve(hospital_id="h1", mrn="MRN-1", national_id=NATIONAL_ID)
            for _ in range(20)
        )
    )
    tokens = {response.person_token for response in same_mrn}
    assert len(tokens) == 1
    methods = [response.match_method for response in same_mrn]
    assert methods.count(identity_pb2.MATCH_METHOD_CREATED) == 1

    many_mrns = await asyncio.gather(
        *(
            identity.resolve(hospital_id="h2", mrn=f"M{index}", national_id=NATIONAL_ID)
            for index in range(20)
        )
    )
    assert {response.person_token for response in many_mrns} == tokens
    assert identity_pb2.MATCH_METHOD_CREATED not in [r.match_method for r in many_mrns]

    (token,) = tokens
    person = await identity.stub.GetPerson(
        identity_pb2.GetPersonRequest(name=f"persons/{token}"),
        metadata=identity.auth(PRIVACY_OFFICER),
    )
    assert len(person.links) == 21
    assert len(await stored_rows(identity.settings, "persons")) == 1


@both_backends
async def test_concurrent_resolves_of_different_people_for_one_mrn_link_only_one(
    identity: Identity,
) -> None:
    results = await asyncio.gather(
        *(
            identity.resolve(hospital_id="h1", mrn="shared", national_id=national_id)
            for national_id in [NATIONAL_ID, OTHER_NATIONAL_ID] * 5
        ),
        return_exceptions=True,
    )
    winners = {r.person_token for r in results if isinstance(r, identity_pb2.ResolveResponse)}
    assert len(winners) == 1
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            assert error_details(result).reason == "MRN_LINKED_TO_OTHER_PERSON"


# --- ResolveBatch --------------------------------------------------------------------------


@both_backends
async def test_resolve_batch_answers_each_request_in_order(identity: Identity) -> None:
    by_id = await identity.resolve(hospital_id="h2", mrn="B-1", national_id=NATIONAL_ID)
    batch = identity_pb2.ResolveBatchRequest(
        requests=[
            identity_pb2.ResolveRequest(hospital_id="h1", mrn="A-1"),
            identity_pb2.ResolveRequest(hospital_id="h3", mrn="C-1", national_id=NATIONAL_ID),
            identity_pb2.ResolveRequest(hospital_id="h1", mrn="x" * 65),
            identity_pb2.ResolveRequest(hospital_id="h1", mrn="A-1", national_id=NATIONAL_ID),
            identity_pb2.ResolveRequest(hospital_id="h1", mrn="A-1"),
        ]
    )
    response = await identity.stub.ResolveBatch(batch, metadata=identity.auth(INGEST))
    kinds = [result.WhichOneof("result") for result in response.results]
    assert kinds == ["resolution", "resolution", "failure", "failure", "resolution"]
    first, with_id, invalid, conflict, again = response.results
    assert first.resolution.match_method == identity_pb2.MATCH_METHOD_CREATED
    assert with_id.resolution.person_token == by_id.person_token
    assert with_id.resolution.match_method == identity_pb2.MATCH_METHOD_NATIONAL_ID
    assert (invalid.failure.code, invalid.failure.reason) == (
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert [(v.field, v.description) for v in invalid.failure.field_violations] == [
        ("mrn", "must be at most 64 characters")
    ]
    assert (conflict.failure.code, conflict.failure.reason) == (
        "FAILED_PRECONDITION",
        "MRN_LINKED_TO_OTHER_PERSON",
    )
    assert NATIONAL_ID not in str(response)
    assert again.resolution.person_token == first.resolution.person_token
    # The same answers one by one.
    single = await identity.resolve(hospital_id="h1", mrn="A-1")
    assert single.person_token == first.resolution.person_token


async def test_resolve_batch_size_and_callers(identity: Identity) -> None:
    empty = await failure(
        identity.stub.ResolveBatch(
            identity_pb2.ResolveBatchRequest(), metadata=identity.auth(INGEST)
        )
    )
    assert empty.field_violations == [("requests", "is required")]
    item = identity_pb2.ResolveRequest(hospital_id="h1", mrn="1")
    too_many = await failure(
        identity.stub.ResolveBatch(
            identity_pb2.ResolveBatchRequest(requests=[item] * 1001),
            metadata=identity.auth(INGEST),
        )
    )
    assert too_many.field_violations == [("requests", "at most 1000 per call")]
    for principal in (CLINICIAN, EMERGENCY, PATIENT):
        denied = await failure(
            identity.stub.ResolveBatch(
                identity_pb2.ResolveBatchRequest(requests=[item]),
                metadata=identity.auth(principal),
            )
        )
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- LookupByNationalId ----------------------------------------------------------------------


@both_backends
async def test_lookup_finds_a_known_person(identity: Identity) -> None:
    created = await identity.resolve(hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
    found = await identity.stub.LookupByNationalId(
        identity_pb2.LookupByNationalIdRequest(national_id=NATIONAL_ID),
        metadata=identity.auth(RECORD_LOOKUP),
    )
    assert found.person_token == created.person_token


@both_backends
async def test_lookup_unknown_person_is_not_found(identity: Identity) -> None:
    details = await failure(
        identity.stub.LookupByNationalId(
            identity_pb2.LookupByNationalIdRequest(national_id=OTHER_NATIONAL_ID),
            metadata=identity.auth(RECORD_LOOKUP),
        )
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "PERSON_NOT_FOUND"
    assert_no_national_id(details)


async def test_lookup_malformed(identity: Identity) -> None:
    empty = await failure(
        identity.stub.LookupByNationalId(
            identity_pb2.LookupByNationalIdRequest(), metadata=identity.auth(RECORD_LOOKUP)
        )
    )
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.field_violations == [("national_id", "is required")]

    invalid = await failure(
        identity.stub.LookupByNationalId(
            identity_pb2.LookupByNationalIdRequest(national_id=BAD_CHECK_DIGIT),
            metadata=identity.auth(RECORD_LOOKUP),
        )
    )
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.field_violations == [("national_id", "check digit mismatch")]
    assert_no_national_id(invalid)


async def test_lookup_callers(identity: Identity) -> None:
    request = identity_pb2.LookupByNationalIdRequest(national_id=NATIONAL_ID)
    unauthenticated = await failure(identity.stub.LookupByNationalId(request))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
    # Emergency staff look people up only through record-lookup's audited break-glass flow.
    for principal in (CLINICIAN, PATIENT, EMERGENCY, INGEST):
        denied = await failure(
            identity.stub.LookupByNationalId(request, metadata=identity.auth(principal))
        )
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- GetPerson -------------------------------------------------------------------------------


@both_backends
async def test_get_person_lists_hospitals_without_record_numbers(identity: Identity) -> None:
    created = await identity.resolve(hospital_id="h2", mrn="B-7", national_id=NATIONAL_ID)
    await identity.resolve(hospital_id="h1", mrn="A-1", national_id=NATIONAL_ID)
    await identity.resolve(hospital_id="h1", mrn="A-2", national_id=NATIONAL_ID)
    name = f"persons/{created.person_token}"
    person = await identity.get_person(created.person_token, PRIVACY_OFFICER)
    assert person.name == name
    assert person.person_token == created.person_token
    assert [(link.hospital_id, link.mrn) for link in person.links] == [
        ("h1", ""),
        ("h1", ""),
        ("h2", ""),
    ]


# --- every read is audited -----------------------------------------------------------------


@both_backends
async def test_lookups_and_person_reads_are_audited_as_the_caller(identity: Identity) -> None:
    token = (
        await identity.resolve(hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
    ).person_token
    assert await identity.access_events(token) == []  # Resolve is ingest's write, not a read

    await identity.lookup(NATIONAL_ID, RECORD_LOOKUP)
    await identity.get_person(token, PRIVACY_OFFICER)
    events = await identity.access_events(token)
    assert [
        (event.action, principal_from_proto(event.actor), event.recorded_by) for event in events
    ] == [
        (audit_pb2.ACTION_LOOKUP_NATIONAL_ID, RECORD_LOOKUP, "identity"),
        (audit_pb2.ACTION_READ_PERSON, PRIVACY_OFFICER, "identity"),
    ]
    for event in events:
        assert list(event.resource_names) == [f"persons/{token}"]
        assert NATIONAL_ID not in str(event)


async def test_reads_are_refused_when_audit_cannot_record(identity: Identity) -> None:
    token = (
        await identity.resolve(hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
    ).person_token
    assert identity.running is not None
    await identity.running.hosts["audit"].stop(0)
    refused = [
        await failure(
            identity.stub.LookupByNationalId(
                identity_pb2.LookupByNationalIdRequest(national_id=NATIONAL_ID),
                metadata=identity.auth(RECORD_LOOKUP),
            )
        ),
        await failure(
            identity.stub.GetPerson(
                identity_pb2.GetPersonRequest(name=f"persons/{token}"),
                metadata=identity.auth(PRIVACY_OFFICER),
            )
        ),
    ]
    for details in refused:
        assert details.code == grpc.StatusCode.UNAVAILABLE
        assert details.reason == "AUDIT_UNAVAILABLE"
        assert details.retry_delay is not None
        assert_no_national_id(details)
    # Writes need no audit from identity: ingest audits what it stores.
    again = await identity.resolve(hospital_id="h1", mrn="1", national_id=NATIONAL_ID)
    assert again.person_token == token


@both_backends
async def test_get_person_unknown(identity: Identity) -> None:
    details = await failure(
        identity.stub.GetPerson(
            identity_pb2.GetPersonRequest(name=f"persons/{'c' * 64}"),
            metadata=identity.auth(PRIVACY_OFFICER),
        )
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "PERSON_NOT_FOUND"


@pytest.mark.parametrize(
    ("name", "violation"),
    [
        ("", ("name", "is required")),
        ("c" * 64, ("name", PERSON_NAME_RULE)),
        ("persons/not-a-token", ("name", PERSON_NAME_RULE)),
        (f"persons/{'c' * 64}/links", ("name", PERSON_NAME_RULE)),
    ],
)
async def test_get_person_malformed(
    identity: Identity, name: str, violation: tuple[str, str]
) -> None:
    details = await failure(
        identity.stub.GetPerson(
            identity_pb2.GetPersonRequest(name=name), metadata=identity.auth(PRIVACY_OFFICER)
        )
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field_violations == [violation]


async def test_get_person_callers(identity: Identity) -> None:
    request = identity_pb2.GetPersonRequest(name=f"persons/{'c' * 64}")
    unauthenticated = await failure(identity.stub.GetPerson(request))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
    # MRNs of every hospital: not for clinicians, and no service needs them.
    for principal in (PATIENT, EMERGENCY, CLINICIAN, INGEST):
        denied = await failure(identity.stub.GetPerson(request, metadata=identity.auth(principal)))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


# --- health ------------------------------------------------------------------------------------


@both_backends
async def test_health_reports_serving(identity: Identity) -> None:
    health: Any = health_pb2_grpc.HealthStub(identity.channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# --- storage outage ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [CASSANDRA], indirect=True)
async def test_cassandra_down_is_unavailable_and_not_serving(settings: Settings) -> None:
    async with (
        cassandra_behind_proxy(settings, CASSANDRA_SERVICES) as (proxy, through_proxy),
        open_service(through_proxy) as host,
    ):
        bound = await host.start(0)
        async with open_channel(f"127.0.0.1:{bound}") as channel:
            await wait_for_health(channel, SERVICE_NAME)
            identity = Identity(identity_pb2_grpc.IdentityServiceStub(channel), channel, settings)
            await identity.resolve(hospital_id="h1", mrn="MRN-1", national_id=NATIONAL_ID)

            await proxy.cut()

            refused = [
                await failure(
                    identity.resolve(hospital_id="h1", mrn="MRN-2", national_id=NATIONAL_ID)
                ),
                await failure(
                    identity.stub.LookupByNationalId(
                        identity_pb2.LookupByNationalIdRequest(national_id=NATIONAL_ID),
                        metadata=identity.auth(RECORD_LOOKUP),
                    )
                ),
                # Two chains at once: the batch fails with the outage, not a group of them.
                await failure(
                    identity.stub.ResolveBatch(
                        identity_pb2.ResolveBatchRequest(
                            requests=[
                                identity_pb2.ResolveRequest(hospital_id="h1", mrn="MRN-3"),
                                identity_pb2.ResolveRequest(hospital_id="h2", mrn="MRN-4"),
                            ]
                        ),
                        metadata=identity.auth(INGEST),
                    )
                ),
            ]
            for details in refused:
                assert_storage_unavailable(details)
                assert_no_national_id(details)
            await wait_for_health(channel, SERVICE_NAME, NOT_SERVING)
    # Read directly (not through the cut path): the refused link was not written.
    links = await stored_rows(settings, "mrn_hash_links")
    assert [row["hospital_id"] for row in links] == ["h1"]


# --- probabilistic matching of registrations without a national ID (ADR 25) ---

HOME = "北京市朝阳区建国路88号3单元502"


def registration(**fields: str) -> identity_pb2.Demographics:
    return identity_pb2.Demographics(**fields)


# One patient's first registration, in characters, at home (two tests start from it).
WANG_XIAOMING_AT_HOME = {
    "family_name": "王", "given_name": "晓明", "birth_date": "1975-06-08", "sex": "male",
    "phone": "13812345678", "address": HOME,
}  # fmt: skip


@both_backends
async def test_a_patient_without_an_id_at_two_hospitals_is_one_person(identity: Identity) -> None:
    first = await identity.resolve(
        hospital_id="h1",
        mrn="A-100",
        demographics=registration(**WANG_XIAOMING_AT_HOME),
    )
    second = await identity.resolve(
        hospital_id="h2",
        mrn="B-200",
        demographics=registration(
            family_name="Wáng", given_name="Xiǎo Míng", birth_date="1975-08-06", sex="male",
            phone="+86 138 1234 5678",
        ),
    )  # fmt: skip
    assert first.match_method == identity_pb2.MATCH_METHOD_CREATED
    assert second.match_method == identity_pb2.MATCH_METHOD_DEMOGRAPHICS
    assert second.person_token == first.person_token
    assert not second.review_pending
    person = await identity.get_person(first.person_token)
    assert [link.hospital_id for link in person.links] == ["h1", "h2"]
    # The MRN is linked now: the next message of that patient is a plain MRN match.
    again = await identity.resolve(hospital_id="h2", mrn="B-200")
    assert again.person_token == first.person_token
    assert again.match_method == identity_pb2.MATCH_METHOD_HOSPITAL_MRN


@both_backends
async def test_one_person_registered_twice_in_one_batch_is_one_person(identity: Identity) -> None:
    # Their match claims differ (the birth date's day and month are swapped), so only the
    # order a batch resolves them in lets the second registration find the first.
    others = [
        identity_pb2.ResolveRequest(
            hospital_id="h9",
            mrn=f"O-{number}",
            demographics=registration(
                family_name="Zhao", given_name=f"Lei{number}", birth_date=f"19{number + 10}-03-04"
            ),
        )
        for number in range(8)
    ]
    batch = identity_pb2.ResolveBatchRequest(
        requests=[
            identity_pb2.ResolveRequest(
                hospital_id="h1", mrn="A-100", demographics=registration(**WANG_XIAOMING_AT_HOME)
            ),
            *others,
            identity_pb2.ResolveRequest(
                hospital_id="h2",
                mrn="B-200",
                demographics=registration(
                    family_name="Wáng", given_name="Xiǎo Míng", birth_date="1975-08-06",
                    sex="male", phone="+86 138 1234 5678",
                ),
            ),
        ]
    )  # fmt: skip
    response = await identity.stub.ResolveBatch(batch, metadata=identity.auth(INGEST))
    first, second = response.results[0].resolution, response.results[-1].resolution
    assert first.match_method == identity_pb2.MATCH_METHOD_CREATED
    assert second.match_method == identity_pb2.MATCH_METHOD_DEMOGRAPHICS
    assert second.person_token == first.person_token


@both_backends
async def test_a_registration_is_compared_with_every_one_linked_to_the_person(
    identity: Identity,
) -> None:
    # The patient moved: the second registration links on name and birth date; the third
    # resembles the second (new home, a day/month swap, a typo) but not the first.
    moved = {"phone": "13987654321", "address": "北京市海淀区学院路12号1单元101"}
    first = await identity.resolve(
        hospital_id="h1",
        mrn="M-1",
        demographics=registration(**WANG_XIAOMING_AT_HOME),
    )
    second = await identity.resolve(
        hospital_id="h2",
        mrn="M-2",
        demographics=registration(
            family_name="Wang", given_name="Xiaoming", birth_date="1975-06-08", sex="male",
            **moved,
        ),
    )  # fmt: skip
    third = await identity.resolve(
        hospital_id="h3",
        mrn="M-3",
        demographics=registration(
            family_name="Wang", given_name="Xiaomin", birth_date="1975-08-06", sex="male",
            **moved,
        ),
    )  # fmt: skip
    assert second.person_token == first.person_token
    assert third.match_method == identity_pb2.MATCH_METHOD_DEMOGRAPHICS
    assert third.person_token == first.person_token and not third.review_pending


async def test_twins_with_the_same_birth_date_and_address_are_never_linked(
    identity: Identity,
) -> None:
    home = {"birth_date": "2015-06-08", "phone": "13812345678", "address": HOME}
    first = await identity.resolve(
        hospital_id="h1", mrn="T-1",
        demographics=registration(family_name="李", given_name="明伟", sex="male", **home),
    )  # fmt: skip
    second = await identity.resolve(
        hospital_id="h1", mrn="T-2",
        demographics=registration(family_name="李", given_name="明涛", sex="male", **home),
    )  # fmt: skip
    assert second.person_token != first.person_token
    assert second.match_method == identity_pb2.MATCH_METHOD_CREATED
    # As alike as twins are, the pair waits for a person's review.
    assert second.review_pending
    (review,) = await stored_rows(identity.settings, "match_reviews")
    assert (review["person_token"], review["candidate_token"]) == (
        second.person_token,
        first.person_token,
    )
    assert json.loads(review["levels"])["name"] == "family_only"


async def test_a_newborn_without_an_id_is_a_new_person(identity: Identity) -> None:
    born = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    mother = await identity.resolve(
        hospital_id="h1", mrn="M-1",
        demographics=registration(
            family_name="陈", given_name="丽", birth_date="1990-02-03", sex="female",
            phone="13812345678", address=HOME,
        ),
    )  # fmt: skip
    newborn = registration(
        family_name="陈", birth_date=born, sex="female", phone="13812345678", address=HOME
    )
    at_birth = await identity.resolve(hospital_id="h1", mrn="N-1", demographics=newborn)
    transferred = await identity.resolve(hospital_id="h2", mrn="N-9", demographics=newborn)
    tokens = {mother.person_token, at_birth.person_token, transferred.person_token}
    assert len(tokens) == 3
    assert at_birth.match_method == transferred.match_method == identity_pb2.MATCH_METHOD_CREATED
    assert not at_birth.review_pending and not transferred.review_pending


async def test_a_near_match_waits_in_the_review_queue_with_the_fields_that_agreed(
    identity: Identity,
) -> None:
    first = await identity.resolve(
        hospital_id="h1", mrn="R-1",
        demographics=registration(
            family_name="王", given_name="小明", birth_date="1975-06-08",
            phone="13812345678", address=HOME,
        ),
    )  # fmt: skip
    second = await identity.resolve(
        hospital_id="h2", mrn="R-2",
        demographics=registration(
            family_name="Wang", given_name="Xiaoming", birth_date="1957-11-20",
            phone="13999999999", address=HOME,
        ),
    )  # fmt: skip
    assert second.person_token != first.person_token
    assert second.review_pending
    (review,) = await stored_rows(identity.settings, "match_reviews")
    assert 0.5 <= review["probability"] < 0.97
    assert json.loads(review["levels"]) == {
        "name": "exact",
        "birth_date": "different",
        "sex": "missing",
        "contact": "address",
        "national_id": "missing",
    }


@both_backends
async def test_matching_stores_no_name_phone_or_birth_date_in_clear(identity: Identity) -> None:
    demographics = registration(
        family_name="Zhangsanfeng", given_name="Wudangpai", birth_date="1980-05-17",
        sex="male", phone="13912345678", address="Wudangshan 1",
    )  # fmt: skip
    first = await identity.resolve(hospital_id="h1", mrn="Z-1", demographics=demographics)
    second = await identity.resolve(hospital_id="h2", mrn="Z-2", demographics=demographics)
    assert second.person_token == first.person_token
    rows = [
        row
        for table in ("persons", "match_blocks", "match_claims", "match_reviews")
        for row in await stored_rows(identity.settings, table)
    ]
    stored = await stored_bytes(identity.settings) + b"".join(
        value if isinstance(value, bytes) else str(value).encode()
        for row in rows
        for value in row.values()
    )
    assert first.person_token.encode() in stored
    for secret in ("zhangsanfeng", "Zhangsanfeng", "wudangpai", "13912345678", "19800517",
                   "1980-05-17", "Wudangshan", "zw:1980"):  # fmt: skip
        assert secret.encode() not in stored.lower() and secret.encode() not in stored


@both_backends
async def test_two_hospitals_registering_one_new_person_at_once_get_one_person(
    identity: Identity,
) -> None:
    for round_number in range(5):
        given = ["晓明", "丽华", "建国", "秀英", "志强"][round_number]
        in_characters = registration(
            family_name="赵", given_name=given, birth_date=f"198{round_number}-03-04",
            sex="female", phone=f"1381234567{round_number}",
        )  # fmt: skip
        in_pinyin = registration(
            family_name="Zhao", given_name=matching.romanize(given),
            birth_date=f"198{round_number}-03-04", sex="female",
        )  # fmt: skip
        first, second = await asyncio.gather(
            identity.resolve(hospital_id="h1", mrn=f"C-{round_number}", demographics=in_characters),
            identity.resolve(hospital_id="h2", mrn=f"D-{round_number}", demographics=in_pinyin),
        )
        assert first.person_token == second.person_token, round_number
        person = await identity.get_person(first.person_token)
        assert [link.hospital_id for link in person.links] == ["h1", "h2"]


# --- the review queue, merge and unmerge (privacy officers) ---

IDENTITY_TABLES = (
    "persons",
    "mrn_hash_links",
    "national_ids",
    "person_aliases",
    "match_blocks",
    "match_claims",
)


async def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the identity store's state tables, in a comparable order."""
    tables = list(IDENTITY_TABLES)
    if settings.storage_backend == "cassandra":
        tables.append("person_mrn_hashes")
    return {
        table: sorted(
            tuple(sorted((k, repr(v)) for k, v in row.items()))
            for row in await stored_rows(settings, table)
        )
        for table in tables
    }


async def merge(identity: Identity, survivor: str, absorbed: str) -> identity_pb2.Merge:
    result: identity_pb2.Merge = await identity.stub.MergePersons(
        identity_pb2.MergePersonsRequest(
            survivor=f"persons/{survivor}", absorbed=f"persons/{absorbed}"
        ),
        metadata=identity.auth(PRIVACY_OFFICER),
    )
    return result


async def unmerge(identity: Identity, merge_id: str) -> identity_pb2.Merge:
    result: identity_pb2.Merge = await identity.stub.UnmergePersons(
        identity_pb2.UnmergePersonsRequest(merge_id=merge_id),
        metadata=identity.auth(PRIVACY_OFFICER),
    )
    return result


@both_backends
async def test_merge_then_unmerge_returns_every_link_and_id_to_its_earlier_state(
    identity: Identity,
) -> None:
    with_id = await identity.resolve(
        hospital_id="h1", mrn="I-1", national_id=NATIONAL_ID,
        demographics=registration(family_name="周", given_name="杰", birth_date="1980-05-17"),
    )  # fmt: skip
    await identity.resolve(hospital_id="h2", mrn="I-2", national_id=NATIONAL_ID)
    jay = registration(
        family_name="Zhou", given_name="Jay", birth_date="1979-01-18", phone="13700000000"
    )
    without_id = await identity.resolve(hospital_id="h3", mrn="N-3", demographics=jay)
    linked = await identity.resolve(hospital_id="h4", mrn="N-4", demographics=jay)
    assert linked.person_token == without_id.person_token != with_id.person_token
    before = await snapshot(identity.settings)

    merged = await merge(identity, without_id.person_token, with_id.person_token)
    assert (merged.moved_links, merged.moved_national_id) == (2, True)
    survivor = without_id.person_token
    person = await identity.get_person(survivor)
    assert [link.hospital_id for link in person.links] == ["h1", "h2", "h3", "h4"]
    for hospital_id, mrn in (("h1", "I-1"), ("h4", "N-4")):
        again = await identity.resolve(hospital_id=hospital_id, mrn=mrn)
        assert again.person_token == survivor
    assert await identity.lookup(NATIONAL_ID) == survivor
    assert await snapshot(identity.settings) != before

    undone = await unmerge(identity, merged.merge_id)
    assert undone.undone
    assert await snapshot(identity.settings) == before
    again = await identity.resolve(hospital_id="h1", mrn="I-1", national_id=NATIONAL_ID)
    assert again.person_token == with_id.person_token
    assert await identity.lookup(NATIONAL_ID) == with_id.person_token
    details = await failure(unmerge(identity, merged.merge_id))
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MERGE_ALREADY_UNDONE",
    )


async def merged_persons(identity: Identity, person_token: str) -> list[str]:
    response = await identity.stub.ListMergedPersons(
        identity_pb2.ListMergedPersonsRequest(parent=f"persons/{person_token}"),
        metadata=identity.auth(RECORD_LOOKUP),
    )
    return list(response.merged_person_tokens)


@both_backends
async def test_the_persons_merged_into_a_person_are_listed_until_unmerged(
    identity: Identity,
) -> None:
    """ListMergedPersons, which a history asks (ADR 33): transitive, and undone exactly."""
    survivor = (await identity.resolve(hospital_id="h1", mrn="S-1")).person_token
    middle = (await identity.resolve(hospital_id="h2", mrn="M-1")).person_token
    first = (await identity.resolve(hospital_id="h3", mrn="F-1")).person_token
    assert await merged_persons(identity, survivor) == []
    inner = await merge(identity, middle, first)
    outer = await merge(identity, survivor, middle)
    assert await merged_persons(identity, survivor) == sorted([middle, first])
    assert await merged_persons(identity, middle) == [first]
    assert await merged_persons(identity, "f" * 64) == []  # unknown: nobody merged in

    await unmerge(identity, outer.merge_id)
    assert await merged_persons(identity, survivor) == []
    await unmerge(identity, inner.merge_id)
    assert await merged_persons(identity, middle) == []
    # Only the merges are in the trails: record-lookup audits the reads it makes with these.
    for token in (survivor, middle, first):
        actions = {event.action for event in await identity.access_events(token)}
        assert actions == {audit_pb2.ACTION_IDENTITY_CHANGE}


async def test_merged_persons_callers_and_bad_input(identity: Identity) -> None:
    bad = await failure(
        identity.stub.ListMergedPersons(
            identity_pb2.ListMergedPersonsRequest(parent="people/x"),
            metadata=identity.auth(RECORD_LOOKUP),
        )
    )
    assert (bad.code, bad.field_violations) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [("parent", PERSON_NAME_RULE)],
    )
    request = identity_pb2.ListMergedPersonsRequest(parent=f"persons/{'a' * 64}")
    for principal in (CLINICIAN, PATIENT, EMERGENCY, INGEST, PRIVACY_OFFICER):
        denied = await failure(
            identity.stub.ListMergedPersons(request, metadata=identity.auth(principal))
        )
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


@both_backends
async def test_another_replica_follows_a_merge_once_it_looks(identity: Identity) -> None:
    """ADR 33: a replica that answered a patient from its cache stops doing so once it sees
    (by polling the store) that another replica merged that patient's person away."""
    assert identity.running is not None
    settings = identity.settings.model_copy(update={"identity_merge_poll_seconds": 0.05})
    clients = identity.running.clients(settings, SERVICE)
    await identity.running.start("identity-2", open_service(settings, clients=clients))
    replica = identity_pb2_grpc.IdentityServiceStub(identity.running.channel("identity-2"))

    async def resolve_on_replica(mrn: str) -> str:
        answer = await replica.Resolve(
            identity_pb2.ResolveRequest(hospital_id="h1", mrn=mrn), metadata=identity.auth(INGEST)
        )
        return str(answer.person_token)

    duplicate = await resolve_on_replica("P-9")
    assert await resolve_on_replica("P-9") == duplicate  # now answered from its cache
    survivor = await identity.resolve(hospital_id="h1", mrn="S-9", national_id=NATIONAL_ID)
    await merge(identity, survivor.person_token, duplicate)

    for _ in range(600):  # the replica looks every 0.05 s: far sooner than 30 s
        if await resolve_on_replica("P-9") == survivor.person_token:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the replica still answers the merged-away person")


async def test_two_persons_with_national_ids_are_never_merged(identity: Identity) -> None:
    first = await identity.resolve(hospital_id="h1", mrn="A-1", national_id=NATIONAL_ID)
    second = await identity.resolve(hospital_id="h1", mrn="A-2", national_id=OTHER_NATIONAL_ID)
    details = await failure(merge(identity, first.person_token, second.person_token))
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOTH_HOLD_NATIONAL_IDS",
    )
    assert not await stored_rows(identity.settings, "person_aliases")


async def test_accepting_a_review_merges_and_is_audited_with_who_decided(
    identity: Identity,
) -> None:
    home = {"birth_date": "2015-06-08", "phone": "13812345678", "address": HOME}
    first = await identity.resolve(
        hospital_id="h1", mrn="T-1",
        demographics=registration(family_name="李", given_name="明伟", **home),
    )  # fmt: skip
    second = await identity.resolve(
        hospital_id="h2", mrn="T-2",
        demographics=registration(family_name="李", given_name="明涛", **home),
    )  # fmt: skip
    listed = await identity.stub.ListMatchReviews(
        identity_pb2.ListMatchReviewsRequest(), metadata=identity.auth(PRIVACY_OFFICER)
    )
    (review,) = listed.reviews
    assert (review.person_token, review.candidate_token, review.status) == (
        second.person_token,
        first.person_token,
        "pending",
    )
    assert review.field_levels["name"] == "family_only"

    decided = await identity.stub.DecideMatchReview(
        identity_pb2.DecideMatchReviewRequest(review_id=review.review_id, accept=True),
        metadata=identity.auth(PRIVACY_OFFICER),
    )
    assert decided.status == "accepted" and decided.merge_id
    again = await identity.resolve(hospital_id="h2", mrn="T-2")
    assert again.person_token == first.person_token
    changes = [
        event
        for event in await identity.access_events(first.person_token)
        if event.action == audit_pb2.ACTION_IDENTITY_CHANGE
    ]
    assert [event.basis for event in changes] == ["MATCH_REVIEW_ACCEPTED", "PERSONS_MERGED"]
    assert all(principal_from_proto(event.actor) == PRIVACY_OFFICER for event in changes)
    details = await failure(
        identity.stub.DecideMatchReview(
            identity_pb2.DecideMatchReviewRequest(review_id=review.review_id, accept=False),
            metadata=identity.auth(PRIVACY_OFFICER),
        )
    )
    assert details.reason == "REVIEW_ALREADY_DECIDED"
    pending = await identity.stub.ListMatchReviews(
        identity_pb2.ListMatchReviewsRequest(), metadata=identity.auth(PRIVACY_OFFICER)
    )
    assert list(pending.reviews) == []


@both_backends
async def test_a_hospitals_own_duplicate_is_merged_when_it_merges_the_record_numbers(
    identity: Identity,
) -> None:
    """ADT^A40 (ADR 33): the hospital registered one patient twice; the person it alone
    knows under the prior number joins the surviving number's person, audited as ingest."""
    survivor = await identity.resolve(hospital_id="h1", mrn="S-1", national_id=NATIONAL_ID)
    duplicate = await identity.resolve(hospital_id="h1", mrn="P-1")
    assert duplicate.person_token != survivor.person_token

    merged = await identity.resolve(
        hospital_id="h1", mrn="S-1", national_id=NATIONAL_ID, prior_mrns=["P-1", "P-NEW"]
    )
    assert merged.person_token == survivor.person_token
    assert list(merged.prior_record_outcomes) == [
        identity_pb2.PRIOR_RECORD_OUTCOME_MERGED,
        identity_pb2.PRIOR_RECORD_OUTCOME_LINKED,
    ]
    for mrn in ("P-1", "P-NEW"):
        assert (await identity.resolve(hospital_id="h1", mrn=mrn)).person_token == (
            survivor.person_token
        )
    changes = [
        (event.basis, principal_from_proto(event.actor))
        for event in await identity.access_events(duplicate.person_token)
        if event.action == audit_pb2.ACTION_IDENTITY_CHANGE
    ]
    assert changes == [("HOSPITAL_RECORDS_MERGED", INGEST)]

    # The message again (a retry, or the engine resending): nothing more happens.
    again = await identity.resolve(
        hospital_id="h1", mrn="S-1", national_id=NATIONAL_ID, prior_mrns=["P-1", "P-NEW"]
    )
    assert list(again.prior_record_outcomes) == [
        identity_pb2.PRIOR_RECORD_OUTCOME_ALREADY_SAME_PERSON,
        identity_pb2.PRIOR_RECORD_OUTCOME_ALREADY_SAME_PERSON,
    ]
    assert len(await stored_rows(identity.settings, "merges")) == 1


@both_backends
async def test_a_prior_record_known_to_another_hospital_waits_for_a_privacy_officer(
    identity: Identity,
) -> None:
    """One hospital may not move a person other hospitals know: the pair is reviewed."""
    survivor = await identity.resolve(hospital_id="h1", mrn="S-2")
    shared = await identity.resolve(hospital_id="h1", mrn="P-2", national_id=NATIONAL_ID)
    await identity.resolve(hospital_id="h2", mrn="X-2", national_id=NATIONAL_ID)

    answered = await identity.resolve(hospital_id="h1", mrn="S-2", prior_mrns=["P-2"])
    assert list(answered.prior_record_outcomes) == [identity_pb2.PRIOR_RECORD_OUTCOME_REVIEW]
    assert (await identity.resolve(hospital_id="h1", mrn="P-2")).person_token == (
        shared.person_token
    )
    assert not await stored_rows(identity.settings, "merges")
    listed = await identity.stub.ListMatchReviews(
        identity_pb2.ListMatchReviewsRequest(), metadata=identity.auth(PRIVACY_OFFICER)
    )
    (review,) = listed.reviews
    assert (review.person_token, review.candidate_token) == (
        shared.person_token,
        survivor.person_token,
    )
    assert dict(review.field_levels) == {"hospital_record_merge": "asserted"}
    await identity.resolve(hospital_id="h1", mrn="S-2", prior_mrns=["P-2"])
    listed = await identity.stub.ListMatchReviews(
        identity_pb2.ListMatchReviewsRequest(), metadata=identity.auth(PRIVACY_OFFICER)
    )
    assert len(listed.reviews) == 1


async def test_prior_record_numbers_are_checked_one_by_one(identity: Identity) -> None:
    details = await failure(
        identity.resolve(hospital_id="h1", mrn="S-3", prior_mrns=["S-3", "", "ok", "\x07"])
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field for field, _ in details.field_violations) == [
        "prior_mrns[0]",
        "prior_mrns[1]",
        "prior_mrns[3]",
    ]
    too_many = [f"P-{index}" for index in range(21)]
    details = await failure(identity.resolve(hospital_id="h1", mrn="S-3", prior_mrns=too_many))
    assert [field for field, _ in details.field_violations] == ["prior_mrns"]


async def test_rejecting_a_review_keeps_the_persons_apart(identity: Identity) -> None:
    home = {"birth_date": "2015-06-08", "phone": "13812345678", "address": HOME}
    first = await identity.resolve(
        hospital_id="h1", mrn="T-1",
        demographics=registration(family_name="李", given_name="明伟", **home),
    )  # fmt: skip
    second = await identity.resolve(
        hospital_id="h2", mrn="T-2",
        demographics=registration(family_name="李", given_name="明涛", **home),
    )  # fmt: skip
    (review,) = (
        await identity.stub.ListMatchReviews(
            identity_pb2.ListMatchReviewsRequest(), metadata=identity.auth(PRIVACY_OFFICER)
        )
    ).reviews
    decided = await identity.stub.DecideMatchReview(
        identity_pb2.DecideMatchReviewRequest(review_id=review.review_id, accept=False),
        metadata=identity.auth(PRIVACY_OFFICER),
    )
    assert (decided.status, decided.merge_id) == ("rejected", "")
    assert (await identity.resolve(hospital_id="h2", mrn="T-2")).person_token == (
        second.person_token
    )
    assert first.person_token != second.person_token
    (event,) = [
        event
        for event in await identity.access_events(first.person_token)
        if event.action == audit_pb2.ACTION_IDENTITY_CHANGE
    ]
    assert event.basis == "MATCH_REVIEW_REJECTED"
    assert principal_from_proto(event.actor) == PRIVACY_OFFICER


async def test_only_privacy_officers_see_the_review_queue_or_merge(identity: Identity) -> None:
    for principal in (CLINICIAN, INGEST, PATIENT):
        details = await failure(
            identity.stub.ListMatchReviews(
                identity_pb2.ListMatchReviewsRequest(), metadata=identity.auth(principal)
            )
        )
        assert details.code == grpc.StatusCode.PERMISSION_DENIED
        details = await failure(
            identity.stub.MergePersons(
                identity_pb2.MergePersonsRequest(survivor="persons/" + "a" * 64),
                metadata=identity.auth(principal),
            )
        )
        assert details.code == grpc.StatusCode.PERMISSION_DENIED


async def test_the_link_threshold_is_a_setting(settings: Settings) -> None:
    strict = settings.model_copy(update={"identity_match_link_threshold": 1.0})
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start(SERVICE, open_service(strict, clients=running.clients(strict, SERVICE)))
        await wait_for_health(running.channel(SERVICE), SERVICE_NAME)
        identity = Identity(
            identity_pb2_grpc.IdentityServiceStub(running.channel(SERVICE)),
            running.channel(SERVICE),
            strict,
            running,
        )
        jay = registration(
            family_name="Zhou", given_name="Jay", birth_date="1979-01-18", phone="13700000000"
        )
        first = await identity.resolve(hospital_id="h1", mrn="S-1", demographics=jay)
        second = await identity.resolve(hospital_id="h2", mrn="S-2", demographics=jay)
    # Nothing reaches a probability of 1: the same demographics wait for review instead.
    assert second.person_token != first.person_token
    assert second.review_pending
