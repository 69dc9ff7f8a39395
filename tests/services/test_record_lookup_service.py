"""The record-lookup service over real gRPC, with the real identity, consent, audit and archive.

Every service runs in-process from its own ``open_service`` on a free port, all sharing one
data directory (so one local keyring). The hot store is seeded directly through
``healthbank.records.SqliteRecordStore`` with payloads sealed by a Sealer built from the same
settings, exactly as ingest writes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from engine_support import TcpProxy
from google.protobuf import timestamp_pb2
from service_support import (
    BearerAuth,
    RunningServices,
    both_backends,
    failure,
    fields,
    service_settings,
    ts,
)

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.facts import Fact, encode_fact
from healthbank.contracts.natid import make_national_id
from healthbank.contracts.principal import (
    Principal,
    PrincipalKind,
    Purpose,
    decode_token,
)
from healthbank.core.config import Settings, load_settings
from healthbank.core.ids import new_ulid
from healthbank.crypto import Sealer, build_key_provider, build_sealer
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.records import (
    PLACED_PAYLOAD_CONTENT_TYPE,
    EmergencyFact,
    MessageReceipt,
    RecordStore,
    StoredRecord,
    blob_aad,
    fact_aad,
    open_record_store,
    payload_aad,
    placed_payload_stub,
    record_name,
)
from healthbank.rpc import ErrorDetails, ServiceHost, service_client_factory
from healthbank.rpc.clients import open_channel
from services.archive.app import open_service as open_archive
from services.audit.app import open_service as open_audit
from services.consent.app import open_service as open_consent
from services.identity.app import open_service as open_identity
from services.record_lookup import exam_equivalence
from services.record_lookup.app import SERVICE, open_service

PERSON = "c3" * 32
HOSPITAL = "city-general"
OTHER_HOSPITAL = "river-clinic"
NATIONAL_ID = make_national_id("110105", date(1980, 3, 14), 123)
UNKNOWN_NATIONAL_ID = make_national_id("310101", date(1975, 7, 1), 456)

ALLERGY = common_pb2.RECORD_CATEGORY_ALLERGY
CONDITION = common_pb2.RECORD_CATEGORY_CONDITION
PROCEDURE = common_pb2.RECORD_CATEGORY_PROCEDURE
OBSERVATION = common_pb2.RECORD_CATEGORY_OBSERVATION
IMAGING = common_pb2.RECORD_CATEGORY_IMAGING
DOCUMENT = common_pb2.RECORD_CATEGORY_DOCUMENT

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"

CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL)
OTHER_CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-9", hospital_id=OTHER_HOSPITAL)
EMERGENCY = Principal(
    PrincipalKind.EMERGENCY,
    "er-doc-1",
    hospital_id="east-er",
    roles=("emergency-physician",),
    purpose=Purpose.EMERGENCY,
)
RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-1", purpose=Purpose.RESEARCH)
INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
TIERING = Principal(PrincipalKind.SERVICE, "archive-tiering", purpose=Purpose.OPERATIONS)


def patient(person_token: str) -> Principal:
    return Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)


@dataclass
class Seeder:
    """Writes records into the shared hot store the way ingest does."""

    store: RecordStore
    sealer: Sealer

    async def record(
        self,
        person_token: str,
        category: int,
        code: tuple[str, str],
        effective: datetime,
        *,
        fact: dict[str, str] | None = None,
        blob_name: str = "",
        payload: bytes = b"",
        hospital: str = "hospital-a",
    ) -> StoredRecord:
        record_id = new_ulid(effective)
        payload = (
            payload
            or json.dumps(
                {"resourceType": "Basic", "id": record_id, "code": {"text": code[1]}}
            ).encode()
        )
        stored = StoredRecord(
            record_id=record_id,
            person_token=person_token,
            source_hospital=hospital,
            source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
            message_id=f"msg-{record_id}",
            source_version="1",
            content_hash=hashlib.sha256(payload).hexdigest(),
            category=category,
            code_system=code[0],
            code=code[1],
            code_display="",
            effective_time=effective,
            status="active",
            sealed_payload=await self.sealer.seal(payload, payload_aad(person_token, record_id)),
            blob_name=blob_name,
        )
        facts = []
        if fact is not None:
            document = Fact(
                category=category,
                system=code[0],
                code=code[1],
                display=fact.get("display", ""),
                severity=fact.get("severity", ""),
                status=fact.get("status", "active"),
                effective_time=effective,
                source_hospital="hospital-a",
                record_name=record_name(person_token, record_id),
            )
            sealed = await self.sealer.seal(
                encode_fact(document), fact_aad(person_token, record_id)
            )
            facts.append(EmergencyFact(person_token, record_id, category, sealed))
        receipt = MessageReceipt(
            hospital, stored.message_id, stored.content_hash, person_token, (record_id,)
        )
        await self.store.put_message(receipt, [stored], facts)
        return stored


class RecordingRelay(grpc.GenericRpcHandler):
    """A real gRPC server in front of ``target``: forwards server-streaming calls unchanged
    and keeps the metadata each arrived with, i.e. what a service really sends on the wire."""

    FORWARDED = ("authorization", "x-request-id")

    def __init__(self, target: str) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._channel = open_channel(target)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((self,))

    async def start(self) -> str:
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        await self._server.stop(0)
        await self._channel.close()

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method

        async def relay(request: bytes, context: Any) -> AsyncIterator[bytes]:
            metadata = {key: str(value) for key, value in context.invocation_metadata()}
            self.calls.append((method, metadata))
            forwarded = tuple((key, metadata[key]) for key in self.FORWARDED if key in metadata)
            async for item in self._channel.unary_stream(method)(
                request, metadata=forwarded, timeout=context.time_remaining()
            ):
                yield item

        return grpc.unary_stream_rpc_method_handler(relay)


@dataclass
class Stack(BearerAuth):
    """Record-lookup and the services it calls, running, with stubs to call them."""

    settings: Settings
    hosts: dict[str, ServiceHost]
    addresses: dict[str, str]
    lookup: record_lookup_pb2_grpc.RecordLookupServiceAsyncStub
    consent: consent_pb2_grpc.ConsentServiceAsyncStub
    audit: audit_pb2_grpc.AuditServiceAsyncStub
    identity: identity_pb2_grpc.IdentityServiceAsyncStub
    archive: archive_pb2_grpc.ArchiveServiceAsyncStub
    seed: Seeder

    async def history(
        self, principal: Principal, **request: Any
    ) -> list[record_lookup_pb2.HistoryItem]:
        request.setdefault("parent", f"persons/{PERSON}")
        call = self.lookup.GetHistory(
            record_lookup_pb2.GetHistoryRequest(**request), metadata=self.auth(principal)
        )
        return [item async for item in call]

    async def emergency(
        self,
        principal: Principal = EMERGENCY,
        national_id: str = NATIONAL_ID,
        justification: str = "unconscious after a road accident",
    ) -> record_lookup_pb2.EmergencySummary:
        response: record_lookup_pb2.EmergencySummary = await self.lookup.GetEmergencySummary(
            record_lookup_pb2.GetEmergencySummaryRequest(
                national_id=national_id, justification=justification
            ),
            metadata=self.auth(principal),
        )
        return response

    async def grant(self, person_token: str, hospital: str = HOSPITAL, **grant: Any) -> None:
        grant.setdefault(
            "expire_time", ts(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30))
        )
        await self.consent.CreateGrant(
            consent_pb2.CreateGrantRequest(
                parent=f"persons/{person_token}",
                grant=consent_pb2.Grant(grantee_hospital_id=hospital, **grant),
                request_id=new_ulid(),
            ),
            metadata=self.auth(patient(person_token)),
        )

    async def access_events(
        self, person_token: str, recorded_by: str = SERVICE
    ) -> list[audit_pb2.AccessEvent]:
        """The person's events ``recorded_by`` one service (default: record-lookup's reads;
        consent records grants and break-glass beside them), newest first."""
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}"),
            metadata=self.auth(patient(person_token)),
        )
        return [
            logged.event for logged in response.events if logged.event.recorded_by == recorded_by
        ]

    async def resolve(self, national_id: str = NATIONAL_ID) -> str:
        response = await self.identity.Resolve(
            identity_pb2.ResolveRequest(
                hospital_id="hospital-a", mrn="MRN-0001", national_id=national_id
            ),
            metadata=self.auth(INGEST),
        )
        return str(response.person_token)


async def open_stack(
    exits: AsyncExitStack, settings: Settings, lookup_settings: Settings | None = None
) -> Stack:
    """The stack on ``settings``; record-lookup and the seeder on ``lookup_settings`` (same
    data directory) when given, e.g. with keys from another provider."""
    lookup_settings = lookup_settings or settings
    running = RunningServices(exits)
    for name, opener in (
        ("audit", open_audit),
        ("archive", open_archive),
    ):
        await running.start(name, opener(settings))
    # Consent records every grant and break-glass in audit, started above.
    await running.start(
        "consent", open_consent(settings, clients=running.clients(settings, "consent"))
    )
    # Identity audits its national-ID lookups: it reaches the audit service started above.
    identity_clients = running.clients(settings, "identity")
    await running.start("identity", open_identity(settings, clients=identity_clients))
    clients = running.clients(settings, SERVICE)
    await running.start(SERVICE, open_service(lookup_settings, clients=clients))
    channel = running.channel
    store = await open_record_store(settings)
    exits.push_async_callback(store.close)
    sealer = build_sealer(lookup_settings, build_key_provider(lookup_settings))
    return Stack(
        settings=settings,
        hosts=running.hosts,
        addresses=running.addresses,
        lookup=record_lookup_pb2_grpc.RecordLookupServiceStub(channel(SERVICE)),
        consent=consent_pb2_grpc.ConsentServiceStub(channel("consent")),
        audit=audit_pb2_grpc.AuditServiceStub(channel("audit")),
        identity=identity_pb2_grpc.IdentityServiceStub(channel("identity")),
        archive=archive_pb2_grpc.ArchiveServiceStub(channel("archive")),
        seed=Seeder(store, sealer),
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    settings = service_settings(tmp_path)
    async with AsyncExitStack() as exits:
        yield await open_stack(exits, settings)


@pytest.fixture
async def stack_on(settings: Settings) -> AsyncIterator[Stack]:
    """The stack on the test's backend (``both_backends``: SQLite, then the real Cassandra)."""
    async with AsyncExitStack() as exits:
        yield await open_stack(exits, settings)


