"""End to end: the seven services as separate processes, scenarios A and B over real
gRPC channels, then a search for patient identifiers in every file, log line and (on
the real engines) Cassandra row the stack wrote. Runs on embedded defaults and on
Cassandra + OpenBao + Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_support import (
    AUTH_SECRET,
    cassandra_rows_containing,
    engine_data_dir,
    files_containing,
    identifiers,
)
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient, scenario_a, scenario_b, submit
from healthbank.dev.devstack import LocalStack, check_health
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc.clients import open_channel


async def test_scenarios_a_and_b(any_stack: LocalStack) -> None:
    client = DemoClient(any_stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(3)
    try:
        a = await scenario_a(client, person)
        b = await scenario_b(client, person, a.person_token)
    finally:
        await client.close()

    # A: denied before the grant, the CT and the bundle's records visible after it.
    assert a.denied_code == "PERMISSION_DENIED"
    assert a.denied_reason == "NO_GRANT"
    assert [outcome for _, outcome, _ in a.submitted] == ["OUTCOME_STORED", "OUTCOME_STORED"]
    categories = {record.category for record in a.history}
    assert common_pb2.RECORD_CATEGORY_IMAGING in categories
    assert common_pb2.RECORD_CATEGORY_ALLERGY in categories
    imaging = [r for r in a.history if r.category == common_pb2.RECORD_CATEGORY_IMAGING]
    assert imaging[0].source_hospital == "hospital-a"
    assert imaging[0].blob_name.startswith("blobs/")
    assert all(r.person_token == a.person_token for r in a.history)

    # B: the high-criticality penicillin allergy makes the light RED; the surgery is listed.
    assert b.summary.light == record_lookup_pb2.LIGHT_RED
    assert [f.code.code for f in b.summary.allergies] == ["764146007"]
    assert [f.code.code for f in b.summary.surgeries] == ["80146002"]
    emergency = [e for e in b.access_events if e.event.action == audit_pb2.ACTION_READ_EMERGENCY]
    assert len(emergency) == 1
    assert emergency[0].event.flagged_for_review
    assert emergency[0].leaf_index == b.summary.audit_leaf_index
    assert b.inclusion_verified


async def test_a_patient_known_only_by_mrn_is_one_person_and_linked_later(
    any_stack: LocalStack,
) -> None:
    """A bundle whose Patient has only the hospital MRN is stored under one person; the
    same MRN later with the national ID links the ID to that person, so an emergency swipe
    of the ID card finds the records (and the lookup is audited)."""
    client = DemoClient(any_stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(21, mrn_prefix="N")
    fhir = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
    with_id = synthetic.emergency_history_bundle(person, "noid-2")
    bundle = json.loads(with_id)
    patient = bundle["entry"][0]["resource"]
    patient["identifier"] = [
        item for item in patient["identifier"] if item.get("system") != synthetic.NATIONAL_ID_SYSTEM
    ]
    assert person.national_id not in json.dumps(bundle)
    try:
        first = await submit(
            client, synthetic.HOSPITAL_A, fhir, json.dumps(bundle).encode(), "noid-1"
        )
        assert first.outcome == ingest_pb2.OUTCOME_STORED
        assert len(first.record_names) == 3
        linked = await submit(client, synthetic.HOSPITAL_A, fhir, with_id, "noid-2")
        assert linked.person_token == first.person_token
        b = await scenario_b(client, person, first.person_token)
    finally:
        await client.close()
    assert b.summary.person_token == first.person_token
    assert b.summary.light == record_lookup_pb2.LIGHT_RED
    actions = [logged.event.action for logged in b.access_events]
    assert actions.count(audit_pb2.ACTION_LOOKUP_NATIONAL_ID) == 1
    assert actions.count(audit_pb2.ACTION_READ_EMERGENCY) == 1


async def test_no_identifier_in_files_logs_or_rows(
    any_stack: LocalStack, request: pytest.FixtureRequest
) -> None:
    """After ingesting known patients, no name, ID number or phone is anywhere in plaintext:
    not in the SQLite files, the archive, the keyring, any service's log, and on the real
    engines not in any Cassandra row, SSTable, commit log or OpenBao file."""
    client = DemoClient(any_stack.addresses, AUTH_SECRET.encode())
    people = [synthetic.patient(10 + i) for i in range(3)]
    try:
        for person in people:
            adt_id = f"adt-{person.mrn}"
            adt = synthetic.adt_a04(person, adt_id, synthetic.HOSPITAL_B)
            ack = await submit(
                client, synthetic.HOSPITAL_B, common_pb2.SOURCE_FORMAT_HL7V2, adt, adt_id
            )
            assert ack.outcome == 1  # OUTCOME_STORED
            a = await scenario_a(client, person)
            await scenario_b(client, person, a.person_token)
    finally:
        await client.close()
    needles = identifiers(people)
    # Every service wrote a log (the scan below reads them); on Cassandra, migrate too.
    logs = {path.stem for path in any_stack.data_dir.rglob("*.log") if path.stat().st_size > 0}
    assert logs - {"migrate"} == set(EXPECTED_SERVICES)
    assert files_containing(any_stack.data_dir, needles) == []
    if any_stack.env.get("HEALTHBANK_STORAGE_BACKEND") == "cassandra":
        engines = request.getfixturevalue("engines")
        prefix = any_stack.env["HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX"]
        tables, hits = cassandra_rows_containing(engines, prefix, needles)
        assert tables >= 10
        assert hits == []
        engine_files = engine_data_dir(request.getfixturevalue("engines_tool"))
        assert files_containing(engine_files, needles, skip=("lib",)) == []


EXPECTED_SERVICES = {
    "ingest": "healthbank.ingest.v1.IngestService",
    "identity": "healthbank.identity.v1.IdentityService",
    "consent": "healthbank.consent.v1.ConsentService",
    "record-lookup": "healthbank.record_lookup.v1.RecordLookupService",
    "archive": "healthbank.archive.v1.ArchiveService",
    "audit": "healthbank.audit.v1.AuditService",
    "ai-alert": "healthbank.ai_alert.v1.AiAlertService",
}


async def test_every_service_is_serving_and_reflected(any_stack: LocalStack) -> None:
    for name, address in any_stack.addresses.items():
        assert await check_health(address) == "SERVING"
        async with open_channel(address) as channel:
            stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        listed = {s.name for s in responses[0].list_services_response.service}
        assert {EXPECTED_SERVICES[name], "grpc.health.v1.Health"} <= listed


async def test_a_new_allergy_shows_in_the_next_emergency_summary(any_stack: LocalStack) -> None:
    """Record-lookup keeps summaries in its cache; an allergy stored by ingest (another
    process) must show in the very next summary, on embedded defaults as on Redis."""
    client = DemoClient(any_stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(26)
    try:
        before = await scenario_a(client, person)
        first = await scenario_b(client, person, before.person_token)  # now cached
        assert len(first.summary.allergies) == 1
        adt_id = f"adt-{person.mrn}"
        adt = synthetic.adt_a04(person, adt_id, synthetic.HOSPITAL_B)
        ack = await submit(
            client, synthetic.HOSPITAL_B, common_pb2.SOURCE_FORMAT_HL7V2, adt, adt_id
        )
        assert ack.outcome == ingest_pb2.OUTCOME_STORED
        second = await scenario_b(client, person, before.person_token)
        assert len(second.summary.allergies) == 2
    finally:
        await client.close()
