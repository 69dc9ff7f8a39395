"""The consent gate (healthbank.rpc.gate) against the real consent and audit services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from auth_support import BearerAuth

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.facts import Fact, encode_fact
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings, load_settings
from healthbank.core.ids import new_ulid
from healthbank.crypto import Sealer, build_key_provider, build_sealer
from healthbank.records import fact_aad, payload_aad, record_name
from healthbank.rpc import ServiceError, ServiceHost, inbound_token, service_client_factory
from healthbank.rpc.clients import open_channel
from healthbank.rpc.gate import Admission, ConsentGate, ReadScope
from services.audit.app import open_service as open_audit
from services.consent.app import open_service as open_consent

PERSON = "c3" * 32
OTHER_PERSON = "d4" * 32
HOSPITAL = "city-general"
RECORDER = "record-lookup"
OBSERVATION = common_pb2.RECORD_CATEGORY_OBSERVATION
ALLERGY = common_pb2.RECORD_CATEGORY_ALLERGY

CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL)
EMERGENCY = Principal(
    PrincipalKind.EMERGENCY,
    "er-doc-1",
    hospital_id="east-er",
    roles=("emergency-physician",),
    purpose=Purpose.EMERGENCY,
)


def patient(person_token: str) -> Principal:
    return Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)


@dataclass
class Setup(BearerAuth):
    settings: Settings
    hosts: dict[str, ServiceHost]
    gate: ConsentGate
    sealer: Sealer
    consent: consent_pb2_grpc.ConsentServiceAsyncStub
    audit: audit_pb2_grpc.AuditServiceAsyncStub

    async def events(self, person_token: str) -> list[audit_pb2.AccessEvent]:
        """The person's access events the gate recorded, newest first (consent records its
        own changes beside them)."""
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}"),
            metadata=self.auth(patient(person_token)),
        )
        return [logged.event for logged in response.events if logged.event.recorded_by == RECORDER]

    async def grant(self, person_token: str, categories: list[int]) -> None:
        expire = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
        grant = consent_pb2.Grant(grantee_hospital_id=HOSPITAL, categories=categories)
        grant.expire_time.FromDatetime(expire)
        await self.consent.CreateGrant(
            consent_pb2.CreateGrantRequest(
                parent=f"persons/{person_token}", grant=grant, request_id=new_ulid()
            ),
            metadata=self.auth(patient(person_token)),
        )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    settings = load_settings({"HEALTHBANK_DATA_DIR": str(tmp_path), "HEALTHBANK_PORT": "0"})
    async with AsyncExitStack() as exits:
        hosts: dict[str, ServiceHost] = {}
        addresses: dict[str, str] = {}
        # Audit first: consent records every grant there.
        for name in ("audit", "consent"):
            if name == "audit":
                opened = open_audit(settings)
            else:
                consent_clients = service_client_factory(settings, name, addresses=addresses)
                exits.push_async_callback(consent_clients.close)
                opened = open_consent(settings, clients=consent_clients)
            host = await exits.enter_async_context(opened)
            addresses[name] = f"127.0.0.1:{await host.start(0)}"
            hosts[name] = host
        clients = service_client_factory(settings, RECORDER, addresses=addresses)
        exits.push_async_callback(clients.close)
        sealer = build_sealer(settings, build_key_provider(settings))

        def stub(name: str) -> grpc.aio.Channel:
            channel = open_channel(addresses[name])
            exits.push_async_callback(channel.close)
            return channel

        yield Setup(
            settings=settings,
            hosts=hosts,
            gate=ConsentGate(
                clients=clients, sealer=sealer, service=RECORDER, now=lambda: datetime.now(UTC)
            ),
            sealer=sealer,
            consent=consent_pb2_grpc.ConsentServiceStub(stub("consent")),
            audit=audit_pb2_grpc.AuditServiceStub(stub("audit")),
        )


class ReadProbe:
    """A caller's read of sealed rows: notes each start; ``blocked`` holds it until released
    (so a test can see what happens while the audit append is still in flight)."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.started: list[frozenset[int]] = []
        self.persons: list[tuple[str, ...]] = []
        self.cancelled = False
        self._release = asyncio.Event()
        if not blocked:
            self._release.set()

    async def __call__(self, scope: ReadScope) -> str:
        self.started.append(scope.permitted_categories)
        self.persons.append(scope.person_tokens)
        try:
            await self._release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "rows"


async def admit(
    setup: Setup, principal: Principal, person_token: str = PERSON, categories: tuple[int, ...] = ()
) -> Admission:
    return await setup.gate.admit(
        principal, person_token, action=audit_pb2.ACTION_READ_HISTORY, categories=categories
    )


async def refusal(setup: Setup, principal: Principal, person_token: str = PERSON) -> ServiceError:
    with pytest.raises(ServiceError) as raised:
        await admit(setup, principal, person_token)
    return raised.value