async def history_failure(stack: Stack, principal: Principal, **request: Any) -> ErrorDetails:
    received: list[record_lookup_pb2.HistoryItem] = []

    async def drain() -> None:
        request.setdefault("parent", f"persons/{PERSON}")
        call = stack.lookup.GetHistory(
            record_lookup_pb2.GetHistoryRequest(**request), metadata=stack.auth(principal)
        )
        async for item in call:
            received.append(item)

    details = await failure(drain())
    assert received == [], "nothing may be streamed before a refusal"
    return details


async def seed_history(stack: Stack) -> list[StoredRecord]:
    """Three records of PERSON, from 2021 to 2023, one per category."""
    return [
        await stack.seed.record(
            PERSON, ALLERGY, (SNOMED, "91936005"), datetime(2021, 5, 1, tzinfo=UTC)
        ),
        await stack.seed.record(
            PERSON, CONDITION, (ICD10, "E11.9"), datetime(2022, 2, 3, tzinfo=UTC)
        ),
        await stack.seed.record(
            PERSON, OBSERVATION, (LOINC, "1558-6"), datetime(2023, 9, 9, tzinfo=UTC)
        ),
    ]


# --- GetHistory ------------------------------------------------------------------------------


async def test_history_denied_without_grant_then_permitted_after_grant(stack: Stack) -> None:
    seeded = await seed_history(stack)

    denied = await history_failure(stack, CLINICIAN)
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert denied.reason == "NO_GRANT"

    await stack.grant(PERSON)
    items = await stack.history(CLINICIAN)
    assert [item.record.record_id for item in items] == [r.record_id for r in seeded]
    first = items[0].record
    assert first.name == record_name(PERSON, seeded[0].record_id)
    assert first.person_token == PERSON
    assert first.category == ALLERGY
    assert first.code.code == "91936005"
    assert first.tier == common_pb2.TIER_HOT
    assert first.effective_time.ToDatetime(tzinfo=UTC) == datetime(2021, 5, 1, tzinfo=UTC)
    assert first.source.format == common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
    assert json.loads(first.fhir_json)["id"] == seeded[0].record_id

    events = await stack.access_events(PERSON)  # newest first
    assert [event.action for event in events] == [
        audit_pb2.ACTION_READ_HISTORY,
        audit_pb2.ACTION_DENIED,
    ]
    read, refused = events
    assert read.basis == "GRANT"
    assert read.actor.subject == CLINICIAN.subject
    assert read.actor.kind == common_pb2.PRINCIPAL_KIND_CLINICIAN
    assert read.recorded_by == SERVICE
    assert f"persons/{PERSON}" in read.resource_names
    assert any("/grants/" in name for name in read.resource_names)
    assert refused.basis == "NO_GRANT"
    assert not read.flagged_for_review


async def test_history_is_restricted_to_granted_categories(stack: Stack) -> None:
    await seed_history(stack)
    await stack.grant(PERSON, categories=[ALLERGY, CONDITION])
    items = await stack.history(CLINICIAN)
    assert [item.record.category for item in items] == [ALLERGY, CONDITION]
    asked = await stack.history(CLINICIAN, categories=[CONDITION])
    assert [item.record.category for item in asked] == [CONDITION]
    refused = await history_failure(stack, CLINICIAN, categories=[OBSERVATION])
    assert refused.reason == "CATEGORY_NOT_GRANTED"


async def test_history_of_another_hospital_is_denied(stack: Stack) -> None:
    await seed_history(stack)
    await stack.grant(PERSON)
    refused = await history_failure(stack, OTHER_CLINICIAN)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "NO_GRANT"


async def test_patient_reads_own_history_within_an_interval(stack: Stack) -> None:
    seeded = await seed_history(stack)
    items = await stack.history(
        patient(PERSON),
        effective=common_pb2.Interval(
            start=ts(datetime(2022, 1, 1, tzinfo=UTC)), end=ts(datetime(2023, 1, 1, tzinfo=UTC))
        ),
    )
    assert [item.record.record_id for item in items] == [seeded[1].record_id]
    (event,) = await stack.access_events(PERSON)
    assert event.basis == "SELF"


async def test_patient_cannot_read_another_persons_history(stack: Stack) -> None:
    await seed_history(stack)
    other = "e5" * 32
    refused = await history_failure(stack, patient(other))
    # The authorization table refuses it before any read, with the reason the gate would give.
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_DATA_SUBJECT")
    assert other not in refused.message and PERSON not in refused.message
    assert await stack.access_events(PERSON) == []


async def test_history_merges_cold_archive_records_oldest_first(stack: Stack) -> None:
    seeded = await seed_history(stack)
    moved = await stack.archive.TierRecords(
        archive_pb2.TierRecordsRequest(cutoff=ts(datetime(2023, 1, 1, tzinfo=UTC))),
        metadata=stack.auth(TIERING),
    )
    assert moved.records_moved == 2
    newer = await stack.seed.record(
        PERSON, PROCEDURE, (SNOMED, "80146002"), datetime(2024, 1, 5, tzinfo=UTC)
    )
    items = await stack.history(patient(PERSON))
    assert [(item.record.record_id, item.record.tier) for item in items] == [
        (seeded[0].record_id, common_pb2.TIER_COLD),
        (seeded[1].record_id, common_pb2.TIER_COLD),
        (seeded[2].record_id, common_pb2.TIER_HOT),
        (newer.record_id, common_pb2.TIER_HOT),
    ]
    # Cold payloads arrive sealed and are opened for the caller like hot ones.
    assert json.loads(items[0].record.fhir_json)["id"] == seeded[0].record_id
    only_conditions = await stack.history(patient(PERSON), categories=[CONDITION])
    assert [item.record.record_id for item in only_conditions] == [seeded[1].record_id]


