"""The ingest service over real gRPC, with real identity, audit and archive services.

Every service runs in-process from its own ``open_service`` on a free port, all on one data
directory; ingest runs on each storage backend (SQLite, and the real Cassandra with a fresh
keyspace prefix per test), its dependencies on the embedded defaults. Covered: FHIR, HL7 v2
and DICOM intake; idempotent retries; message-id reuse; precise rejections; caller checks;
the bulk stream; dependency outages (identity before the commit, audit after it) and the
audit repair after a crash; engine outages (a real OpenBao key provider, and the network
path to Cassandra, cut while ingest runs); and that no name, ID number or phone number is
left in plaintext anywhere under the data directory or in the Cassandra keyspaces.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
import hvac
import pydicom
import pytest
from cassandra.cluster import Session
from engine_support import (
    CASSANDRA,
    OpenBao,
    TcpProxy,
    cassandra_env,
    cassandra_session,
    migrate_for,
    openbao_relay,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hl7_sample_outcomes import SAMPLE_ACCEPTED, SAMPLE_REFUSED
from port_support import closed_address
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom_outcomes import TEST_FILES, pydicom_outcomes
from repo_paths import HL7_SAMPLES
from repo_paths import message as fixture
from service_support import (
    BearerAuth,
    RunningServices,
    assert_storage_unavailable,
    rpc_error,
    wait_for_health,
)

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import parse_record_name, record_name
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings, load_settings
from healthbank.crypto import Sealer, build_key_provider, build_sealer
from healthbank.crypto.vault import vault_policy
from healthbank.dev import synthetic
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.loader import message_pieces
from healthbank.records import (
    MAX_PAYLOAD_BYTES,
    PLACED_PAYLOAD_CONTENT_TYPE,
    RecordStore,
    StoredRecord,
    blob_aad,
    fact_aad,
    is_placed_payload_stub,
    open_record_store,
    payload_aad,
)
from healthbank.rpc import ServiceError, error_details, service_client_factory
from healthbank.storage.backends import open_store
from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.errors import StorageUnavailable
from services.archive.app import open_service as open_archive
from services.audit.app import open_service as open_audit
from services.identity.app import open_service as open_identity
from services.ingest.app import CASSANDRA_STORE, SERVICE, SERVICE_NAME, open_service
from services.ingest.canonical import payload_json
from services.ingest.dicom import UNIDENTIFIED_MRN_PREFIX, unidentified_patient_mrn
from services.ingest.pipeline import IngestPipeline
from services.ingest.servicer import MAX_CONTENT_BYTES
from services.ingest.store import SqliteIngestStore, WriteAudit

HOSPITAL_A = "hospital-a"
HOSPITAL_B = "hospital-b"
ENGINE_A = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", HOSPITAL_A)
ENGINE_B = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-b-engine", HOSPITAL_B)
AUDIT_READER = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-7", HOSPITAL_A)

FHIR = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
HL7 = common_pb2.SOURCE_FORMAT_HL7V2
DICOM = common_pb2.SOURCE_FORMAT_DICOM

# The synthetic patients of tests/fixtures/messages and the CT below, and values of people
# around them (next of kin) that must not be stored at all.
IDENTIFIERS = [
    "Thornquist",
    "Aldric",
    "司徒",
    "雅琳",
    "Quillfeather",
    "Ottilie",
    "Vantongeren",
    "Casimir",
    "Barnaby",
    "Lantern Row",
    "Pennywhistle",
    "310104197504120379",
    "44030519881103122X",
    "110108196207304511",
    "510107200102142082",
    "13955501234",
    "13655502468",
    "15855501357",
    "13755509876",
    "15855502468",
]
CT_NATIONAL_ID = "310104197504120379"  # the CT belongs to the admission bundle's patient


def ct_content(national_id: str = CT_NATIONAL_ID, mrn: str = "H1-0042001") -> bytes:
    """pydicom's CT_small.dcm with our identity convention added."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    dataset = pydicom.dcmread(str(path))
    dataset.PatientName = "Thornquist^Aldric"
    dataset.PatientID = mrn
    dataset.PatientTelephoneNumbers = "13955501234"
    item = Dataset()
    item.PatientID = national_id
    item.IssuerOfPatientID = "CN-NATIONAL-ID"
    dataset.OtherPatientIDsSequence = [item]
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def request(
    content: bytes,
    message_id: str,
    fmt: common_pb2.SourceFormat = FHIR,
    hospital: str = HOSPITAL_A,
) -> ingest_pb2.SubmitRequest:
    return ingest_pb2.SubmitRequest(
        hospital_id=hospital, message_id=message_id, format=fmt, content=content
    )


@dataclass
class Stack(BearerAuth):
    """Identity, audit and archive running; ingest instances opened on demand."""

    settings: Settings  # of the dependencies (embedded defaults)
    ingest_env: dict[str, str]  # HEALTHBANK_* of ingest: the backend under test
    running: RunningServices  # the dependencies
    records: RecordStore
    sealer: Sealer
    audit: audit_pb2_grpc.AuditServiceAsyncStub
    archive: archive_pb2_grpc.ArchiveServiceAsyncStub
    ingest: ingest_pb2_grpc.IngestServiceAsyncStub = field(init=False)
    ingest_port: int = 0

    @property
    def ingest_settings(self) -> Settings:
        return load_settings(self.ingest_env)

    def channel(self, address: str) -> grpc.aio.Channel:
        return self.running.channel(
            address, options=[("grpc.max_send_message_length", 80 * 1024 * 1024)]
        )

    async def open_ingest(
        self,
        exits: AsyncExitStack,
        overrides: Mapping[str, str] | None = None,
        now: Callable[[], datetime] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ingest_pb2_grpc.IngestServiceAsyncStub:
        """Start an ingest instance whose clients use ``overrides`` of the addresses.

        ``env`` adds to (or replaces) ingest's HEALTHBANK_* variables.
        """
        settings = load_settings({**self.ingest_env, **(env or {})})
        clients = service_client_factory(
            settings, SERVICE, addresses={**self.running.addresses, **(overrides or {})}
        )
        exits.push_async_callback(clients.close)
        host = await exits.enter_async_context(open_service(settings, clients=clients, now=now))
        self.ingest_port = await host.start(0)
        stub = ingest_pb2_grpc.IngestServiceStub(self.channel(f"127.0.0.1:{self.ingest_port}"))
        return stub

    async def submit(
        self, submit_request: ingest_pb2.SubmitRequest, principal: Principal = ENGINE_A
    ) -> ingest_pb2.SubmitResponse:
        response: ingest_pb2.SubmitResponse = await self.ingest.Submit(
            submit_request, metadata=self.auth(principal)
        )
        return response

    async def failure(
        self, submit_request: ingest_pb2.SubmitRequest, principal: Principal | None = ENGINE_A
    ) -> grpc.aio.AioRpcError:
        metadata = self.auth(principal) if principal is not None else ()
        return await rpc_error(self.ingest.Submit(submit_request, metadata=metadata))

    async def stream(
        self, messages: list[ingest_pb2.SubmitRequest], principal: Principal = ENGINE_A
    ) -> list[ingest_pb2.SubmitResponse]:
        async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
            for message in messages:
                yield message

        call = self.ingest.SubmitStream(requests(), metadata=self.auth(principal))
        return [ack async for ack in call]

    async def wait_for_health(self, wanted: int) -> None:
        channel = self.channel(f"127.0.0.1:{self.ingest_port}")
        await wait_for_health(channel, SERVICE_NAME, wanted)

    async def events(self, person_token: str) -> list[audit_pb2.LoggedEvent]:
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}", page_size=500),
            metadata=self.auth(AUDIT_READER),
        )
        return list(response.events)

    async def unappended_audits(self) -> list[WriteAudit]:
        """What ingest's own ledger still has to append (read with its own store)."""
        ledger = await open_store(
            self.ingest_settings, SERVICE, sqlite=SqliteIngestStore, cassandra=CASSANDRA_STORE
        )
        try:
            return await ledger.list_unappended_audits(datetime.now(UTC) + timedelta(days=1), 10)
        finally:
            await ledger.close()