async def refusal_reading(setup: Setup, principal: Principal, read: ReadProbe) -> ServiceError:
    with pytest.raises(ServiceError) as raised:
        await setup.gate.admit_reading(
            principal, PERSON, read, action=audit_pb2.ACTION_READ_HISTORY
        )
    return raised.value


async def test_a_patient_reads_their_own_data_as_self_without_asking_consent(setup: Setup) -> None:
    await setup.hosts["consent"].stop(0)  # the patient rule is the gate's own
    admission = await admit(setup, patient(PERSON), categories=(OBSERVATION,))
    assert (admission.person_token, admission.basis, admission.authority_name) == (
        PERSON,
        "SELF",
        "",
    )
    assert admission.permitted_categories == frozenset()  # everything asked for
    (event,) = await setup.events(PERSON)
    assert (event.action, event.basis, event.recorded_by) == (
        audit_pb2.ACTION_READ_HISTORY,
        "SELF",
        RECORDER,
    )
    assert event.actor.kind == common_pb2.PRINCIPAL_KIND_PATIENT
    assert list(event.resource_names) == [f"persons/{PERSON}"]


async def test_a_patient_is_refused_another_persons_data_and_the_refusal_audited(
    setup: Setup,
) -> None:
    refused = await refusal(setup, patient(OTHER_PERSON))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_DATA_SUBJECT")
    (event,) = await setup.events(PERSON)
    assert (event.action, event.basis) == (audit_pb2.ACTION_DENIED, "NOT_DATA_SUBJECT")
    assert event.actor.subject == OTHER_PERSON


async def test_a_clinician_reads_what_a_grant_covers(setup: Setup) -> None:
    refused = await refusal(setup, CLINICIAN)
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_GRANT")

    await setup.grant(PERSON, [OBSERVATION])
    admission = await admit(setup, CLINICIAN, categories=(OBSERVATION, ALLERGY))
    assert admission.basis == "GRANT"
    assert admission.permitted_categories == {OBSERVATION}
    assert admission.authority_name.startswith(f"persons/{PERSON}/grants/")
    read, denied = await setup.events(PERSON)
    assert (denied.action, denied.basis) == (audit_pb2.ACTION_DENIED, "NO_GRANT")
    assert (read.action, read.basis) == (audit_pb2.ACTION_READ_HISTORY, "GRANT")
    assert list(read.resource_names) == [f"persons/{PERSON}", admission.authority_name]
    assert admission.audit_leaf_index > 0  # after the denial's leaf


async def test_no_audit_no_admission_and_a_refusal_stays_a_refusal(setup: Setup) -> None:
    await setup.hosts["audit"].stop(0)
    unaudited = await refusal(setup, patient(PERSON))
    assert (unaudited.code, unaudited.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
    )
    assert unaudited.retry_delay is not None
    # A denial that cannot be audited is still the denial, not an outage.
    refused = await refusal(setup, patient(OTHER_PERSON))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_DATA_SUBJECT")


async def test_the_rows_are_read_with_the_permitted_categories_beside_the_audit(
    setup: Setup,
) -> None:
    read = ReadProbe()
    refused = await refusal_reading(setup, CLINICIAN, read)
    assert refused.reason == "NO_GRANT"
    assert read.started == []  # a refused reader's rows are never even fetched

    await setup.grant(PERSON, [OBSERVATION])
    admission, rows = await setup.gate.admit_reading(
        CLINICIAN,
        PERSON,
        read,
        action=audit_pb2.ACTION_READ_HISTORY,
        categories=(OBSERVATION, ALLERGY),
    )
    assert (rows, read.started) == ("rows", [frozenset({OBSERVATION})])
    logged, denied = await setup.events(PERSON)
    assert (logged.action, denied.action) == (
        audit_pb2.ACTION_READ_HISTORY,
        audit_pb2.ACTION_DENIED,
    )
    assert admission.authority_name in logged.resource_names


async def test_a_read_whose_audit_fails_is_cancelled_and_nothing_returned(setup: Setup) -> None:
    await setup.hosts["audit"].stop(0)
    read = ReadProbe(blocked=True)  # still fetching when the append fails
    unaudited = await refusal_reading(setup, patient(PERSON), read)
    assert (unaudited.code, unaudited.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
    )
    assert read.started == [frozenset()]
    assert read.cancelled


async def test_a_consent_outage_is_unavailable(setup: Setup) -> None:
    await setup.hosts["consent"].stop(0)
    refused = await refusal(setup, CLINICIAN)
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAVAILABLE, "CONSENT_UNAVAILABLE")
    assert await setup.events(PERSON) == []