async def test_archive_stream_carries_this_services_credentials_and_the_request_id(
    stack: Stack,
) -> None:
    seeded = await seed_history(stack)
    await stack.archive.TierRecords(
        archive_pb2.TierRecordsRequest(cutoff=ts(datetime(2024, 1, 1, tzinfo=UTC))),
        metadata=stack.auth(TIERING),
    )
    relay = RecordingRelay(stack.addresses["archive"])
    async with AsyncExitStack() as exits:
        relayed = {**stack.addresses, "archive": await relay.start()}
        exits.push_async_callback(relay.close)
        clients = service_client_factory(stack.settings, SERVICE, addresses=relayed)
        exits.push_async_callback(clients.close)
        host = await exits.enter_async_context(open_service(stack.settings, clients=clients))
        channel = open_channel(f"127.0.0.1:{await host.start(0)}")
        exits.push_async_callback(channel.close)
        lookup = record_lookup_pb2_grpc.RecordLookupServiceStub(channel)
        call = lookup.GetHistory(
            record_lookup_pb2.GetHistoryRequest(parent=f"persons/{PERSON}"),
            metadata=(
                *stack.auth(patient(PERSON)),
                ("x-request-id", "4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e42"),
            ),
        )
        items = [item async for item in call]

    # The archive accepted the relayed credentials: every record came back from the cold tier.
    assert [(item.record.record_id, item.record.tier) for item in items] == [
        (record.record_id, common_pb2.TIER_COLD) for record in seeded
    ]
    ((method, metadata),) = relay.calls
    assert method == "/healthbank.archive.v1.ArchiveService/FetchRecords"
    assert metadata["x-request-id"] == "4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e42"
    scheme, _, token = metadata["authorization"].partition(" ")
    assert scheme == "Bearer"
    caller = decode_token(token, stack.settings.auth_secret.get_secret_value().encode())
    # This service's own token, not the patient's.
    assert (caller.kind, caller.subject) == (PrincipalKind.SERVICE, SERVICE)


async def test_history_is_refused_when_audit_cannot_record(stack: Stack) -> None:
    await seed_history(stack)
    await stack.grant(PERSON)
    await stack.hosts["audit"].stop(0)
    refused = await history_failure(stack, CLINICIAN)
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert refused.reason == "AUDIT_UNAVAILABLE"


async def test_reads_during_a_key_provider_outage_are_unavailable_and_retryable(
    engines: dict[str, str], tmp_path: Path
) -> None:
    vault = urlsplit(engines["HEALTHBANK_VAULT_ADDR"])
    assert vault.hostname is not None and vault.port is not None
    proxy = TcpProxy(vault.hostname, vault.port)  # an outage only this test sees
    env = {"HEALTHBANK_DATA_DIR": str(tmp_path), "HEALTHBANK_PORT": "0"}
    on_vault = {
        **env,
        "HEALTHBANK_KEY_PROVIDER": "vault",
        "HEALTHBANK_VAULT_ADDR": f"http://127.0.0.1:{await proxy.start()}",
        "HEALTHBANK_VAULT_TOKEN": engines["HEALTHBANK_VAULT_TOKEN"],
        # Every open asks the key provider: the outage shows at once.
        "HEALTHBANK_DATA_KEY_CACHE_SECONDS": "0",
    }
    async with AsyncExitStack() as exits:
        exits.push_async_callback(proxy.cut)
        stack = await open_stack(exits, load_settings(env), load_settings(on_vault))
        await seed_history(stack)
        assert len(await stack.history(patient(PERSON))) == 3

        await proxy.cut()
        refused = await history_failure(stack, patient(PERSON))
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "KEY_PROVIDER_UNAVAILABLE",
        )
        assert refused.retry_delay is not None and refused.retry_delay > 0

        await proxy.start()
        assert len(await stack.history(patient(PERSON))) == 3


async def test_history_needs_credentials_and_a_clinical_reader(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        call = stack.lookup.GetHistory(
            record_lookup_pb2.GetHistoryRequest(parent=f"persons/{PERSON}")
        )
        [item async for item in call]
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = await history_failure(stack, RESEARCHER)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("request_fields", "violations"),
    [
        ({"parent": ""}, ["parent"]),
        ({"parent": "patients/" + PERSON}, ["parent"]),
        ({"parent": "persons/not-a-token"}, ["parent"]),
        ({"categories": [0, 99]}, ["categories[0]", "categories[1]"]),
        (
            {
                "effective": common_pb2.Interval(
                    start=ts(datetime(2024, 1, 1, tzinfo=UTC)),
                    end=ts(datetime(2023, 1, 1, tzinfo=UTC)),
                )
            },
            ["effective.end"],
        ),
        (
            {
                "effective": common_pb2.Interval(
                    start=timestamp_pb2.Timestamp(seconds=10**12),
                    end=timestamp_pb2.Timestamp(nanos=-1),
                )
            },
            ["effective.start", "effective.end"],
        ),
        (
            {"parent": "persons/x", "categories": [42]},
            ["parent", "categories[0]"],
        ),
    ],
)
async def test_malformed_history_requests_are_invalid(
    stack: Stack, request_fields: dict[str, Any], violations: list[str]
) -> None:
    details = await history_failure(stack, CLINICIAN, **request_fields)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == violations


# --- GetEmergencySummary -------------------------------------------------------------------


async def seed_penicillin_allergy(stack: Stack, person: str, when: datetime) -> StoredRecord:
    """A penicillin allergy of high criticality, with its emergency fact."""
    return await stack.seed.record(
        person,
        ALLERGY,
        (SNOMED, "764146007"),
        when,
        fact={"display": "Penicillin", "severity": "high"},
    )


async def seed_appendectomy(stack: Stack, person: str) -> StoredRecord:
    """A completed appendectomy of 2015, with its emergency fact."""
    return await stack.seed.record(
        person,
        PROCEDURE,
        (SNOMED, "80146002"),
        datetime(2015, 3, 1, tzinfo=UTC),
        fact={"status": "completed"},
    )


async def test_emergency_summary_is_red_with_a_high_criticality_allergy(stack: Stack) -> None:
    person = await stack.resolve()
    penicillin = await seed_penicillin_allergy(stack, person, datetime(2019, 5, 2, 10, tzinfo=UTC))
    await seed_appendectomy(stack, person)
    await stack.seed.record(
        person,
        CONDITION,
        (ICD10, "J45"),
        datetime(2010, 1, 1, tzinfo=UTC),
        fact={"status": "resolved"},
    )

    summary = await stack.emergency()
    assert summary.person_token == person
    assert summary.light == record_lookup_pb2.LIGHT_RED
    assert summary.light_reason == "1 allergy, one of high criticality."
    assert [fact.record_name for fact in summary.allergies] == [penicillin.name]
    allergy = summary.allergies[0]
    assert allergy.severity == "high"
    assert allergy.code.display == "Penicillin"
    assert allergy.category == ALLERGY
    assert allergy.effective_time.ToDatetime(tzinfo=UTC) == datetime(2019, 5, 2, 10, tzinfo=UTC)
    assert [fact.code.code for fact in summary.surgeries] == ["80146002"]
    assert list(summary.conditions) == []  # resolved: not shown
    assert summary.break_glass_name.startswith(f"persons/{person}/breakGlass/")
    assert summary.HasField("generate_time")

    # The emergency read, and identity's audited national-ID lookup before it.
    (event,) = await stack.access_events(person)
    (lookup,) = await stack.access_events(person, "identity")
    assert lookup.action == audit_pb2.ACTION_LOOKUP_NATIONAL_ID
    assert lookup.recorded_by == "identity"
    assert event.action == audit_pb2.ACTION_READ_EMERGENCY
    assert event.basis == "BREAK_GLASS"
    assert event.flagged_for_review
    assert event.actor.subject == EMERGENCY.subject
    assert event.actor.kind == common_pb2.PRINCIPAL_KIND_EMERGENCY
    assert event.recorded_by == SERVICE
    assert summary.break_glass_name in event.resource_names