@pytest.fixture(params=["sqlite", CASSANDRA])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend ingest runs on."""
    return str(request.param)


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, keyspace_prefix: str
) -> AsyncIterator[Stack]:
    base = {"HEALTHBANK_DATA_DIR": str(tmp_path), "HEALTHBANK_PORT": "0"}
    settings = load_settings(base)
    ingest_env = dict(base)
    if backend == "cassandra":
        engines: dict[str, str] = request.getfixturevalue("engines")
        ingest_env |= cassandra_env(engines, keyspace_prefix)
        # Single node: LOCAL_QUORUM works as well, ONE keeps the test independent of it.
        ingest_env["HEALTHBANK_CASSANDRA_CONSISTENCY"] = "ONE"
        # Schema first, as deployed (ADR 35): ingest's keyspaces (its own and the records).
        await asyncio.to_thread(migrate_for, load_settings(ingest_env), ["ingest"])
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("audit", open_audit(settings))
        # Identity audits the merges an ADT^A40 makes (ADR 33).
        identity_clients = running.clients(settings, "identity")
        await running.start("identity", open_identity(settings, clients=identity_clients))
        await running.start("archive", open_archive(settings))
        records = await open_record_store(load_settings(ingest_env))
        exits.push_async_callback(records.close)
        built = Stack(
            settings=settings,
            ingest_env=ingest_env,
            running=running,
            records=records,
            sealer=build_sealer(settings, build_key_provider(settings)),
            audit=None,  # type: ignore[arg-type]
            archive=None,  # type: ignore[arg-type]
        )
        built.audit = audit_pb2_grpc.AuditServiceStub(built.channel("audit"))
        built.archive = archive_pb2_grpc.ArchiveServiceStub(built.channel("archive"))
        built.ingest = await built.open_ingest(exits)
        yield built


# -- happy paths ------------------------------------------------------------------------------


async def test_health_reports_serving(stack: Stack) -> None:
    await stack.wait_for_health(health_pb2.HealthCheckResponse.SERVING)


async def test_health_checks_are_answered_while_a_huge_message_is_parsed(stack: Stack) -> None:
    # Parsing 100,000 segments takes seconds of CPU; it runs in ingest's parse pool, so
    # the event loop keeps answering other callers meanwhile.
    content = synthetic.oru_with_segments(LARGE_PATIENT, "huge-1", synthetic.HOSPITAL_A, 100_000)
    health = health_pb2_grpc.HealthStub(stack.channel(f"127.0.0.1:{stack.ingest_port}"))
    await stack.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    submit = asyncio.ensure_future(stack.failure(request(content, "huge-1", HL7)))
    answered = []
    while not submit.done() and len(answered) < 100:
        answered.append(await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)))
    assert len(answered) == 100
    assert not submit.done()  # the 100 checks were answered while the parse still ran
    assert {reply.status for reply in answered} == {health_pb2.HealthCheckResponse.SERVING}
    # Error mapping is unchanged: the parse error crosses the process boundary whole.
    error = await submit
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(error)
    assert details.reason == "INVALID_HL7V2"
    assert details.field_violations == [("content.OBX[99999].3", "is required")]
    assert details.retry_delay is None  # permanent: never "retry"


LARGE_PATIENT = synthetic.patient(800, mrn_prefix="L")


def letters_of(bundle: bytes) -> list[bytes]:
    """The stored payload of each DocumentReference of a bundle."""
    entries = json.loads(bundle)["entry"]
    resources = [entry["resource"] for entry in entries]
    return [payload_json(r) for r in resources if r["resourceType"] == "DocumentReference"]


@pytest.mark.parametrize("backend", [CASSANDRA])
async def test_a_50_mb_bundle_is_stored_on_cassandra_and_read_back_identical(stack: Stack) -> None:
    # One request of 50 MB would be far over the node's cap (4 MiB batches, 8 MiB requests):
    # the records go in logged batches of at most 2 MiB.
    content = synthetic.scanned_letters_bundle(LARGE_PATIENT, "large-1", 400, 96 * 1024)
    payloads = letters_of(content)
    assert len(content) > 50_000_000
    response = await stack.submit(request(content, "large-1"))
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    records = await stack.records.list_records(response.person_token)
    assert sorted(r.name for r in records) == sorted(response.record_names)
    stored = {
        await stack.sealer.open(r.sealed_payload, payload_aad(r.person_token, r.record_id))
        for r in records
    }
    assert set(payloads) <= stored
    # Its retry is answered from the receipt: stored once.
    again = await stack.submit(request(content, "large-1"))
    assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
    assert len(await stack.records.list_records(response.person_token)) == len(records)


def in_pieces(content: bytes, message_id: str, piece_bytes: int) -> list[ingest_pb2.SubmitRequest]:
    """A FHIR message as SubmitStream requests of at most ``piece_bytes`` of content each."""
    return message_pieces(HOSPITAL_A, message_id, FHIR, content, piece_bytes)


async def test_a_bundle_over_the_request_limit_is_streamed_in_pieces_and_stored_once(
    stack: Stack,
) -> None:
    content = synthetic.scanned_letters_bundle(LARGE_PATIENT, "pieces-1", 540, 96 * 1024)
    assert len(content) > MAX_CONTENT_BYTES  # more than one request may carry
    (ack,) = await stack.stream(in_pieces(content, "pieces-1", 8 * 1024 * 1024))
    assert ack.outcome == ingest_pb2.OUTCOME_STORED, ack.rejection
    assert len(ack.record_names) == 540
    records = await stack.records.list_records(ack.person_token)
    stored = {
        await stack.sealer.open(r.sealed_payload, payload_aad(r.person_token, r.record_id))
        for r in records
    }
    assert set(letters_of(content)) <= stored


async def test_pieces_of_two_messages_interleaved_fail_the_stream(stack: Stack) -> None:
    first = in_pieces(fixture("fhir_admission_bundle.json"), "mixed-1", 1000)
    second = in_pieces(fixture("fhir_admission_bundle.json"), "mixed-2", 1000)
    error = await rpc_error(stack.stream([first[0], second[0]]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(error)
    assert details.reason == "INCOMPLETE_MESSAGE"
    assert [name for name, _ in details.field_violations] == ["more_content"]
    assert await stack.records.get_receipt(HOSPITAL_A, "mixed-1") is None


async def test_a_stream_ending_mid_message_fails_and_stores_nothing(stack: Stack) -> None:
    pieces = in_pieces(fixture("fhir_admission_bundle.json"), "cut-1", 1000)
    error = await rpc_error(stack.stream(pieces[:-1]))
    assert error_details(error).reason == "INCOMPLETE_MESSAGE"
    assert await stack.records.get_receipt(HOSPITAL_A, "cut-1") is None


async def test_submit_refuses_a_piece(stack: Stack) -> None:
    (piece, *_) = in_pieces(fixture("fhir_admission_bundle.json"), "piece-1", 1000)
    error = await stack.failure(piece)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in error_details(error).field_violations] == ["more_content"]


async def archived_blob(stack: Stack, blob_name: str) -> tuple[archive_pb2.Blob, bytes]:
    """A blob's metadata and sealed content, read from the archive as record-lookup does."""
    chunks = [
        part
        async for part in stack.archive.GetBlob(
            archive_pb2.GetBlobRequest(name=blob_name),
            metadata=stack.auth(Principal(PrincipalKind.SERVICE, "record-lookup")),
        )
    ]
    return chunks[0].blob, b"".join(part.chunk for part in chunks)


async def assert_letters_read_back_identical(
    stack: Stack, person_token: str, content: bytes
) -> list[StoredRecord]:
    """Every letter of ``content`` comes back byte-identical: from its record, or, when it
    was placed in the blob store (ADR 22), from the person's blob its record names.
    Returns the records that keep a stub."""
    placed, payloads = [], set()
    for record in await stack.records.list_records(person_token):
        payload = await stack.sealer.open(
            record.sealed_payload, payload_aad(person_token, record.record_id)
        )
        if is_placed_payload_stub(payload):
            blob, sealed = await archived_blob(stack, record.blob_name)
            assert (blob.person_token, blob.content_type) == (
                person_token,
                PLACED_PAYLOAD_CONTENT_TYPE,
            )
            payload = await stack.sealer.open(sealed, blob_aad(person_token))
            placed.append(record)
        payloads.add(payload)
    assert set(letters_of(content)) <= payloads
    return placed