async def test_an_admission_opens_only_its_persons_payloads_and_facts(setup: Setup) -> None:
    admission = await admit(setup, patient(PERSON))
    mine = await setup.sealer.seal(b'{"resourceType":"Basic"}', payload_aad(PERSON, "R1"))
    assert await admission.open_payload("R1", mine) == b'{"resourceType":"Basic"}'
    theirs = await setup.sealer.seal(b"{}", payload_aad(OTHER_PERSON, "R1"))
    with pytest.raises(ServiceError) as tampered:
        await admission.open_payload("R1", theirs)
    assert (tampered.value.code, tampered.value.reason) == (
        grpc.StatusCode.DATA_LOSS,
        "PAYLOAD_TAMPERED",
    )

    fact = Fact(
        ALLERGY, "", "", "Penicillin", "high", "active", None, "h", record_name(PERSON, "R2")
    )
    sealed_fact = await setup.sealer.seal(encode_fact(fact), fact_aad(PERSON, "R2"))
    assert await admission.open_fact("R2", sealed_fact, ALLERGY) == fact
    garbled = await setup.sealer.seal(b"not json", fact_aad(PERSON, "R3"))
    with pytest.raises(ServiceError) as unreadable:
        await admission.open_fact("R3", garbled, ALLERGY)
    assert (unreadable.value.code, unreadable.value.reason) == (
        grpc.StatusCode.DATA_LOSS,
        "FACT_UNREADABLE",
    )


async def test_an_emergency_admission_breaks_the_glass_as_the_caller(setup: Setup) -> None:
    read = ReadProbe()
    with pytest.raises(ServiceError) as anonymous:
        await setup.gate.admit_emergency(
            EMERGENCY, PERSON, "unconscious after a road accident", read
        )
    assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert read.started == []  # no session, no read

    inbound_token.set(setup.token(EMERGENCY))  # what the server's principal interceptor sets
    admission, rows = await setup.gate.admit_emergency(
        EMERGENCY, PERSON, "unconscious after a road accident", read
    )
    assert (rows, read.started) == ("rows", [frozenset()])
    assert admission.basis == "BREAK_GLASS"
    assert admission.authority_name.startswith(f"persons/{PERSON}/breakGlass/")
    (event,) = await setup.events(PERSON)
    assert (event.action, event.basis) == (audit_pb2.ACTION_READ_EMERGENCY, "BREAK_GLASS")
    assert event.flagged_for_review
    assert admission.authority_name in event.resource_names
    # The session now covers this actor's ordinary reads too, through consent.
    later = await admit(setup, EMERGENCY)
    assert (later.basis, later.authority_name) == ("BREAK_GLASS", admission.authority_name)


MERGED_PERSON = "e6" * 32


async def test_persons_merged_in_are_read_under_the_persons_consent_and_each_audited(
    setup: Setup,
) -> None:
    """ADR 33: a history follows merges; the merged person's trail shows the read."""
    looked_up: list[str] = []

    async def merged_persons() -> list[str]:
        looked_up.append("asked")
        return [MERGED_PERSON]

    read = ReadProbe()
    refused = await refusal_reading(setup, CLINICIAN, read)
    assert refused.reason == "NO_GRANT" and read.started == []

    await setup.grant(PERSON, [OBSERVATION])  # a grant on the survivor, none on the merged
    admission, rows = await setup.gate.admit_reading(
        CLINICIAN,
        PERSON,
        read,
        action=audit_pb2.ACTION_READ_HISTORY,
        categories=(OBSERVATION,),
        merged_persons=merged_persons,
    )
    assert (rows, read.persons, looked_up) == ("rows", [(PERSON, MERGED_PERSON)], ["asked"])
    assert admission.persons == {PERSON, MERGED_PERSON}
    (theirs,) = await setup.events(MERGED_PERSON)
    mine = (await setup.events(PERSON))[0]
    for event in (mine, theirs):
        assert (event.action, event.basis, event.actor.subject) == (
            audit_pb2.ACTION_READ_HISTORY,
            "GRANT",
            CLINICIAN.subject,
        )
    assert list(theirs.resource_names) == [f"persons/{MERGED_PERSON}"]
    # Their rows open under the admission, each as its own person's; nobody else's do.
    sealed = await setup.sealer.seal(b"{}", payload_aad(MERGED_PERSON, "R9"))
    assert await admission.open_payload("R9", sealed, MERGED_PERSON) == b"{}"
    stranger = await setup.sealer.seal(b"{}", payload_aad(OTHER_PERSON, "R9"))
    with pytest.raises(ServiceError) as foreign:
        await admission.open_payload("R9", stranger, OTHER_PERSON)
    assert foreign.value.reason == "ROW_OF_ANOTHER_PERSON"


async def test_a_failed_merged_persons_lookup_reads_nothing(setup: Setup) -> None:
    async def identity_down() -> list[str]:
        raise ServiceError.unavailable("identity is unavailable", reason="IDENTITY_UNAVAILABLE")

    read = ReadProbe()
    with pytest.raises(ServiceError) as failed:
        await setup.gate.admit_reading(
            patient(PERSON),
            PERSON,
            read,
            action=audit_pb2.ACTION_READ_HISTORY,
            merged_persons=identity_down,
        )
    assert (failed.value.code, failed.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "IDENTITY_UNAVAILABLE",
    )
    assert read.started == []  # no history that silently lacks the merged person's records
    assert await setup.events(PERSON) == []