async def test_emergency_summary_over_value_sets_snomed_mi_anticoagulant_no_social_finding(
    stack: Stack,
) -> None:
    person = await stack.resolve()
    nstemi = await stack.seed.record(
        person, CONDITION, (SNOMED, "401314000"), datetime(2024, 2, 1, tzinfo=UTC), fact={}
    )
    await stack.seed.record(  # "Has a criminal record (finding)": not a condition
        person, CONDITION, (SNOMED, "266948004"), datetime(2024, 1, 1, tzinfo=UTC), fact={}
    )
    await stack.seed.record(  # "Depression screening": not a surgery
        person,
        PROCEDURE,
        (SNOMED, "171207006"),
        datetime(2024, 1, 2, tzinfo=UTC),
        fact={"status": "completed"},
    )
    warfarin = await stack.seed.record(
        person,
        common_pb2.RECORD_CATEGORY_MEDICATION,
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "855332"),
        datetime(2024, 2, 2, tzinfo=UTC),
        fact={},
    )
    summary = await stack.emergency()
    assert summary.light == record_lookup_pb2.LIGHT_RED
    assert [fact.record_name for fact in summary.conditions] == [nstemi.name]
    assert list(summary.surgeries) == []
    assert [fact.record_name for fact in summary.medications] == [warfarin.name]
    assert list(summary.devices) == []


async def test_every_emergency_read_is_audited_even_when_cached(stack: Stack) -> None:
    person = await stack.resolve()
    await stack.seed.record(
        person, CONDITION, (ICD10, "G40.9"), datetime(2018, 1, 1, tzinfo=UTC), fact={}
    )
    first = await stack.emergency()
    second = await stack.emergency()
    assert first.light == second.light == record_lookup_pb2.LIGHT_RED
    # The summary came from the cache (same computation time), the audit leaf did not.
    assert first.generate_time == second.generate_time
    assert second.audit_leaf_index > first.audit_leaf_index
    emergency_reads = await stack.access_events(person)
    assert [event.action for event in emergency_reads] == [audit_pb2.ACTION_READ_EMERGENCY] * 2
    assert all(event.flagged_for_review for event in emergency_reads)
    # Each read also looked the card's national ID up at identity, which audits it too.
    lookups = await stack.access_events(person, "identity")
    assert [event.action for event in lookups] == [audit_pb2.ACTION_LOOKUP_NATIONAL_ID] * 2


async def test_emergency_summary_of_a_person_without_facts_is_green(stack: Stack) -> None:
    await stack.resolve()
    summary = await stack.emergency()
    assert summary.light == record_lookup_pb2.LIGHT_GREEN
    assert summary.light_reason == "No allergies, procedures or active conditions on record."


PRIVACY_OFFICER = Principal(PrincipalKind.PRIVACY_OFFICER, "po-1")


def clinical_content(summary: record_lookup_pb2.EmergencySummary) -> bytes:
    """What a summary says of the patient: all but this read's audit leaf, break-glass
    session and time, deterministically serialized."""
    content = record_lookup_pb2.EmergencySummary()
    content.CopyFrom(summary)
    for per_read in ("audit_leaf_index", "break_glass_name", "generate_time"):
        content.ClearField(per_read)
    return content.SerializeToString(deterministic=True)


@both_backends
async def test_an_emergency_summary_follows_a_merge_and_its_undoing(stack_on: Stack) -> None:
    """ADR 33: the allergy filed under a duplicate registration (an unconscious "unknown")
    shows in the summary once that person is merged in, and no longer once unmerged: the
    summary is then what it was before the merge, in full."""
    stack = stack_on
    person = await stack.resolve()
    await seed_appendectomy(stack, person)
    unknown = await stack.identity.Resolve(
        identity_pb2.ResolveRequest(hospital_id="hospital-a", mrn="UNKNOWN-7"),
        metadata=stack.auth(INGEST),
    )
    duplicate = unknown.person_token
    penicillin = await seed_penicillin_allergy(
        stack, duplicate, datetime(2026, 11, 30, 3, tzinfo=UTC)
    )
    before = await stack.emergency()  # now cached
    assert before.light == record_lookup_pb2.LIGHT_YELLOW  # a surgery
    assert len(before.surgeries) == 1 and not before.allergies

    merged = await stack.identity.MergePersons(
        identity_pb2.MergePersonsRequest(
            survivor=f"persons/{person}", absorbed=f"persons/{duplicate}"
        ),
        metadata=stack.auth(PRIVACY_OFFICER),
    )
    summary = await stack.emergency()
    assert summary.person_token == person
    assert summary.light == record_lookup_pb2.LIGHT_RED
    assert [fact.record_name for fact in summary.allergies] == [penicillin.name]
    assert clinical_content(await stack.emergency()) == clinical_content(summary)  # cached

    await stack.identity.UnmergePersons(
        identity_pb2.UnmergePersonsRequest(merge_id=merged.merge_id),
        metadata=stack.auth(PRIVACY_OFFICER),
    )
    after = await stack.emergency()
    assert clinical_content(after) == clinical_content(before)
    assert after.audit_leaf_index > summary.audit_leaf_index  # a read of its own


async def merged_pair(stack: Stack) -> tuple[str, str]:
    """A person known by national ID and a duplicate registration (no ID) merged into them."""
    person = await stack.resolve()
    unknown = await stack.identity.Resolve(
        identity_pb2.ResolveRequest(hospital_id="hospital-a", mrn="UNKNOWN-7"),
        metadata=stack.auth(INGEST),
    )
    await merge_persons(stack, person, unknown.person_token)
    return person, str(unknown.person_token)


async def merge_persons(stack: Stack, survivor: str, absorbed: str) -> str:
    """The merge's id."""
    merged = await stack.identity.MergePersons(
        identity_pb2.MergePersonsRequest(
            survivor=f"persons/{survivor}", absorbed=f"persons/{absorbed}"
        ),
        metadata=stack.auth(PRIVACY_OFFICER),
    )
    return str(merged.merge_id)


@both_backends
async def test_a_history_follows_a_merge_and_its_undoing_hot_and_cold(stack_on: Stack) -> None:
    """ADR 33: the survivor's history holds the records filed under the person merged into
    it, from both tiers, read under the survivor's grant; after the unmerge it does not."""
    stack = stack_on
    person = await stack.resolve()
    unknown = await stack.identity.Resolve(
        identity_pb2.ResolveRequest(hospital_id="hospital-a", mrn="UNKNOWN-7"),
        metadata=stack.auth(INGEST),
    )
    duplicate = str(unknown.person_token)
    old_condition = await stack.seed.record(
        duplicate, CONDITION, (ICD10, "E11.9"), datetime(2019, 6, 1, tzinfo=UTC)
    )
    own = await stack.seed.record(
        person, OBSERVATION, (LOINC, "1558-6"), datetime(2023, 9, 9, tzinfo=UTC)
    )
    allergy = await stack.seed.record(
        duplicate, ALLERGY, (SNOMED, "764146007"), datetime(2026, 11, 30, tzinfo=UTC)
    )
    moved = await stack.archive.TierRecords(
        archive_pb2.TierRecordsRequest(cutoff=ts(datetime(2020, 1, 1, tzinfo=UTC))),
        metadata=stack.auth(TIERING),
    )
    assert moved.records_moved == 1  # the duplicate's 2019 condition is now cold
    await stack.grant(person)  # the survivor's grant only: the duplicate never gave one

    def listed(items: list[record_lookup_pb2.HistoryItem]) -> list[tuple[str, int]]:
        return [(item.record.name, item.record.tier) for item in items]

    alone = [(own.name, common_pb2.TIER_HOT)]
    assert listed(await stack.history(CLINICIAN, parent=f"persons/{person}")) == alone

    merge_id = await merge_persons(stack, person, duplicate)
    followed = await stack.history(CLINICIAN, parent=f"persons/{person}")
    assert listed(followed) == [
        (old_condition.name, common_pb2.TIER_COLD),
        (own.name, common_pb2.TIER_HOT),
        (allergy.name, common_pb2.TIER_HOT),
    ]
    # Each record keeps its own person's name and opens as theirs.
    assert [item.record.person_token for item in followed] == [duplicate, person, duplicate]
    assert [json.loads(item.record.fhir_json)["id"] for item in followed] == [
        old_condition.record_id,
        own.record_id,
        allergy.record_id,
    ]
    # The grant's categories still bound what is read, across both persons.
    only = await stack.history(CLINICIAN, parent=f"persons/{person}", categories=[ALLERGY])
    assert listed(only) == [(allergy.name, common_pb2.TIER_HOT)]
    assert len(await stack.history(patient(person), parent=f"persons/{person}")) == 3

    await stack.identity.UnmergePersons(
        identity_pb2.UnmergePersonsRequest(merge_id=merge_id),
        metadata=stack.auth(PRIVACY_OFFICER),
    )
    assert listed(await stack.history(CLINICIAN, parent=f"persons/{person}")) == alone
    assert len(await stack.history(patient(duplicate), parent=f"persons/{duplicate}")) == 2


