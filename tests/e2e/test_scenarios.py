"""End to end: the seven services as separate processes, scenarios A and B over
real gRPC channels, then a search for patient identifiers in every file and log
line the stack wrote."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from healthbank import synthetic
from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.demo import DemoClient, scenario_a, scenario_b, submit
from healthbank.devstack import LocalStack
from healthbank.record_lookup.v1 import record_lookup_pb2

AUTH_SECRET = "e2e-auth-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("e2e-stack")
    stack = LocalStack(data_dir, env={"HEALTHBANK_AUTH_SECRET": AUTH_SECRET})
    stack.start()
    yield stack
    codes = stack.stop()
    # Every service drained and exited cleanly on SIGTERM.
    assert codes == dict.fromkeys(codes, 0)


async def test_scenarios_a_and_b(stack: LocalStack) -> None:
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
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


def _identifiers(person: synthetic.Patient) -> list[str]:
    return [
        person.family_name,
        person.given_name,
        person.national_id,
        person.phone,
    ]


async def test_no_identifier_in_files_or_logs(stack: LocalStack) -> None:
    """After ingesting known patients, no name, ID number or phone is anywhere in plaintext:
    not in the SQLite files, the archive, the keyring, nor any service's log."""
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    people = [synthetic.patient(10 + i) for i in range(3)]
    try:
        for person in people:
            adt_id = f"adt-{person.mrn}"
            adt = synthetic.adt_a04(person, adt_id, synthetic.HOSPITAL_B)
            await submit(client, synthetic.HOSPITAL_B, common_pb2.SOURCE_FORMAT_HL7V2, adt, adt_id)
            a = await scenario_a(client, person)
            await scenario_b(client, person, a.person_token)
    finally:
        await client.close()
    needles = [value.encode() for person in people for value in _identifiers(person)]
    files = [path for path in stack.data_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".log" for path in files)
    leaks = [
        (str(path.relative_to(stack.data_dir)), needle.decode())
        for path in files
        for needle in needles
        if needle in path.read_bytes()
    ]
    assert leaks == []