async def test_a_resource_too_large_for_one_record_is_placed_in_the_blob_store(
    stack: Stack,
) -> None:
    content = synthetic.scanned_letters_bundle(LARGE_PATIENT, "big-1", 3, MAX_PAYLOAD_BYTES // 2)
    bundle = json.loads(content)
    # The second letter alone is over what a record holds; the others are not.
    letter = bundle["entry"][2]["resource"]["content"][0]["attachment"]
    letter["data"] = letter["data"] * 3
    content = json.dumps(bundle).encode()
    response = await stack.submit(request(content, "big-1"))
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    assert len(response.record_names) == 3
    (placed,) = await assert_letters_read_back_identical(stack, response.person_token, content)
    assert placed.name == response.record_names[1]
    assert placed.category == common_pb2.RECORD_CATEGORY_DOCUMENT
    assert (placed.code_system, placed.code) == ("http://loinc.org", "34133-9")
    # Its retry is answered from the receipt: no second record, no second blob named.
    again = await stack.submit(request(content, "big-1"))
    assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
    assert len(await stack.records.list_records(response.person_token)) == 3


@pytest.mark.parametrize("backend", [CASSANDRA])
async def test_a_50_mb_resource_is_stored_on_cassandra_and_read_back_identical(
    stack: Stack,
) -> None:
    content = synthetic.scanned_letters_bundle(LARGE_PATIENT, "huge-letter-1", 1, 38 << 20)
    assert len(content) > 50_000_000
    response = await stack.submit(request(content, "huge-letter-1"))
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    (placed,) = await assert_letters_read_back_identical(stack, response.person_token, content)
    assert placed.name == response.record_names[0]


async def test_stored_message_is_logged_with_the_submitter_log_form(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.ingest")
    response = await stack.submit(request(fixture("fhir_admission_bundle.json"), "adm-log"))
    (stored,) = [r for r in caplog.records if r.getMessage().startswith("message stored")]
    assert response.person_token in stored.getMessage()
    assert stored.__dict__["principal_kind"] == "hospital_engine"
    assert stored.__dict__["principal_engine"] == ENGINE_A.subject
    assert stored.__dict__["principal_hospital"] == HOSPITAL_A
    # The patient of the fixture: names, national ID, phone number, MRN never reach a log.
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for identifier in ("Thornquist", "Aldric", "310104197504120379", "13955501234", "H1-0042001"):
        assert identifier not in logged


async def test_fhir_bundle_is_stored_sealed_with_facts_and_audited(stack: Stack) -> None:
    response = await stack.submit(request(fixture("fhir_admission_bundle.json"), "adm-0001"))
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    assert response.message_id == "adm-0001"
    token = response.person_token
    assert len(token) == 64
    assert len(response.record_names) == 8
    parsed = [parse_record_name(name) for name in response.record_names]
    assert all(names is not None and names[0] == token for names in parsed)

    records = await stack.records.list_records(token)
    assert sorted(r.name for r in records) == sorted(response.record_names)
    assert {r.category for r in records} == set(range(1, 9))
    allergy = next(r for r in records if r.category == common_pb2.RECORD_CATEGORY_ALLERGY)
    assert (allergy.code_system, allergy.code, allergy.code_display) == (
        "http://snomed.info/sct",
        "764146007",
        "Penicillin",
    )
    assert allergy.source_hospital == HOSPITAL_A
    assert allergy.message_id == "adm-0001"
    assert allergy.source_version == "3"
    assert allergy.source_format == FHIR
    assert allergy.effective_time == datetime(2009, 6, 15, tzinfo=UTC)
    payload = json.loads(
        await stack.sealer.open(allergy.sealed_payload, payload_aad(token, allergy.record_id))
    )
    assert payload["resourceType"] == "AllergyIntolerance"
    assert payload["patient"] == {"reference": "urn:uuid:7d0f6f2a-4a57-4a52-9d1c-2f1c7c1b0001"}

    facts = await stack.records.list_facts(token)
    # allergy, condition, procedure, and the MedicationStatement (anticoagulants, ADR 14)
    assert sorted(f.category for f in facts) == [1, 2, 3, 6]
    opened = {
        f.category: json.loads(await stack.sealer.open(f.sealed_fact, fact_aad(token, f.record_id)))
        for f in facts
    }
    assert opened[common_pb2.RECORD_CATEGORY_ALLERGY]["severity"] == "high"
    assert opened[common_pb2.RECORD_CATEGORY_ALLERGY]["record_name"] == allergy.name
    assert opened[common_pb2.RECORD_CATEGORY_CONDITION]["severity"] == "severe"
    assert opened[common_pb2.RECORD_CATEGORY_PROCEDURE]["code"] == "232717009"

    (event,) = await stack.events(token)
    assert event.event.action == audit_pb2.ACTION_WRITE
    assert event.event.actor.subject == ENGINE_A.subject
    assert event.event.actor.hospital_id == HOSPITAL_A
    assert event.event.actor.kind == common_pb2.PRINCIPAL_KIND_HOSPITAL_ENGINE
    assert event.event.recorded_by == "ingest"
    assert sorted(event.event.resource_names) == sorted(response.record_names)


async def test_every_resource_gets_an_outcome_in_the_ack_and_directories_are_stored(
    stack: Stack,
) -> None:
    engine = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", HOSPITAL_A)
    bundle = json.loads(fixture("fhir_admission_bundle.json"))
    bundle["entry"] += [
        {"resource": {"resourceType": "Claim", "id": "claim-1", "status": "active"}},
        {"resource": {"resourceType": "MessageHeader", "id": "header-1"}},
    ]
    response = await stack.submit(request(json.dumps(bundle).encode(), "adm-outcomes"), engine)
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    outcomes = {(r.resource_type, r.disposition) for r in response.resources}
    assert ("Practitioner", ingest_pb2.RESOURCE_DISPOSITION_DIRECTORY) in outcomes
    assert ("Claim", ingest_pb2.RESOURCE_DISPOSITION_DOCUMENT) in outcomes
    assert ("AllergyIntolerance", ingest_pb2.RESOURCE_DISPOSITION_RECORD) in outcomes
    (skipped,) = [r for r in response.resources if r.resource_type == "MessageHeader"]
    assert skipped.disposition == ingest_pb2.RESOURCE_DISPOSITION_SKIPPED and skipped.reason
    stored = [r.record_name for r in response.resources if r.record_name]
    assert sorted(stored) == sorted(response.record_names)
    # A directory-only message: no person, no records; stored in the hospital's directory.
    directory = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": {"resourceType": "Location", "id": "ward-3"}}],
    }
    ndjson = json.dumps(directory["entry"][0]["resource"]).encode() + b"\n"
    acks = await stack.stream(
        [
            request(json.dumps(directory).encode(), "dir-1"),
            request(ndjson, "dir-2", common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON),
        ],
        engine,
    )
    assert [a.outcome for a in acks] == [ingest_pb2.OUTCOME_STORED] * 2
    assert [a.person_token for a in acks] == ["", ""]
    assert [r.resource_id for a in acks for r in a.resources] == ["ward-3", "ward-3"]
    ledger = await open_store(
        stack.ingest_settings, SERVICE, sqlite=SqliteIngestStore, cassandra=CASSANDRA_STORE
    )
    try:
        entries = await ledger.list_directory(HOSPITAL_A)
    finally:
        await ledger.close()
    assert {(e.resource_type, e.resource_id) for e in entries} >= {("Location", "ward-3")}
    assert "Practitioner" in {e.resource_type for e in entries}


async def test_retry_is_a_duplicate_and_writes_nothing(stack: Stack) -> None:
    content = fixture("fhir_lab_message_bundle.json")
    first = await stack.submit(request(content, "lab-7781"))
    receipt = await stack.records.get_receipt(HOSPITAL_A, "lab-7781")
    rows = await stack.records.list_records(first.person_token)
    for _ in range(2):
        again = await stack.submit(request(content, "lab-7781"))
        assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
        assert again.person_token == first.person_token
        assert list(again.record_names) == list(first.record_names)
    assert await stack.records.list_records(first.person_token) == rows
    assert await stack.records.get_receipt(HOSPITAL_A, "lab-7781") == receipt
    assert len(await stack.events(first.person_token)) == 1  # audited once


# -- a message of several patients (ADR 38) --------------------------------------------------


def several_patients(people: list[synthetic.Patient], bundle_id: str) -> dict[str, Any]:
    """One batch Bundle holding each person's emergency history (Patient/p1, p2 ...)."""
    entries = []
    for n, person in enumerate(people, start=1):
        own = synthetic.emergency_history_bundle(person, f"{bundle_id}-{n}")
        text = (
            own.decode().replace('"id":"p1"', f'"id":"p{n}"').replace("Patient/p1", f"Patient/p{n}")
        )
        entries += json.loads(text)["entry"]
    return {"resourceType": "Bundle", "id": bundle_id, "type": "batch", "entry": entries}


def patient_entry(bundle: Mapping[str, Any], n: int) -> int:
    """The index of the n-th Patient (from 1) among the bundle's entries."""
    places = [
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Patient"
    ]
    return places[n - 1]


async def test_a_batch_of_several_patients_stores_each_apart_and_a_retry_is_a_duplicate(
    stack: Stack,
) -> None:
    people = [synthetic.patient(40 + n) for n in range(3)]
    content = json.dumps(several_patients(people, "batch-1")).encode()

    response = await stack.submit(request(content, "batch-1"))

    assert response.outcome == ingest_pb2.OUTCOME_STORED and response.person_token == ""
    parts = list(response.patients)
    assert [p.message_id for p in parts] == [f"batch-1#patient-{n}" for n in (1, 2, 3)]
    assert [p.outcome for p in parts] == [ingest_pb2.OUTCOME_STORED] * 3
    tokens = [p.person_token for p in parts]
    assert len(set(tokens)) == 3 and all(len(token) == 64 for token in tokens)
    assert list(response.record_names) == [n for p in parts for n in p.record_names]
    for part in parts:
        assert len(part.record_names) == 3  # allergy, procedure, condition
        assert [r.resource_type for r in part.resources] == [
            "AllergyIntolerance",
            "Procedure",
            "Condition",
        ]
        records = await stack.records.list_records(part.person_token)
        assert sorted(r.name for r in records) == sorted(part.record_names)
        assert {r.message_id for r in records} == {part.message_id}
        assert len(await stack.records.list_facts(part.person_token)) == 3
        (event,) = await stack.events(part.person_token)
        assert sorted(event.event.resource_names) == sorted(part.record_names)

    again = await stack.submit(request(content, "batch-1"))

    assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
    assert [p.outcome for p in again.patients] == [ingest_pb2.OUTCOME_DUPLICATE] * 3
    assert [p.person_token for p in again.patients] == tokens
    assert [list(p.record_names) for p in again.patients] == [list(p.record_names) for p in parts]
    for token in tokens:
        assert len(await stack.events(token)) == 1  # audited once
    # Through the stream, the same acknowledgement per patient.
    (streamed,) = await stack.stream([request(content, "batch-1")])
    assert [p.outcome for p in streamed.patients] == [ingest_pb2.OUTCOME_DUPLICATE] * 3
    # Each part is the same person as when sent alone.
    alone = await stack.submit(
        request(synthetic.emergency_history_bundle(people[1], "alone-2"), "alone-2")
    )
    assert alone.person_token == tokens[1]


async def test_a_rejected_patient_leaves_the_others_stored_and_a_corrected_resend_adds_them(
    stack: Stack,
) -> None:
    people = [synthetic.patient(50 + n) for n in range(3)]
    bundle = several_patients(people, "batch-2")
    second = patient_entry(bundle, 2)
    good_id = bundle["entry"][second]["resource"]["identifier"][0]["value"]
    bad_id = good_id[:-1] + ("0" if good_id[-1] != "0" else "1")  # the check digit broken
    bundle["entry"][second]["resource"]["identifier"][0]["value"] = bad_id

    response = await stack.submit(request(json.dumps(bundle).encode(), "batch-2"))

    assert response.outcome == ingest_pb2.OUTCOME_PARTIALLY_STORED
    first, rejected, third = response.patients
    assert (first.outcome, third.outcome) == (ingest_pb2.OUTCOME_STORED,) * 2
    assert rejected.outcome == ingest_pb2.OUTCOME_REJECTED
    assert rejected.message_id == "batch-2#patient-2" and not rejected.person_token
    assert rejected.rejection.reason == "INVALID_FHIR" and not rejected.rejection.retryable
    ((field, description),) = [
        (v.field, v.description) for v in rejected.rejection.field_violations
    ]
    assert field == f"content.entry[{second}].resource.identifier[0].value"
    assert description.startswith("invalid national ID") and bad_id not in description
    assert await stack.records.get_receipt(HOSPITAL_A, "batch-2#patient-2") is None
    assert list(response.record_names) == [*first.record_names, *third.record_names]

    bundle["entry"][second]["resource"]["identifier"][0]["value"] = good_id
    resent = await stack.submit(request(json.dumps(bundle).encode(), "batch-2"))

    assert resent.outcome == ingest_pb2.OUTCOME_STORED
    assert [p.outcome for p in resent.patients] == [
        ingest_pb2.OUTCOME_DUPLICATE,
        ingest_pb2.OUTCOME_STORED,
        ingest_pb2.OUTCOME_DUPLICATE,
    ]
    assert resent.patients[0].person_token == first.person_token
    assert len(await stack.records.list_records(resent.patients[1].person_token)) == 3


async def test_a_batch_whose_every_patient_is_rejected_fails_with_every_reason(
    stack: Stack,
) -> None:
    bundle = several_patients([synthetic.patient(60), synthetic.patient(61)], "batch-3")
    for n in (1, 2):
        bundle["entry"][patient_entry(bundle, n)]["resource"]["identifier"].pop()  # the MRN
    content = json.dumps(bundle).encode()

    error = await stack.failure(request(content, "batch-3"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(error)
    assert details.reason == "INVALID_FHIR"
    assert [field for field, _ in details.field_violations] == [
        f"content.entry[{patient_entry(bundle, n)}].resource.identifier" for n in (1, 2)
    ]
    (streamed,) = await stack.stream([request(content, "batch-3")])
    assert streamed.outcome == ingest_pb2.OUTCOME_REJECTED and not streamed.patients
    assert len(streamed.rejection.field_violations) == 2
    for n in (1, 2):
        assert await stack.records.get_receipt(HOSPITAL_A, f"batch-3#patient-{n}") is None


async def test_same_message_id_with_other_content_is_refused(stack: Stack) -> None:
    await stack.submit(request(fixture("fhir_lab_message_bundle.json"), "lab-7781"))
    error = await stack.failure(request(fixture("fhir_patient_update.json"), "lab-7781"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(error).reason == "MESSAGE_ID_REUSED"
    # Another hospital has its own message id space.
    other = await stack.submit(
        request(fixture("hl7_adt_a01.er7"), "lab-7781", HL7, HOSPITAL_B), ENGINE_B
    )
    assert other.outcome == ingest_pb2.OUTCOME_STORED


async def test_hl7_admission_update_and_results(stack: Stack) -> None:
    admission = await stack.submit(
        request(fixture("hl7_adt_a01.er7"), "ADT-B-000917", HL7, HOSPITAL_B), ENGINE_B
    )
    assert admission.outcome == ingest_pb2.OUTCOME_STORED
    assert len(admission.record_names) == 7  # six clinical facts and the kept Z-segment
    assert admission.hl7_ack.split(b"\r")[1] == b"MSA|AA|ADT-B-000917"
    token = admission.person_token
    facts = await stack.records.list_facts(token)
    severities = {}
    for fact in facts:
        opened = json.loads(
            await stack.sealer.open(fact.sealed_fact, fact_aad(token, fact.record_id))
        )
        severities[opened["display"]] = opened["severity"]
    assert severities["Penicillin G"] == "high"  # AL1-4 SV
    assert severities["Peanut & tree nuts"] == "low"

    # The update carries no national ID: the record number, linked by the admission, suffices.
    update = await stack.submit(
        request(fixture("hl7_adt_a08_custom_delimiters.er7"), "ADT-B-000918", HL7, HOSPITAL_B),
        ENGINE_B,
    )
    assert update.person_token == token

    results = await stack.submit(
        request(fixture("hl7_oru_r01.er7"), "LAB-B-55120", HL7, HOSPITAL_B), ENGINE_B
    )
    assert results.person_token != token
    stored = await stack.records.list_records(results.person_token)
    hemoglobin = next(r for r in stored if r.code == "718-7")
    payload = json.loads(
        await stack.sealer.open(
            hemoglobin.sealed_payload, payload_aad(results.person_token, hemoglobin.record_id)
        )
    )
    assert payload["valueQuantity"]["value"] == 13.2
    assert hemoglobin.effective_time == datetime(2026, 3, 6, 0, 0, tzinfo=UTC)
    assert hemoglobin.source_format == HL7


def adt(event: str, mrn: str, *segments: str, who: str = "DOE^JOHN||19800517|M") -> bytes:
    """A minimal ADT of hospital B for the patient with record number ``mrn`` (no ID)."""
    lines = [
        f"MSH|^~\\&|HIS|{HOSPITAL_B}|HEALTHBANK|CITY|20261102091500||ADT^{event}|{mrn}-{event}|P|2.5",
        f"PID|1||{mrn}^^^{HOSPITAL_B}^MR||{who}",
        *segments,
    ]
    return "\r".join(lines).encode()


async def test_an_a40_merges_the_hospitals_duplicate_registration(stack: Stack) -> None:
    """ADR 33: the hospital's prior record number's messages land on the surviving person."""
    # Brought in unconscious: registered as an unknown man, later recognised.
    unknown = adt("A04", "DUP-7", who="UNKNOWN^MALE|||M")
    duplicate = await stack.submit(request(unknown, "a04-dup", HL7, HOSPITAL_B), ENGINE_B)
    survivor = await stack.submit(
        request(adt("A04", "SUR-7"), "a04-sur", HL7, HOSPITAL_B), ENGINE_B
    )
    assert duplicate.person_token != survivor.person_token

    merge = adt("A40", "SUR-7", "MRG|DUP-7^^^hospital-b^MR")
    merged = await stack.submit(request(merge, "a40-1", HL7, HOSPITAL_B), ENGINE_B)
    assert merged.outcome == ingest_pb2.OUTCOME_STORED
    assert merged.person_token == survivor.person_token
    later = await stack.submit(request(adt("A08", "DUP-7"), "a08-dup", HL7, HOSPITAL_B), ENGINE_B)
    assert later.person_token == survivor.person_token


async def test_the_same_patient_from_two_hospitals_is_one_person(stack: Stack) -> None:
    fhir = await stack.submit(request(fixture("fhir_condition_contained_patient.json"), "c-1"))
    hl7 = await stack.submit(
        request(fixture("hl7_oru_r01.er7"), "LAB-B-55120", HL7, HOSPITAL_B), ENGINE_B
    )
    assert fhir.person_token == hl7.person_token


async def test_the_home_address_reaches_matching_from_fhir_and_hl7(stack: Stack) -> None:
    # One woman at two hospitals, neither sending a national ID or a phone: hospital B's
    # registration has a typo in her given name and in her birth date's day. Name and birth
    # date alone leave that to a privacy officer's review (probability ~0.68); with the
    # home address each message carries (FHIR Patient.address, HL7 PID-11), it is a link.
    person = replace(
        synthetic.patient(7),
        family_name="Quarnby",
        given_name="Liora",
        birth_date=datetime(1975, 8, 6).date(),
        sex="female",
    )
    bundle = json.loads(registered_without_national_id(person, "home-1"))
    patient = bundle["entry"][patient_entry(bundle, 1)]["resource"]
    del patient["telecom"]
    patient["address"] = [
        {"use": "work", "line": ["1 Harbour Road"], "city": "Boston", "state": "MA"},
        {"use": "home", "line": ["236 Zulauf Fork"], "city": "Bedford", "state": "MA"},
    ]
    first = await stack.submit(request(json.dumps(bundle).encode(), "home-1"))
    elsewhere = adt(
        "A04", "B-3301", who="Quarnby^Liorra||19750809|F|||236 Zulauf Fork^^Bedford^MA^01730^US"
    )

    second = await stack.submit(request(elsewhere, "home-2", HL7, HOSPITAL_B), ENGINE_B)

    assert second.person_token == first.person_token


def named_whole(person: synthetic.Patient, bundle_id: str, whole_name: str) -> bytes:
    """The person's bundle without a national ID, the Patient named by ``text`` alone (as
    public FHIR examples send Chinese names), living at one home."""
    bundle = json.loads(registered_without_national_id(person, bundle_id))
    patient = bundle["entry"][patient_entry(bundle, 1)]["resource"]
    patient["name"] = [{"use": "official", "text": whole_name}]
    patient["address"] = [{"use": "home", "text": "北京市海淀区学院路12号1单元101"}]
    return json.dumps(bundle).encode()


async def test_a_name_sent_whole_is_matched_by_its_family_and_given_name(stack: Stack) -> None:
    # One woman, no national ID: hospital A names her by parts (欧阳 / 娜娜), hospital B's
    # FHIR by the whole name in HumanName.text. Before ingest split the text, B's
    # registration reached matching with no name at all, and a birth date and sex alone
    # made her a second person.
    person = replace(synthetic.patient(11), birth_date=datetime(1986, 4, 23).date(), sex="female")
    parts = json.loads(registered_without_national_id(person, "whole-1"))
    patient = parts["entry"][patient_entry(parts, 1)]["resource"]
    patient["name"] = [{"family": "欧阳", "given": ["娜娜"]}]
    del patient["telecom"]
    first = await stack.submit(request(json.dumps(parts).encode(), "whole-1"))
    whole = json.loads(named_whole(replace(person, mrn="B-4410"), "whole-2", "欧阳娜娜"))
    del whole["entry"][patient_entry(whole, 1)]["resource"]["address"]
    del whole["entry"][patient_entry(whole, 1)]["resource"]["telecom"]

    second = await stack.submit(
        request(json.dumps(whole).encode(), "whole-2", hospital=HOSPITAL_B), ENGINE_B
    )

    assert second.person_token == first.person_token


async def test_twins_named_whole_are_never_linked(stack: Stack) -> None:
    # Twin sisters, one birth date, one home, one family phone, no national ID, each named
    # whole (张平 by hospital A's FHIR text, 张静 in hospital B's PID-5.1). Split, their
    # given names differ (平 ping, 静 jing): twins, never linked automatically. Unsplit,
    # matching saw no name on one side and linked them on everything else.
    sister = replace(synthetic.patient(12), birth_date=datetime(2001, 3, 14).date(), sex="female")
    first = await stack.submit(request(named_whole(sister, "twin-1", "张平"), "twin-1"))
    other = adt(
        "A04",
        "B-5120",
        who=f"张静||20010314|F|||学院路12号1单元101^^北京市^^^^^^海淀区||{sister.phone}",
    )

    second = await stack.submit(request(other, "twin-2", HL7, HOSPITAL_B), ENGINE_B)

    assert second.person_token != first.person_token


async def test_a_long_address_or_a_tab_in_a_name_does_not_refuse_the_records(
    stack: Stack,
) -> None:
    # Valid FHIR, beyond what identity takes for matching (200 printable characters a
    # field): before, identity refused the patient and the lab results were refused with it.
    person = synthetic.patient(13)
    bundle = json.loads(registered_without_national_id(person, "long-1"))
    patient = bundle["entry"][patient_entry(bundle, 1)]["resource"]
    patient["name"] = [{"family": f"{person.family_name}\t", "given": [person.given_name]}]
    patient["address"] = [{"use": "home", "text": "236 Zulauf Fork, " + "Wing B, " * 40}]

    response = await stack.submit(request(json.dumps(bundle).encode(), "long-1"))

    assert response.outcome == ingest_pb2.OUTCOME_STORED
    assert await stack.records.list_records(response.person_token)


async def test_dicom_file_is_archived_sealed_and_indexed(stack: Stack) -> None:
    content = ct_content()
    response = await stack.submit(request(content, "dicom-0001", DICOM))
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    token = response.person_token
    (record,) = await stack.records.list_records(token)
    assert record.category == common_pb2.RECORD_CATEGORY_IMAGING
    assert (record.code_system, record.code) == (
        "http://dicom.nema.org/resources/ontology/DCM",
        "CT",
    )
    assert record.blob_name.startswith("blobs/")
    assert record.effective_time == datetime(2004, 1, 19, 12, 27, 30, tzinfo=UTC)  # -0500
    study = json.loads(
        await stack.sealer.open(record.sealed_payload, payload_aad(token, record.record_id))
    )
    assert study["resourceType"] == "ImagingStudy"

    blob, sealed = await archived_blob(stack, record.blob_name)
    assert (blob.person_token, blob.content_type) == (token, "application/dicom")
    assert await stack.sealer.open(sealed, blob_aad(token)) == content

    again = await stack.submit(request(content, "dicom-0001", DICOM))
    assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
    assert len(await stack.records.list_records(token)) == 1


# -- rejections -------------------------------------------------------------------------------


async def test_malformed_messages_get_precise_violations(stack: Stack) -> None:
    cases: list[tuple[bytes, common_pb2.SourceFormat, str, list[str]]] = [
        (b"<Bundle/>", FHIR, "INVALID_FHIR", ["content"]),
        (
            json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}).encode(),
            FHIR,
            "INVALID_FHIR",
            ["content.entry"],
        ),
        (
            fixture("hl7_adt_a01.er7").replace(b"510107200102142082", b"510107200102142083"),
            HL7,
            "INVALID_HL7V2",
            ["content.PID[0].3[1].1"],
        ),
        (b"PID|1||X^^^h^MR", HL7, "INVALID_HL7V2", ["content.MSH"]),
        (
            ct_content(national_id=""),
            DICOM,
            "INVALID_DICOM",
            ["content.OtherPatientIDsSequence[0].PatientID"],
        ),
        (b"not dicom", DICOM, "INVALID_DICOM", ["content"]),
    ]
    for index, (content, fmt, reason, fields) in enumerate(cases):
        error = await stack.failure(request(content, f"bad-{index}", fmt))
        details = error_details(error)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
        assert details.reason == reason
        assert [name for name, _ in details.field_violations] == fields
        assert "510107200102142083" not in str(details)
    assert await stack.records.get_receipt(HOSPITAL_A, "bad-0") is None


async def test_a_message_with_thousands_of_violations_fits_a_default_client(
    stack: Stack,
) -> None:
    """Submitted by the hospital's engine principal over a channel with gRPC defaults."""
    msh = b"MSH|^~\\&|LAB|hospital-a|HB|CITY|20260305143000||ORU^R01|FLOOD-1|P|2.5"
    segments = [msh, b"PID|1||M-1^^^hospital-a^MR"]
    segments += [b"OBX|%d|NM|8310-5^Body temperature^LN||warm" % n for n in range(5000)]
    engine = Principal(PrincipalKind.HOSPITAL_ENGINE, "his-a", HOSPITAL_A)
    default_client = stack.running.channel(f"127.0.0.1:{stack.ingest_port}")  # no options
    stub = ingest_pb2_grpc.IngestServiceStub(default_client)
    error = await rpc_error(
        stub.Submit(request(b"\r".join(segments), "flood-1", HL7), metadata=stack.auth(engine))
    )
    details = error_details(error)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_HL7V2"
    assert details.field_violations[0] == ("content.OBX[0].5", "must be a number for value type NM")
    assert details.metadata["violations_total"] == "5000"
    assert not ServiceError(error.code(), "x", reason="INVALID_HL7V2").retryable
    # In a stream the same message is one rejection, with its AE ACK for the engine.
    (rejected,) = await stack.stream([request(b"\r".join(segments), "flood-2", HL7)])
    assert rejected.outcome == ingest_pb2.OUTCOME_REJECTED
    assert not rejected.rejection.retryable
    assert rejected.rejection.violations_total == 5000
    assert 0 < len(rejected.rejection.field_violations) < 5000
    assert rejected.hl7_ack.split(b"\r")[1].startswith(b"MSA|AE|")


async def test_public_hl7_samples_through_the_stream(stack: Stack) -> None:
    """The samples of tests/fixtures/hl7_samples, with the outcomes their unit test lists.

    None carries a national ID: until identity creates persons without one (its own issue),
    a sample that passes ingest's validation is refused by identity alone (UNKNOWN_PATIENT);
    after that, it is stored.
    """
    names = sorted(SAMPLE_ACCEPTED) + sorted(SAMPLE_REFUSED)
    messages = [
        request((HL7_SAMPLES / name).read_bytes(), f"sample-{index}", HL7)
        for index, name in enumerate(names)
    ]
    acks = await stack.stream(messages)
    for name, ack in zip(names, acks, strict=True):
        msa = ack.hl7_ack.split(b"\r")[1].split(b"|")[1]
        if name in SAMPLE_ACCEPTED:
            assert (ack.rejection.reason, ack.outcome) in (
                ("UNKNOWN_PATIENT", ingest_pb2.OUTCOME_REJECTED),
                ("", ingest_pb2.OUTCOME_STORED),
            ), name
            assert msa == (b"AA" if ack.outcome == ingest_pb2.OUTCOME_STORED else b"AE"), name
        else:
            assert ack.rejection.reason == "INVALID_HL7V2", name
            violations = [(v.field, v.description) for v in ack.rejection.field_violations]
            assert violations == SAMPLE_REFUSED[name], name
            assert msa == b"AE", name


async def test_pydicom_test_files_through_the_stream(stack: Stack) -> None:
    """Every file of pydicom's test data, with the outcome the reviewed table lists: an
    accepted one is stored, under an unidentified patient when it has no PatientID."""
    expected = pydicom_outcomes()
    names = sorted(expected)
    contents = [(TEST_FILES / name).read_bytes() for name in names]
    messages = [request(content, f"dcm-{index}", DICOM) for index, content in enumerate(contents)]
    acks = await stack.stream(messages)
    for name, content, ack in zip(names, contents, acks, strict=True):
        outcome, fields = expected[name]
        if outcome == "accepted":
            assert (ack.rejection.reason, ack.outcome) == ("", ingest_pb2.OUTCOME_STORED), name
            assert ack.patient_unidentified == (not _patient_id(content)), name
        else:
            assert ack.rejection.reason == outcome, name
            violated = list(dict.fromkeys(v.field for v in ack.rejection.field_violations))
            assert violated == fields, name
        assert not ack.hl7_ack


def _attribute(content: bytes, keyword: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on files it reads all the same
        return str(pydicom.dcmread(io.BytesIO(content)).get(keyword, "")).strip()


def _patient_id(content: bytes) -> str:
    return _attribute(content, "PatientID")


def pydicom_file(name: str) -> bytes:
    """One file of pydicom's bundled test data, as it is."""
    return (TEST_FILES / name).read_bytes()


async def test_an_anonymised_dicom_file_is_stored_under_its_studys_unidentified_patient(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Two files of one study without PatientID: the JPEG and the same image decompressed.
    jpeg, decompressed = pydicom_file("SC_rgb_jpeg.dcm"), pydicom_file("SC_rgb_jpeg_dcmd.dcm")
    study_uid = _attribute(jpeg, "StudyInstanceUID")
    assert not _patient_id(jpeg) and not _patient_id(decompressed)
    assert study_uid and _attribute(decompressed, "StudyInstanceUID") == study_uid

    first = await stack.submit(request(jpeg, "anon-1", DICOM))
    assert first.outcome == ingest_pb2.OUTCOME_STORED
    assert first.patient_unidentified
    (record,) = await stack.records.list_records(first.person_token)
    assert [record.name] == list(first.record_names)

    # Its retry is a duplicate: nothing stored twice, the same placeholder person.
    again = await stack.submit(request(jpeg, "anon-1", DICOM))
    assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
    assert (again.person_token, again.record_names) == (first.person_token, first.record_names)
    assert not again.patient_unidentified  # answered from the receipt, without parsing

    # Another image of the study lands on the same person; another study on another one.
    second = await stack.submit(request(decompressed, "anon-2", DICOM))
    assert (second.outcome, second.patient_unidentified) == (ingest_pb2.OUTCOME_STORED, True)
    assert second.person_token == first.person_token
    stored = await stack.records.list_records(first.person_token)
    assert sorted(r.name for r in stored) == sorted([*first.record_names, *second.record_names])
    other = await stack.submit(request(pydicom_file("image_dfl.dcm"), "anon-3", DICOM))
    assert other.patient_unidentified and other.person_token != first.person_token

    # Placeholders are per hospital: the same study from hospital B is B's unknown patient.
    elsewhere = await stack.submit(request(jpeg, "anon-1", DICOM, HOSPITAL_B), ENGINE_B)
    assert elsewhere.patient_unidentified and elsewhere.person_token != first.person_token

    # A file that names its patient is not unidentified.
    named = await stack.submit(request(ct_content(), "ct-named", DICOM))
    assert named.outcome == ingest_pb2.OUTCOME_STORED and not named.patient_unidentified

    # The placeholder is a record number like any other: it never reaches a log.
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert unidentified_patient_mrn(study_uid) not in logged
    assert UNIDENTIFIED_MRN_PREFIX not in logged


async def test_pydicom_files_refused_for_what_they_are(stack: Stack) -> None:
    cases = [
        ("rtplan_truncated.dcm", "INVALID_DICOM", "is truncated"),
        ("DICOMDIR", "DICOMDIR_NOT_AN_INSTANCE", "is a DICOMDIR"),
    ]
    for index, (name, reason, description) in enumerate(cases):
        content = Path(get_testdata_file(name)).read_bytes()
        details = error_details(await stack.failure(request(content, f"dcm-{index}", DICOM)))
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.reason == reason
        assert details.field_violations[0][1].startswith(description)


async def test_a_patient_known_only_by_record_number_is_stored_and_linked_later(
    stack: Stack,
) -> None:
    # An update for a patient never seen before, without a national ID: the hospital's
    # record number is enough to find or create the person.
    content = fixture("hl7_adt_a08_custom_delimiters.er7").replace(b"H2-77032", b"H2-99999")
    unknown = await stack.submit(request(content, "a08-unknown", HL7, HOSPITAL_B), ENGINE_B)
    assert unknown.outcome == ingest_pb2.OUTCOME_STORED
    assert len(await stack.records.list_records(unknown.person_token)) == len(unknown.record_names)

    # A FHIR bundle whose Patient carries only the MRN: stored under one person.
    bundle = json.loads(fixture("fhir_admission_bundle.json"))
    patient = bundle["entry"][0]["resource"]
    national = patient["identifier"].pop(1)
    assert national["system"] == "urn:oid:2.16.156.10011.1.1"
    first = await stack.submit(request(json.dumps(bundle).encode(), "mrn-only-1"))
    assert first.outcome == ingest_pb2.OUTCOME_STORED
    stored = await stack.records.list_records(first.person_token)
    assert len(stored) == len(first.record_names) > 0

    # The same MRN later with the national ID: the ID is linked to that person, so another
    # hospital's message with the ID alone finds the same person.
    with_id = await stack.submit(request(fixture("fhir_admission_bundle.json"), "mrn-and-id"))
    assert with_id.person_token == first.person_token
    elsewhere = json.loads(fixture("fhir_admission_bundle.json"))
    elsewhere["entry"][0]["resource"]["identifier"][0]["value"] = "B-5511"
    other_hospital = await stack.submit(
        request(json.dumps(elsewhere).encode(), "b-with-id", FHIR, HOSPITAL_B), ENGINE_B
    )
    assert other_hospital.person_token == first.person_token


async def test_request_validation(stack: Stack) -> None:
    error = await stack.failure(ingest_pb2.SubmitRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error).field_violations == [
        ("hospital_id", "is required"),
        ("message_id", "is required"),
        ("format", "must be FHIR_R4_JSON, FHIR_R4_NDJSON, HL7V2 or DICOM"),
        ("content", "is required"),
    ]
    odd = ingest_pb2.SubmitRequest(
        hospital_id=HOSPITAL_A,
        message_id=" x\n" + "y" * 300,
        format=cast(common_pb2.SourceFormat, 99),
        content=b"{}",
    )
    fields = [name for name, _ in error_details(await stack.failure(odd)).field_violations]
    assert fields == ["message_id", "message_id", "format"]


async def test_content_size_limit(stack: Stack) -> None:
    too_big = b"\0" * (64 * 1024 * 1024 - 4096 + 1)
    error = await stack.failure(request(too_big, "huge", DICOM))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in error_details(error).field_violations] == ["content"]


async def test_caller_checks(stack: Stack) -> None:
    content = fixture("fhir_patient_update.json")
    anonymous = await stack.failure(request(content, "p-1"), principal=None)
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    clinician = await stack.failure(request(content, "p-1"), principal=CLINICIAN)
    assert clinician.code() == grpc.StatusCode.PERMISSION_DENIED
    other_hospital = await stack.failure(request(content, "p-1", hospital=HOSPITAL_A), ENGINE_B)
    assert other_hospital.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(other_hospital).reason == "HOSPITAL_MISMATCH"
    internal = Principal(PrincipalKind.SERVICE, "archive")  # a service is no hospital engine
    not_an_engine = await stack.failure(request(content, "p-1"), principal=internal)
    assert error_details(not_an_engine).reason == "SERVICE_NOT_ALLOWED"
    unbound_engine = Principal(PrincipalKind.HOSPITAL_ENGINE, "stray-engine")
    unbound = await stack.failure(request(content, "p-1"), principal=unbound_engine)
    assert error_details(unbound).reason == "HOSPITAL_REQUIRED"


async def test_a_hospital_engine_submits_its_own_hospitals_messages_only(stack: Stack) -> None:
    content = fixture("fhir_patient_update.json")
    engine_a = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", HOSPITAL_A)
    engine_b = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-b-engine", HOSPITAL_B)
    stored = await stack.submit(request(content, "engine-1"), engine_a)
    assert stored.outcome == ingest_pb2.OUTCOME_STORED
    (write,) = [
        logged.event
        for logged in await stack.events(stored.person_token)
        if logged.event.action == audit_pb2.ACTION_WRITE
    ]
    assert (write.actor.kind, write.actor.hospital_id) == (
        common_pb2.PRINCIPAL_KIND_HOSPITAL_ENGINE,
        HOSPITAL_A,
    )
    refused = await stack.failure(request(content, "engine-2", hospital=HOSPITAL_A), engine_b)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(refused).reason == "HOSPITAL_MISMATCH"


# -- the stream -------------------------------------------------------------------------------


async def test_stream_acks_in_order_and_rejects_without_ending(stack: Stack) -> None:
    bundle = fixture("fhir_admission_bundle.json")
    messages = [
        request(bundle, "s-1"),
        request(b"MSH|bad", "s-2", HL7),
        request(bundle, "s-1"),  # a retry inside the stream
        request(ct_content(), "s-4", DICOM),
        request(fixture("fhir_patient_update.json"), "s-1"),  # id reused
        ingest_pb2.SubmitRequest(hospital_id=HOSPITAL_A, message_id="s-6"),  # no format/content
        *(
            request(
                fixture("fhir_lab_message_bundle.json").replace(b"lab-7781", f"b-{i}".encode()),
                f"bulk-{i}",
            )
            for i in range(20)
        ),
    ]

    async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
        for message in messages:
            yield message

    call = stack.ingest.SubmitStream(requests(), metadata=stack.auth(ENGINE_A))
    acks = [ack async for ack in call]
    assert [ack.message_id for ack in acks] == [m.message_id for m in messages]
    outcomes = [ack.outcome for ack in acks]
    assert outcomes[:6] == [
        ingest_pb2.OUTCOME_STORED,
        ingest_pb2.OUTCOME_REJECTED,
        ingest_pb2.OUTCOME_DUPLICATE,
        ingest_pb2.OUTCOME_STORED,
        ingest_pb2.OUTCOME_REJECTED,
        ingest_pb2.OUTCOME_REJECTED,
    ]
    assert all(outcome == ingest_pb2.OUTCOME_STORED for outcome in outcomes[6:])
    assert acks[1].rejection.reason == "INVALID_HL7V2"
    assert [v.field for v in acks[1].rejection.field_violations] == ["content.MSH[0].2"]
    assert not acks[1].rejection.retryable
    assert acks[4].rejection.reason == "MESSAGE_ID_REUSED"
    assert [v.field for v in acks[5].rejection.field_violations] == ["format", "content"]
    assert acks[0].person_token == acks[3].person_token  # the bundle's patient owns the CT
    assert list(acks[2].record_names) == list(acks[0].record_names)
    bulk_tokens = {ack.person_token for ack in acks[6:]}
    assert len(bulk_tokens) == 1


def registered_without_national_id(person: synthetic.Patient, bundle_id: str) -> bytes:
    """The person's emergency history bundle, the Patient identified by record number only."""
    bundle = json.loads(synthetic.emergency_history_bundle(person, bundle_id))
    patient = bundle["entry"][patient_entry(bundle, 1)]["resource"]
    patient["identifier"] = [i for i in patient["identifier"] if i["value"] != person.national_id]
    return json.dumps(bundle).encode()


async def test_one_new_person_registered_twice_in_a_stream_is_one_person(stack: Stack) -> None:
    # Two registrations of one person without a national ID (two record numbers, the birth
    # date's day and month swapped: their match claims differ) among other new patients.
    # Ingest resolves the stream's concurrent messages together (ResolveBatch, ADR 55), so
    # the second registration is matched after the first is filed; resolved at the same
    # moment, each would look for the other before it existed and become a person alone.
    person = next(
        p
        for p in map(synthetic.patient, range(70, 200))
        if p.birth_date.day <= 12 and p.birth_date.day != p.birth_date.month
    )
    swapped = replace(
        person,
        mrn=person.mrn + "-2",
        birth_date=person.birth_date.replace(
            month=person.birth_date.day, day=person.birth_date.month
        ),
    )
    others = [synthetic.patient(300 + n) for n in range(6)]
    messages = [
        request(registered_without_national_id(person, "twice-1"), "twice-1"),
        request(registered_without_national_id(swapped, "twice-2"), "twice-2"),
        *(
            request(synthetic.emergency_history_bundle(other, f"other-{n}"), f"other-{n}")
            for n, other in enumerate(others)
        ),
    ]

    acks = await stack.stream(messages)

    assert [ack.outcome for ack in acks] == [ingest_pb2.OUTCOME_STORED] * len(messages)
    assert acks[1].person_token == acks[0].person_token
    assert len({ack.person_token for ack in acks}) == 1 + len(others)


async def test_an_unexpected_error_in_the_stream_is_internal_for_that_message_and_logged_by_frame(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What CI once met (an SQLite misuse): the log must say where, never what the text held.
    secret = "110108196207304511"
    submit = IngestPipeline._submit

    async def failing(self: IngestPipeline, submission: Any, *args: Any) -> Any:
        if submission.message_id == "boom":
            raise LookupError(f"patient {secret} misplaced")
        return await submit(self, submission, *args)

    monkeypatch.setattr(IngestPipeline, "_submit", failing)
    caplog.set_level(logging.INFO)
    bundle = fixture("fhir_admission_bundle.json")

    async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
        yield request(bundle, "boom")
        yield request(bundle, "fine")

    call = stack.ingest.SubmitStream(requests(), metadata=stack.auth(ENGINE_A))
    boom, fine = [ack async for ack in call]
    assert boom.outcome == ingest_pb2.OUTCOME_REJECTED and boom.rejection.reason == "INTERNAL"
    assert fine.outcome == ingest_pb2.OUTCOME_STORED
    logged = caplog.text
    assert "unhandled LookupError in SubmitStream" in logged
    assert "in failing" in logged and "test_ingest_service.py" in logged  # the frames
    # Frames show source lines (code), never the values the message was made of.
    assert secret not in logged and f"patient {secret}" not in boom.rejection.message


async def test_stream_keeps_the_order_of_one_patients_messages(stack: Stack) -> None:
    # The update carries no national ID and relies on the link the admission makes: run
    # concurrently without ordering, it could reach identity first and be rejected.
    messages = [
        request(fixture("hl7_adt_a01.er7"), "ADT-B-000917", HL7, HOSPITAL_B),
        request(fixture("hl7_adt_a08_custom_delimiters.er7"), "ADT-B-000918", HL7, HOSPITAL_B),
        request(fixture("hl7_oru_r01.er7"), "LAB-B-55120", HL7, HOSPITAL_B),
    ]

    async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
        for message in messages:
            yield message

    call = stack.ingest.SubmitStream(requests(), metadata=stack.auth(ENGINE_B))
    acks = [ack async for ack in call]
    assert [ack.outcome for ack in acks] == [ingest_pb2.OUTCOME_STORED] * 3
    assert acks[0].person_token == acks[1].person_token != acks[2].person_token


async def test_stream_ends_at_a_message_of_another_hospital_after_acking_the_earlier(
    stack: Stack,
) -> None:
    async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
        yield request(fixture("fhir_patient_update.json"), "own-1")
        yield request(fixture("hl7_adt_a01.er7"), "theirs-1", HL7, HOSPITAL_B)
        yield request(fixture("fhir_admission_bundle.json"), "own-2")

    acks: list[ingest_pb2.SubmitResponse] = []
    call = stack.ingest.SubmitStream(requests(), metadata=stack.auth(ENGINE_A))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for ack in call:
            acks.append(ack)
    assert [ack.message_id for ack in acks] == ["own-1"]  # acked before the refusal
    details = error_details(caught.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "HOSPITAL_MISMATCH",
    )
    assert HOSPITAL_B not in (caught.value.details() or "")


async def test_stream_refuses_a_caller_that_may_not_submit(stack: Stack) -> None:
    async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
        yield request(fixture("fhir_patient_update.json"), "x")

    call = stack.ingest.SubmitStream(requests(), metadata=stack.auth(CLINICIAN))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [ack async for ack in call]
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


# -- outages ----------------------------------------------------------------------------------


async def test_identity_unavailable_is_retryable_and_writes_nothing(stack: Stack) -> None:
    async with AsyncExitStack() as exits:
        stack.ingest = await stack.open_ingest(exits, {"identity": closed_address()})
        error = await stack.failure(request(fixture("fhir_admission_bundle.json"), "adm-9"))
        details = error_details(error)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert details.reason == "IDENTITY_UNAVAILABLE"
        assert details.retry_delay is not None and details.retry_delay > 0
        assert await stack.records.get_receipt(HOSPITAL_A, "adm-9") is None

        async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
            yield request(fixture("fhir_admission_bundle.json"), "adm-9")

        (ack,) = [
            a async for a in stack.ingest.SubmitStream(requests(), metadata=stack.auth(ENGINE_A))
        ]
        assert ack.outcome == ingest_pb2.OUTCOME_REJECTED
        assert ack.rejection.reason == "IDENTITY_UNAVAILABLE"
        assert ack.rejection.retryable


async def test_audit_down_after_commit_then_retry_completes_once(stack: Stack) -> None:
    content = fixture("fhir_admission_bundle.json")
    async with AsyncExitStack() as exits:
        stack.ingest = await stack.open_ingest(exits, {"audit": closed_address()})
        error = await stack.failure(request(content, "adm-2"))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(error).reason == "AUDIT_UNAVAILABLE"
    # The records were committed (all of them) before the audit call failed.
    receipt = await stack.records.get_receipt(HOSPITAL_A, "adm-2")
    assert receipt is not None and len(receipt.record_ids) == 8
    assert await stack.events(receipt.person_token) == []

    async with AsyncExitStack() as exits:
        stack.ingest = await stack.open_ingest(exits)
        for _ in range(2):
            retry = await stack.submit(request(content, "adm-2"))
            assert retry.outcome == ingest_pb2.OUTCOME_DUPLICATE
            assert retry.person_token == receipt.person_token
    (event,) = await stack.events(receipt.person_token)
    assert len(event.event.resource_names) == 8
    assert await stack.unappended_audits() == []


async def test_a_crash_after_commit_is_audited_without_a_retry(stack: Stack) -> None:
    content = fixture("fhir_lab_message_bundle.json")
    async with AsyncExitStack() as exits:
        stack.ingest = await stack.open_ingest(exits, {"audit": closed_address()})
        await stack.failure(request(content, "lab-crash"))
    receipt = await stack.records.get_receipt(HOSPITAL_A, "lab-crash")
    assert receipt is not None
    # The hospital never retries. A restarted ingest (its clock past the grace period)
    # finds the stored message without its event and appends it in the background.
    later = datetime.now(UTC) + timedelta(minutes=10)
    async with AsyncExitStack() as exits:
        await stack.open_ingest(exits, now=lambda: later)
        for _ in range(100):
            events = await stack.events(receipt.person_token)
            if events:
                break
            await asyncio.sleep(0.05)
    (event,) = events
    assert event.event.action == audit_pb2.ACTION_WRITE
    assert event.event.actor.subject == ENGINE_A.subject
    assert sorted(event.event.resource_names) == sorted(
        record_name(receipt.person_token, rid) for rid in receipt.record_ids
    )


async def all_stored_records(stack: Stack) -> list[str]:
    """Every record id in the hot store, whoever it belongs to."""
    stored = await stack.records.list_effective_before(datetime.now(UTC) + timedelta(days=1), 10**4)
    return sorted(record.record_id for record in stored)


async def test_key_provider_down_is_retryable_and_writes_nothing(
    stack: Stack, openbao: OpenBao, transit_mount: str
) -> None:
    admission = request(fixture("fhir_admission_bundle.json"), "adm-vault")
    lab = request(fixture("fhir_lab_message_bundle.json"), "lab-vault")
    async with openbao_relay(openbao) as (relay, url), AsyncExitStack() as exits:
        stack.ingest = await stack.open_ingest(
            exits,
            env={
                "HEALTHBANK_KEY_PROVIDER": "vault",
                "HEALTHBANK_VAULT_ADDR": url,
                "HEALTHBANK_VAULT_TOKEN": openbao.root_token,
                "HEALTHBANK_VAULT_TRANSIT_MOUNT": transit_mount,
                # Every seal asks Vault for a data key: the outage shows at once (by default
                # a cached data key would keep sealing for up to a minute).
                "HEALTHBANK_DATA_KEY_CACHE_SECONDS": "0",
            },
        )
        stored = await stack.submit(admission)
        assert stored.outcome == ingest_pb2.OUTCOME_STORED
        await stack.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
        before = await all_stored_records(stack)

        await relay.cut()

        error = await stack.failure(lab)
        details = error_details(error)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert details.reason == "KEY_PROVIDER_UNAVAILABLE"
        assert details.retry_delay is not None and details.retry_delay > 0
        (ack,) = await stack.stream([lab])
        assert ack.outcome == ingest_pb2.OUTCOME_REJECTED
        assert ack.rejection.reason == "KEY_PROVIDER_UNAVAILABLE"
        assert ack.rejection.retryable
        # Nothing of the refused message was written, nor reserved for auditing.
        assert await stack.records.get_receipt(HOSPITAL_A, "lab-vault") is None
        assert await all_stored_records(stack) == before
        assert await stack.unappended_audits() == []
        # A retry of a stored message needs no key: it is still acknowledged.
        again = await stack.submit(admission)
        assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
        await stack.wait_for_health(health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_a_key_provider_that_refuses_is_never_answered_retry(
    stack: Stack, openbao: OpenBao, vault_root: hvac.Client, transit_mount: str
) -> None:
    # ingest's token (the documented policy) is revoked after its first message: no retry
    # succeeds until the deployment's credentials change.
    policy = f"healthbank-{transit_mount}"
    vault_root.sys.create_or_update_policy(name=policy, policy=vault_policy(transit_mount))
    token = vault_root.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]
    admission = request(fixture("fhir_admission_bundle.json"), "adm-revoked")
    lab = request(fixture("fhir_lab_message_bundle.json"), "lab-revoked")
    async with AsyncExitStack() as exits:
        stack.ingest = await stack.open_ingest(
            exits,
            env={
                "HEALTHBANK_KEY_PROVIDER": "vault",
                "HEALTHBANK_VAULT_ADDR": openbao.addr,
                "HEALTHBANK_VAULT_TOKEN": token,
                "HEALTHBANK_VAULT_TRANSIT_MOUNT": transit_mount,
                "HEALTHBANK_DATA_KEY_CACHE_SECONDS": "0",  # every seal asks Vault
            },
        )
        assert (await stack.submit(admission)).outcome == ingest_pb2.OUTCOME_STORED
        before = await all_stored_records(stack)

        vault_root.auth.token.revoke(token)

        details = error_details(await stack.failure(lab))
        assert details.code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert details.reason == "KEY_PROVIDER_REFUSED"
        assert details.retry_delay is None
        (ack,) = await stack.stream([lab])
        assert ack.outcome == ingest_pb2.OUTCOME_REJECTED
        assert ack.rejection.reason == "KEY_PROVIDER_REFUSED"
        assert not ack.rejection.retryable
        assert await stack.records.get_receipt(HOSPITAL_A, "lab-revoked") is None
        assert await all_stored_records(stack) == before
        assert await stack.unappended_audits() == []


@pytest.mark.parametrize("backend", [CASSANDRA])
async def test_storage_down_is_retryable_and_not_serving(stack: Stack) -> None:
    settings = stack.ingest_settings
    proxy = TcpProxy(settings.cassandra_hosts[0], settings.cassandra_port)
    port = await proxy.start()
    admission = request(fixture("fhir_admission_bundle.json"), "adm-db")
    lab = request(fixture("fhir_lab_message_bundle.json"), "lab-db")
    try:
        async with AsyncExitStack() as exits:
            stack.ingest = await stack.open_ingest(
                exits,
                env={
                    "HEALTHBANK_CASSANDRA_HOSTS": "127.0.0.1",
                    "HEALTHBANK_CASSANDRA_PORT": str(port),
                },
            )
            assert (await stack.submit(admission)).outcome == ingest_pb2.OUTCOME_STORED
            await stack.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
            before = await all_stored_records(stack)

            await proxy.cut()

            error = await stack.failure(lab)
            assert_storage_unavailable(error_details(error))
            acks = await stack.stream([lab, admission])
            assert [ack.outcome for ack in acks] == [ingest_pb2.OUTCOME_REJECTED] * 2
            assert {ack.rejection.reason for ack in acks} == {"STORAGE_UNAVAILABLE"}
            assert all(ack.rejection.retryable for ack in acks)
            await stack.wait_for_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        await proxy.cut()
    # Read directly (not through the cut path): nothing of the refused message was written.
    assert await stack.records.get_receipt(HOSPITAL_A, "lab-db") is None
    assert await all_stored_records(stack) == before
    assert await stack.unappended_audits() == []


# -- privacy ----------------------------------------------------------------------------------


async def test_no_plaintext_identifiers_in_the_data_dir(stack: Stack) -> None:
    await stack.submit(request(fixture("fhir_admission_bundle.json"), "adm-0001"))
    await stack.submit(request(fixture("fhir_lab_message_bundle.json"), "lab-7781"))
    await stack.submit(request(fixture("fhir_condition_contained_patient.json"), "c-1"))
    await stack.submit(request(ct_content(), "dicom-0001", DICOM))
    for name, message_id in (
        ("hl7_adt_a01.er7", "ADT-B-000917"),
        ("hl7_adt_a08_custom_delimiters.er7", "ADT-B-000918"),
        ("hl7_oru_r01.er7", "LAB-B-55120"),
    ):
        await stack.submit(request(fixture(name), message_id, HL7, HOSPITAL_B), ENGINE_B)
    # A rejected message must not leave anything behind either.
    await stack.failure(request(b"PID|1||X^^^h^MR|Pennywhistle", "bad", HL7))

    files = [path for path in stack.settings.data_dir.rglob("*") if path.is_file()]
    stored = {str(path.relative_to(stack.settings.data_dir)): path.read_bytes() for path in files}
    settings = stack.ingest_settings
    if settings.storage_backend == "sqlite":
        assert {"records.db", "ingest.db"} <= set(stored)
    else:
        for concern in ("records", "ingest"):
            keyspace = f"{settings.cassandra_keyspace_prefix}_{concern}"
            for table, content in (await keyspace_contents(settings, keyspace)).items():
                stored[f"{keyspace}.{table}"] = content
        assert stored[f"{settings.cassandra_keyspace_prefix}_records.receipts"]
        assert stored[f"{settings.cassandra_keyspace_prefix}_ingest.appended_audits"]
    needles = [value.encode() for value in IDENTIFIERS]
    leaks = [
        (where, needle.decode())
        for where, content in stored.items()
        for needle in needles
        if needle in content
    ]
    assert leaks == []


async def keyspace_contents(settings: Settings, keyspace: str) -> dict[str, bytes]:
    """Every table of a Cassandra keyspace as bytes: blobs as stored, other values as text."""

    def read(session: Session) -> dict[str, bytes]:
        tables = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
        return {
            table.table_name: b"\n".join(
                value if isinstance(value, bytes) else str(value).encode()
                for row in session.execute(f"SELECT * FROM {keyspace}.{table.table_name}")
                for value in row
            )
            for table in tables
        }

    def read_all() -> dict[str, bytes]:
        with cassandra_session(settings.cassandra_hosts, settings.cassandra_port) as session:
            return read(session)

    return await asyncio.to_thread(read_all)


@pytest.mark.parametrize("backend", [CASSANDRA])
async def test_a_retry_finishes_an_attempt_that_died_after_its_claim_under_its_ids(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt claims the message, then its records never reach the node (as if
    # ingest were killed there). Its retry plans fresh record ids and a later clock: it must
    # store the records under the claim's ids, each payload sealed for its own id.
    content = fixture("fhir_lab_message_bundle.json")

    write_batch = CassandraDatabase.execute_batch

    async def lost(self: CassandraDatabase, statements: Any) -> None:
        if self.keyspace.endswith("_records"):
            raise StorageUnavailable("cassandra keyspace records: the node went away")
        await write_batch(self, statements)

    with monkeypatch.context() as patched:
        patched.setattr(CassandraDatabase, "execute_batch", lost)
        error = await stack.failure(request(content, "lab-dead"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    claim = await stack.records.get_receipt(HOSPITAL_A, "lab-dead")
    assert claim is None  # claimed, never committed

    retry = await stack.submit(request(content, "lab-dead"))
    assert retry.outcome == ingest_pb2.OUTCOME_STORED
    receipt = await stack.records.get_receipt(HOSPITAL_A, "lab-dead")
    assert receipt is not None
    assert list(retry.record_names) == [
        record_name(receipt.person_token, rid) for rid in receipt.record_ids
    ]
    stored = await stack.records.list_records(receipt.person_token)
    assert sorted(r.record_id for r in stored) == sorted(receipt.record_ids)
    for record in stored:
        await stack.sealer.open(
            record.sealed_payload, payload_aad(record.person_token, record.record_id)
        )
    again = await stack.submit(request(content, "lab-dead"))
    assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE
    assert list(again.record_names) == list(retry.record_names)