async def test_the_merged_persons_access_log_shows_the_reads_made_through_the_survivor(
    stack: Stack,
) -> None:
    """What a patient sees of who read their data includes the reads of their records made
    through the person they were merged into: histories and emergency summaries."""
    person, duplicate = await merged_pair(stack)
    await stack.grant(person)
    await stack.history(CLINICIAN, parent=f"persons/{person}")
    summary = await stack.emergency()
    assert summary.person_token == person

    emergency_read, history_read = await stack.access_events(duplicate)  # newest first
    assert (history_read.action, history_read.basis) == (audit_pb2.ACTION_READ_HISTORY, "GRANT")
    assert history_read.actor.subject == CLINICIAN.subject
    assert (emergency_read.action, emergency_read.basis) == (
        audit_pb2.ACTION_READ_EMERGENCY,
        "BREAK_GLASS",
    )
    assert emergency_read.actor.subject == EMERGENCY.subject
    assert emergency_read.flagged_for_review
    for event in (emergency_read, history_read):
        # Each names only its own person: an event never names another's resources.
        assert list(event.resource_names) == [f"persons/{duplicate}"]
    # The survivor's own trail holds the same two reads.
    assert [event.action for event in await stack.access_events(person)] == [
        audit_pb2.ACTION_READ_EMERGENCY,
        audit_pb2.ACTION_READ_HISTORY,
    ]


async def test_a_merged_persons_history_is_read_under_their_own_consent(stack: Stack) -> None:
    """Asked about by their own token, a merged person's history is theirs alone, decided
    by their own grants (the survivor's do not reach back)."""
    person, duplicate = await merged_pair(stack)
    record = await stack.seed.record(
        duplicate, OBSERVATION, (LOINC, "1558-6"), datetime(2023, 1, 1, tzinfo=UTC)
    )
    await stack.grant(person)
    refused = await history_failure(stack, CLINICIAN, parent=f"persons/{duplicate}")
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_GRANT")
    mine = await stack.history(patient(duplicate), parent=f"persons/{duplicate}")
    assert [item.record.name for item in mine] == [record.name]


async def test_break_glass_lets_the_emergency_doctor_read_history(stack: Stack) -> None:
    person = await stack.resolve()
    record = await stack.seed.record(
        person, OBSERVATION, (LOINC, "1558-6"), datetime(2023, 1, 1, tzinfo=UTC)
    )
    refused = await history_failure(stack, EMERGENCY, parent=f"persons/{person}")
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    await stack.emergency()
    items = await stack.history(EMERGENCY, parent=f"persons/{person}")
    assert [item.record.record_id for item in items] == [record.record_id]
    read = (await stack.access_events(person))[0]
    assert read.action == audit_pb2.ACTION_READ_HISTORY
    assert read.basis == "BREAK_GLASS"
    assert read.flagged_for_review


async def test_a_read_after_a_direct_break_glass_is_flagged(stack: Stack) -> None:
    """BreakGlass called on consent directly, not through the emergency summary: consent
    records the session, and the reads under it are flagged for review like any other."""
    person = await stack.resolve()
    await stack.seed.record(
        person, OBSERVATION, (LOINC, "1558-6"), datetime(2023, 1, 1, tzinfo=UTC)
    )
    session = await stack.consent.BreakGlass(
        consent_pb2.BreakGlassRequest(person_token=person, justification="collapsed in the lobby"),
        metadata=stack.auth(EMERGENCY),
    )
    await stack.history(EMERGENCY, parent=f"persons/{person}")
    (opened,) = await stack.access_events(person, recorded_by="consent")
    assert opened.action == audit_pb2.ACTION_BREAK_GLASS
    assert opened.flagged_for_review
    assert opened.actor.subject == EMERGENCY.subject
    (read,) = await stack.access_events(person)
    assert (read.action, read.basis, read.flagged_for_review) == (
        audit_pb2.ACTION_READ_HISTORY,
        "BREAK_GLASS",
        True,
    )
    assert session.name in read.resource_names


async def test_emergency_summary_of_an_unknown_national_id_is_not_found(stack: Stack) -> None:
    details = await failure(stack.emergency(national_id=UNKNOWN_NATIONAL_ID))
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert UNKNOWN_NATIONAL_ID not in details.message


async def test_emergency_summary_needs_an_emergency_principal(stack: Stack) -> None:
    await stack.resolve()
    details = await failure(stack.emergency(principal=CLINICIAN))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED


async def test_emergency_summary_is_refused_when_audit_cannot_record(stack: Stack) -> None:
    await stack.resolve()
    await stack.hosts["audit"].stop(0)
    details = await failure(stack.emergency())
    assert details.code == grpc.StatusCode.UNAVAILABLE
    # Refused at the first read: identity does not answer a lookup it cannot audit.
    assert details.reason == "IDENTITY_UNAVAILABLE"


async def test_a_cached_emergency_summary_is_refused_when_its_read_cannot_be_audited(
    stack: Stack,
) -> None:
    person = await stack.resolve()
    await stack.seed.record(
        person, ALLERGY, (SNOMED, "91936005"), datetime(2020, 1, 1, tzinfo=UTC), fact={}
    )
    audit_host, audit_port = stack.addresses["audit"].rsplit(":", 1)
    # Only this record-lookup reaches audit through the proxy: identity and consent still
    # record their part, so the refusal is record-lookup's own "no audit, no read", taken
    # while the cached facts are fetched beside the append (ADR 23).
    proxy = TcpProxy(audit_host, int(audit_port))
    async with AsyncExitStack() as exits:
        proxied = {**stack.addresses, "audit": f"127.0.0.1:{await proxy.start()}"}
        exits.push_async_callback(proxy.cut)
        clients = service_client_factory(stack.settings, SERVICE, addresses=proxied)
        exits.push_async_callback(clients.close)
        host = await exits.enter_async_context(open_service(stack.settings, clients=clients))
        channel = open_channel(f"127.0.0.1:{await host.start(0)}")
        exits.push_async_callback(channel.close)
        lookup = record_lookup_pb2_grpc.RecordLookupServiceStub(channel)
        request = record_lookup_pb2.GetEmergencySummaryRequest(
            national_id=NATIONAL_ID, justification="unconscious after a road accident"
        )
        warm = await lookup.GetEmergencySummary(request, metadata=stack.auth(EMERGENCY))
        assert warm.light == record_lookup_pb2.LIGHT_RED  # the summary is now cached
        await proxy.cut()
        details = await failure(lookup.GetEmergencySummary(request, metadata=stack.auth(EMERGENCY)))
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE")
    # Identity and consent recorded the refused attempt; record-lookup only the first read.
    assert len(await stack.access_events(person)) == 1
    assert len(await stack.access_events(person, "identity")) == 2


@pytest.mark.parametrize(
    ("national_id", "justification", "violations"),
    [
        ("", "", ["national_id", "justification"]),
        (
            NATIONAL_ID[:-1] + ("0" if NATIONAL_ID[-1] != "0" else "1"),
            "road accident",
            ["national_id"],
        ),
        ("12345", "road accident, unconscious", ["national_id"]),
        (NATIONAL_ID, "too short", ["justification"]),
        (NATIONAL_ID, "          ", ["justification"]),
    ],
)
async def test_malformed_emergency_requests_are_invalid(
    stack: Stack, national_id: str, justification: str, violations: list[str]
) -> None:
    details = await failure(stack.emergency(national_id=national_id, justification=justification))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == violations
    # Neither the message nor a violation may echo the number.
    text = details.message + " ".join(description for _, description in details.field_violations)
    if len(national_id) > 5:
        assert national_id not in text


# --- GetImage --------------------------------------------------------------------------------

# Over two 1 MiB chunks, so the stream is reassembled from several messages.
DICOM_FILE = b"DICM" + bytes(range(256)) * 10_000
INGEST_ARCHIVE = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)


async def seed_image(stack: Stack, person_token: str = PERSON) -> StoredRecord:
    """A CT as ingest stores it: the DICOM file sealed in the archive, a record naming it."""
    sealed = await stack.seed.sealer.seal(DICOM_FILE, blob_aad(person_token))
    blob = await stack.archive.PutBlob(
        archive_pb2.PutBlobRequest(
            person_token=person_token, content_type="application/dicom", content=sealed
        ),
        metadata=stack.auth(INGEST_ARCHIVE),
    )
    return await stack.seed.record(
        person_token,
        IMAGING,
        ("http://dicom.nema.org/resources/ontology/DCM", "CT"),
        datetime(2024, 3, 1, tzinfo=UTC),
        blob_name=blob.name,
    )


async def seed_placed_document(stack: Stack, letter: bytes) -> StoredRecord:
    """A document too large for a record, as ingest stores it (ADR 22): the whole resource
    sealed in the archive, the record keeping a stub that names the blob."""
    sealed = await stack.seed.sealer.seal(letter, blob_aad(PERSON))
    blob = await stack.archive.PutBlob(
        archive_pb2.PutBlobRequest(
            person_token=PERSON, content_type=PLACED_PAYLOAD_CONTENT_TYPE, content=sealed
        ),
        metadata=stack.auth(INGEST_ARCHIVE),
    )
    return await stack.seed.record(
        PERSON,
        DOCUMENT,
        (LOINC, "34133-9"),
        datetime(2024, 5, 1, tzinfo=UTC),
        blob_name=blob.name,
        payload=placed_payload_stub(json.loads(letter)),
    )


async def test_history_returns_a_placed_resource_whole_from_its_blob(stack: Stack) -> None:
    letter = json.dumps(
        {"resourceType": "DocumentReference", "id": "letter-1", "content": ["x" * 2_000_000]}
    ).encode()
    placed = await seed_placed_document(stack, letter)
    small = await stack.seed.record(
        PERSON, OBSERVATION, (LOINC, "1558-6"), datetime(2024, 6, 1, tzinfo=UTC)
    )
    await stack.grant(PERSON)
    items = await stack.history(CLINICIAN)
    assert [item.record.name for item in items] == [placed.name, small.name]
    assert items[0].record.fhir_json == letter
    assert items[0].record.blob_name == placed.blob_name
    assert json.loads(items[1].record.fhir_json)["resourceType"] == "Basic"
    # The consent gate is the record's own category, not imaging.
    await stack.grant(PERSON, hospital=OTHER_HOSPITAL, categories=[DOCUMENT])
    assert [item.record.fhir_json for item in await stack.history(OTHER_CLINICIAN)] == [letter]


async def image_of(
    stack: Stack, principal: Principal, name: str
) -> list[record_lookup_pb2.ImageChunk]:
    call = stack.lookup.GetImage(
        record_lookup_pb2.GetImageRequest(name=name), metadata=stack.auth(principal)
    )
    return [chunk async for chunk in call]


async def test_a_clinician_with_consent_streams_the_image_a_history_item_links_to(
    stack: Stack,
) -> None:
    ct = await seed_image(stack)
    denied = await failure(image_of(stack, CLINICIAN, ct.name))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_GRANT")

    await stack.grant(PERSON)
    (item,) = await stack.history(CLINICIAN)
    assert item.record.blob_name == ct.blob_name
    chunks = await image_of(stack, CLINICIAN, item.record.name)
    assert len(chunks) == 3
    assert b"".join(chunk.chunk for chunk in chunks) == DICOM_FILE
    first = chunks[0]
    assert (first.record_name, first.blob_name, first.content_type, first.size_bytes) == (
        ct.name,
        ct.blob_name,
        "application/dicom",
        len(DICOM_FILE),
    )
    assert not chunks[1].record_name and not chunks[1].content_type

    read = (await stack.access_events(PERSON))[0]
    assert read.action == audit_pb2.ACTION_READ_IMAGE
    assert (read.actor.kind, read.actor.subject) == (
        common_pb2.PRINCIPAL_KIND_CLINICIAN,
        CLINICIAN.subject,
    )
    assert read.basis == "GRANT"
    assert ct.name in read.resource_names
    assert not read.flagged_for_review


async def test_an_image_needs_a_grant_covering_imaging(stack: Stack) -> None:
    ct = await seed_image(stack)
    await stack.grant(PERSON, categories=[ALLERGY])
    denied = await failure(image_of(stack, CLINICIAN, ct.name))
    assert (denied.code, denied.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CATEGORY_NOT_GRANTED",
    )
    (refusal,) = await stack.access_events(PERSON)
    assert refusal.action == audit_pb2.ACTION_DENIED


async def test_the_patient_streams_their_own_image_and_no_one_elses(stack: Stack) -> None:
    ct = await seed_image(stack)
    chunks = await image_of(stack, patient(PERSON), ct.name)
    assert b"".join(chunk.chunk for chunk in chunks) == DICOM_FILE
    assert (await stack.access_events(PERSON))[0].basis == "SELF"
    other = await failure(image_of(stack, patient("d4" * 32), ct.name))
    assert (other.code, other.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_DATA_SUBJECT")


async def test_an_emergency_read_of_an_image_is_flagged(stack: Stack) -> None:
    person = await stack.resolve()
    ct = await seed_image(stack, person)
    await stack.emergency()
    chunks = await image_of(stack, EMERGENCY, ct.name)
    assert b"".join(chunk.chunk for chunk in chunks) == DICOM_FILE
    read = (await stack.access_events(person))[0]
    assert (read.action, read.basis, read.flagged_for_review) == (
        audit_pb2.ACTION_READ_IMAGE,
        "BREAK_GLASS",
        True,
    )


async def test_a_record_without_an_image_is_not_found(stack: Stack) -> None:
    (allergy, *_) = await seed_history(stack)
    missing = await failure(image_of(stack, patient(PERSON), allergy.name))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    unknown = await failure(image_of(stack, patient(PERSON), record_name(PERSON, new_ulid())))
    assert unknown.code == grpc.StatusCode.NOT_FOUND
    # The attempt was admitted, so it is on record.
    assert [e.action for e in await stack.access_events(PERSON)] == [
        audit_pb2.ACTION_READ_IMAGE,
        audit_pb2.ACTION_READ_IMAGE,
    ]


async def test_image_requests_are_validated_and_need_a_clinical_reader(stack: Stack) -> None:
    for name in ("", "persons/x/records/y", f"persons/{PERSON}"):
        details = await failure(image_of(stack, CLINICIAN, name))
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fields(details) == ["name"]
    ct = await seed_image(stack)
    for principal in (RESEARCHER, INGEST):
        refused = await failure(image_of(stack, principal, ct.name))
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    unauthenticated = await failure(
        _drain(stack.lookup.GetImage(record_lookup_pb2.GetImageRequest(name=ct.name)))
    )
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED


# --- GetHistoryPages -------------------------------------------------------------------------


async def test_history_pages_carry_the_same_history_in_pages_of_a_hundred(stack: Stack) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for day in range(230):
        await stack.seed.record(PERSON, OBSERVATION, (LOINC, "1558-6"), start + timedelta(days=day))
    await stack.grant(PERSON)
    call = stack.lookup.GetHistoryPages(
        record_lookup_pb2.GetHistoryRequest(parent=f"persons/{PERSON}"),
        metadata=stack.auth(CLINICIAN),
    )
    pages = [page async for page in call]
    assert [len(page.items) for page in pages] == [100, 100, 30]
    paged = [item.record.record_id for page in pages for item in page.items]
    assert paged == [item.record.record_id for item in await stack.history(CLINICIAN)]
    # Each read passed the consent gate and was audited, like GetHistory.
    events = await stack.access_events(PERSON)
    assert [event.action for event in events[:2]] == [audit_pb2.ACTION_READ_HISTORY] * 2


async def test_history_pages_are_refused_like_history_without_a_grant(stack: Stack) -> None:
    await seed_history(stack)
    call = stack.lookup.GetHistoryPages(
        record_lookup_pb2.GetHistoryRequest(parent=f"persons/{PERSON}"),
        metadata=stack.auth(CLINICIAN),
    )
    details = await failure(_drain(call))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "NO_GRANT"


async def _drain(call: Any) -> list[Any]:
    return [page async for page in call]


# --- gRPC calls per request (a budget that does not depend on the machine) ------------------
#
# Counted from every service's access log line ("rpc method=... request_id=..."): the request
# id of the inbound call travels with every call it causes, so the lines carrying it are the
# request's calls across all services. A change that makes more calls fails here; one that
# makes fewer should lower the budget (README, "Speed").

_ACCESS_LINE = re.compile(r"^rpc method=(\S+) code=(\S+) duration_ms=\S+ request_id=(\S+)$")
_LOOKUP = "healthbank.record_lookup.v1.RecordLookupService/"
_APPEND = "healthbank.audit.v1.AuditService/AppendEvent"
_APPEND_BATCH = f"{_APPEND}s"

# The summary, identity's national-ID lookup, consent's break-glass session, and three audit
# appends: identity's lookup, consent's session and record-lookup's READ_EMERGENCY read
# (three services, so three calls even through each one's group commit). Measured
# 2026-12-01, the same with a cached summary.
EMERGENCY_CALLS = Counter(
    {
        f"{_LOOKUP}GetEmergencySummary": 1,
        "healthbank.identity.v1.IdentityService/LookupByNationalId": 1,
        "healthbank.consent.v1.ConsentService/BreakGlass": 1,
        _APPEND: 3,
    }
)
# The history, consent's decision, identity's list of the persons merged into the person
# (beside the decision, ADR 33), the read's audit append and the cold tier's fetch. Each
# merged person adds one cold fetch; their access events go in the same append.
HISTORY_CALLS = Counter(
    {
        f"{_LOOKUP}GetHistoryPages": 1,
        "healthbank.consent.v1.ConsentService/Check": 1,
        "healthbank.identity.v1.IdentityService/ListMergedPersons": 1,
        _APPEND: 1,
        "healthbank.archive.v1.ArchiveService/FetchRecords": 1,
    }
)
_FETCH_COLD = "healthbank.archive.v1.ArchiveService/FetchRecords"


def calls_of(caplog: pytest.LogCaptureFixture, request_id: str) -> Counter[str]:
    """The calls (audit's batch append counted as AppendEvent) the request made, all OK."""
    calls: Counter[str] = Counter()
    for record in caplog.records:
        line = _ACCESS_LINE.match(record.getMessage())
        if line is None or line[3] != request_id:
            continue
        assert line[2] == "OK", record.getMessage()
        calls[_APPEND if line[1] == _APPEND_BATCH else line[1]] += 1
    return calls


def within(calls: Counter[str], budget: Counter[str]) -> bool:
    return all(calls[method] <= budget[method] for method in calls)


async def test_an_emergency_summary_stays_within_its_grpc_call_budget(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    person = await stack.resolve()
    await stack.seed.record(
        person, ALLERGY, (SNOMED, "91936005"), datetime(2020, 1, 1, tzinfo=UTC), fact={}
    )
    caplog.set_level(logging.INFO, logger="healthbank.rpc.access")
    for attempt in ("computed", "cached"):
        request_id = {"computed": "ec" * 16, "cached": "ca" * 16}[attempt]
        summary = await stack.lookup.GetEmergencySummary(
            record_lookup_pb2.GetEmergencySummaryRequest(
                national_id=NATIONAL_ID, justification="unconscious after a road accident"
            ),
            metadata=(*stack.auth(EMERGENCY), ("x-request-id", request_id)),
        )
        assert summary.light == record_lookup_pb2.LIGHT_RED
        calls = calls_of(caplog, request_id)
        assert within(calls, EMERGENCY_CALLS), (attempt, calls)
        # Counted for real: the request itself and every audit append it needs were seen.
        assert calls[f"{_LOOKUP}GetEmergencySummary"] == 1, calls
        assert calls[_APPEND] == EMERGENCY_CALLS[_APPEND], calls


async def test_a_history_stays_within_its_grpc_call_budget(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    await seed_history(stack)
    await stack.grant(PERSON)
    caplog.set_level(logging.INFO, logger="healthbank.rpc.access")
    request_id = "b0" * 16
    call = stack.lookup.GetHistoryPages(
        record_lookup_pb2.GetHistoryRequest(parent=f"persons/{PERSON}"),
        metadata=(*stack.auth(CLINICIAN), ("x-request-id", request_id)),
    )
    (page,) = await _drain(call)
    assert len(page.items) == 3
    calls = calls_of(caplog, request_id)
    assert within(calls, HISTORY_CALLS), calls
    assert calls[f"{_LOOKUP}GetHistoryPages"] == 1 and calls[_APPEND] == 1, calls


async def test_a_history_through_a_merge_adds_one_cold_fetch_per_merged_person(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    person, duplicate = await merged_pair(stack)
    await stack.grant(person)
    await stack.seed.record(
        duplicate, OBSERVATION, (LOINC, "1558-6"), datetime(2023, 1, 1, tzinfo=UTC)
    )
    caplog.set_level(logging.INFO, logger="healthbank.rpc.access")
    request_id = "b1" * 16
    call = stack.lookup.GetHistoryPages(
        record_lookup_pb2.GetHistoryRequest(parent=f"persons/{person}"),
        metadata=(*stack.auth(CLINICIAN), ("x-request-id", request_id)),
    )
    (page,) = await _drain(call)
    assert len(page.items) == 1
    calls = calls_of(caplog, request_id)
    budget = HISTORY_CALLS + Counter({_FETCH_COLD: 1})
    assert within(calls, budget), calls
    # Both persons' access events left in one append.
    assert calls[_APPEND] == 1 and calls[_FETCH_COLD] == 2, calls


# -- FindRecentExams (ADR 34) ----------------------------------------------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def imaging_study(modality: str, body_part: str) -> bytes:
    """An ImagingStudy as ingest maps a DICOM file: the body part on its series."""
    series = {"uid": "1.2.3.4", "modality": {"system": DCM, "code": modality}}
    series["bodySite"] = {"display": body_part}
    return json.dumps({"resourceType": "ImagingStudy", "series": [series]}).encode()


async def seed_exam(
    stack: Stack,
    days_ago: int,
    *,
    modality: str = "",
    body_part: str = "",
    loinc: str = "",
    person_token: str = PERSON,
) -> StoredRecord:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    if loinc:
        return await stack.seed.record(
            person_token, OBSERVATION, (LOINC, loinc), when, hospital="h-west"
        )
    return await stack.seed.record(
        person_token,
        IMAGING,
        (DCM, modality),
        when,
        payload=imaging_study(modality, body_part),
        hospital="h-east",
    )


async def recent_exams(
    stack: Stack, principal: Principal = CLINICIAN, **request: Any
) -> list[record_lookup_pb2.RecentExam]:
    request.setdefault("parent", f"persons/{PERSON}")
    request.setdefault("window_days", 90)
    response = await stack.lookup.FindRecentExams(
        record_lookup_pb2.FindRecentExamsRequest(**request), metadata=stack.auth(principal)
    )
    return list(response.exams)


async def test_a_head_ct_elsewhere_12_days_ago_is_found_and_one_400_days_ago_is_not(
    stack: Stack,
) -> None:
    recent = await seed_exam(stack, 12, modality="CT", body_part="BRAIN")
    await seed_exam(stack, 400, modality="CT", body_part="HEAD")
    await seed_exam(stack, 5, modality="CT", body_part="CHEST")
    await seed_exam(stack, 5, modality="MR", body_part="HEAD")
    denied = await failure(recent_exams(stack, modality="CT", body_site="head"))
    assert denied.reason == "NO_GRANT"

    await stack.grant(PERSON)
    (found,) = await recent_exams(stack, modality="CT", body_site="head")
    assert (found.record_name, found.hospital_id, found.rule) == (
        recent.name,
        "h-east",
        "ct-head",
    )
    assert found.effective_time.ToDatetime(tzinfo=UTC) == recent.effective_time
    assert not found.is_cold
    found_long_ago = await recent_exams(stack, modality="CT", body_site="head", window_days=500)
    assert [exam.rule for exam in found_long_ago] == ["ct-head", "ct-head"]
    (event, *_) = await stack.access_events(PERSON)
    assert event.action == audit_pb2.ACTION_READ_HISTORY and event.basis == "GRANT"


@pytest.mark.parametrize("rule", exam_equivalence.IMAGING_RULES, ids=lambda rule: rule.name)
async def test_each_imaging_rule_finds_its_equivalents_and_nothing_else(
    stack: Stack, rule: exam_equivalence.ImagingRule
) -> None:
    modalities, sites = sorted(rule.modalities), sorted(rule.body_sites)
    equivalent = await seed_exam(stack, 3, modality=modalities[-1], body_part=sites[-1].upper())
    await seed_exam(stack, 3, modality="US", body_part=sites[-1])
    await seed_exam(stack, 3, modality=modalities[0], body_part="knee")
    await stack.grant(PERSON)
    found = await recent_exams(stack, modality=modalities[0], body_site=sites[0])
    assert [(exam.record_name, exam.rule) for exam in found] == [(equivalent.name, rule.name)]


@pytest.mark.parametrize("rule", exam_equivalence.LAB_RULES, ids=lambda rule: rule.name)
async def test_each_lab_rule_finds_its_equivalents_and_nothing_else(
    stack: Stack, rule: exam_equivalence.LabRule
) -> None:
    codes = sorted(rule.loinc_codes)
    equivalent = await seed_exam(stack, 20, loinc=codes[-1])
    await seed_exam(stack, 20, loinc="718-7")  # hemoglobin: another test
    await stack.grant(PERSON)
    found = await recent_exams(stack, loinc_code=codes[0])
    assert [(exam.record_name, exam.hospital_id, exam.rule) for exam in found] == [
        (equivalent.name, "h-west", rule.name)
    ]


async def test_an_equivalent_exam_moved_to_the_cold_tier_is_found_there(stack: Stack) -> None:
    tiered = await seed_exam(stack, 60, modality="CT", body_part="SKULL")
    moved = await stack.archive.TierRecords(
        archive_pb2.TierRecordsRequest(cutoff=ts(datetime.now(UTC) - timedelta(days=30))),
        metadata=stack.auth(TIERING),
    )
    assert moved.records_moved == 1
    (found,) = await recent_exams(stack, patient(PERSON), modality="CT", body_site="brain")
    assert (found.record_name, found.is_cold, found.rule) == (tiered.name, True, "ct-head")


@both_backends
async def test_recent_exams_follow_a_merge_and_its_undoing(stack_on: Stack) -> None:
    """ADR 33: the head CT filed under a duplicate registration is found for the survivor,
    under the survivor's grant, once merged in, and no longer once unmerged."""
    stack = stack_on
    person = await stack.resolve()
    unknown = await stack.identity.Resolve(
        identity_pb2.ResolveRequest(hospital_id="hospital-a", mrn="UNKNOWN-7"),
        metadata=stack.auth(INGEST),
    )
    duplicate = str(unknown.person_token)
    ct = await seed_exam(stack, 12, modality="CT", body_part="HEAD", person_token=duplicate)
    await stack.grant(person)  # the survivor's grant only
    parent = f"persons/{person}"
    assert await recent_exams(stack, parent=parent, modality="CT", body_site="head") == []

    merge_id = await merge_persons(stack, person, duplicate)
    (found,) = await recent_exams(stack, parent=parent, modality="CT", body_site="head")
    assert (found.record_name, found.rule, found.is_cold) == (ct.name, "ct-head", False)
    # The merged person's trail shows the read, naming only that person.
    (event,) = await stack.access_events(duplicate)
    assert event.action == audit_pb2.ACTION_READ_HISTORY
    assert list(event.resource_names) == [f"persons/{duplicate}"]

    await stack.identity.UnmergePersons(
        identity_pb2.UnmergePersonsRequest(merge_id=merge_id),
        metadata=stack.auth(PRIVACY_OFFICER),
    )
    assert await recent_exams(stack, parent=parent, modality="CT", body_site="head") == []


@both_backends
async def test_an_image_follows_a_merge_and_its_undoing(stack_on: Stack) -> None:
    """ADR 33: asked for through the survivor, the image of a record filed under the person
    merged into it streams under the survivor's grant; after the unmerge it is not found."""
    stack = stack_on
    person = await stack.resolve()
    unknown = await stack.identity.Resolve(
        identity_pb2.ResolveRequest(hospital_id="hospital-a", mrn="UNKNOWN-7"),
        metadata=stack.auth(INGEST),
    )
    duplicate = str(unknown.person_token)
    ct = await seed_image(stack, duplicate)
    await stack.grant(person)  # the survivor's grant only
    through_survivor = record_name(person, ct.record_id)
    missing = await failure(image_of(stack, CLINICIAN, through_survivor))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")

    merge_id = await merge_persons(stack, person, duplicate)
    chunks = await image_of(stack, CLINICIAN, through_survivor)
    assert b"".join(chunk.chunk for chunk in chunks) == DICOM_FILE
    # The image keeps its own record's name, as a history item does.
    assert (chunks[0].record_name, chunks[0].blob_name) == (ct.name, ct.blob_name)
    read = (await stack.access_events(person))[0]
    assert (read.action, read.basis) == (audit_pb2.ACTION_READ_IMAGE, "GRANT")
    assert through_survivor in read.resource_names
    (merged_read,) = await stack.access_events(duplicate)
    assert merged_read.action == audit_pb2.ACTION_READ_IMAGE
    assert list(merged_read.resource_names) == [f"persons/{duplicate}"]

    await stack.identity.UnmergePersons(
        identity_pb2.UnmergePersonsRequest(merge_id=merge_id),
        metadata=stack.auth(PRIVACY_OFFICER),
    )
    gone = await failure(image_of(stack, CLINICIAN, through_survivor))
    assert (gone.code, gone.reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")


async def test_recent_exam_requests_are_validated(stack: Stack) -> None:
    cases = [
        ({"modality": "CT"}, ["body_site"]),
        ({"modality": "CT", "body_site": "head", "loinc_code": "4548-4"}, ["loinc_code"]),
        ({"loinc_code": "A1C"}, ["loinc_code"]),
        ({"modality": "C T", "body_site": "head"}, ["modality"]),
        ({"loinc_code": "4548-4", "window_days": 0}, ["window_days"]),
        ({"loinc_code": "4548-4", "parent": "people/x"}, ["parent"]),
    ]
    for request, wanted in cases:
        details = await failure(recent_exams(stack, **request))
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT, request
        assert [field for field, _ in details.field_violations] == wanted, request
