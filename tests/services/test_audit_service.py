"""The audit service over real gRPC: append, signed heads, proofs verified client-side,
per-person listings, authorization and request validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from engine_support import CASSANDRA
from service_support import (
    NOT_SERVING,
    SERVING,
    BearerAuth,
    cassandra_behind_proxy,
    rpc_error,
    wait_for_health,
)
from service_support import invalid_fields as fields
from service_support import service_settings as make_settings

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import PERSON_TOKEN_RULE, record_name
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.crypto import build_key_provider
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import leaf_bytes, verify_tree_head
from healthbank.rpc import error_details
from healthbank.rpc.clients import open_channel
from services.audit.app import SERVICE_NAME, open_service

# The services these tests start on Cassandra: their keyspaces are migrated first.
CASSANDRA_SERVICES = ("audit",)
PERSON = "a" * 64
OTHER_PERSON = "b" * 64
BASE_TIME = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

SERVICE = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", hospital_id="hospital-a")
COMMITTEE = Principal(PrincipalKind.COMMITTEE, "member-1", purpose=Purpose.OPERATIONS)
AUDITOR = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
PATIENT = Principal(PrincipalKind.PATIENT, PERSON, purpose=Purpose.PATIENT_ACCESS)
OTHER_PATIENT = Principal(PrincipalKind.PATIENT, OTHER_PERSON, purpose=Purpose.PATIENT_ACCESS)


@dataclass
class AuditClient(BearerAuth):
    """A stub on a real channel plus credentials per principal."""

    stub: audit_pb2_grpc.AuditServiceStub
    settings: Settings
    channel: grpc.aio.Channel


@pytest.fixture(params=["sqlite", CASSANDRA])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test runs on each storage backend (conftest.py's ``settings`` follows it)."""
    return str(request.param)


@pytest.fixture
async def audit(settings: Settings) -> AsyncIterator[AuditClient]:
    async with open_service(settings) as host:
        port = await host.start(0)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            yield AuditClient(audit_pb2_grpc.AuditServiceStub(channel), settings, channel)


def access_event(
    person_token: str = PERSON,
    *,
    minutes: int = 0,
    action: int = audit_pb2.ACTION_READ_HISTORY,
    actor_subject: str = "dr-1",
) -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_CLINICIAN,
            subject=actor_subject,
            hospital_id="hospital-a",
            purpose=common_pb2.PURPOSE_OF_USE_TREATMENT,
        ),
        action=action,  # type: ignore[arg-type]
        person_token=person_token,
        resource_names=[record_name(person_token, new_ulid())],
        basis="GRANT",
    )
    event.occur_time.FromDatetime(BASE_TIME + timedelta(minutes=minutes))
    return event


async def append(
    client: AuditClient, event: audit_pb2.AccessEvent
) -> audit_pb2.AppendEventResponse:
    return await client.stub.AppendEvent(
        audit_pb2.AppendEventRequest(event=event), metadata=client.auth(SERVICE)
    )


def as_recorded(event: audit_pb2.AccessEvent, service: str = "record-lookup") -> bytes:
    recorded = audit_pb2.AccessEvent()
    recorded.CopyFrom(event)
    recorded.recorded_by = service
    return leaf_bytes(recorded)


# --- AppendEvent -----------------------------------------------------------------------


async def test_append_returns_leaf_index_and_rfc6962_leaf_hash(audit: AuditClient) -> None:
    first = access_event()
    response = await append(audit, first)
    assert (response.leaf_index, response.tree_size) == (0, 1)
    assert response.leaf_hash == merkle.leaf_hash(as_recorded(first))

    second = await append(audit, access_event(minutes=1))
    assert (second.leaf_index, second.tree_size) == (1, 2)


async def test_append_is_idempotent_by_event_id(audit: AuditClient) -> None:
    event = access_event()
    first = await append(audit, event)
    await append(audit, access_event(minutes=1))
    retry = await append(audit, event)
    assert retry == first
    head = await audit.stub.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=audit.auth(SERVICE)
    )
    assert head.tree_size == 2

    changed = audit_pb2.AccessEvent()
    changed.CopyFrom(event)
    changed.basis = "BREAK_GLASS"
    error = await rpc_error(append(audit, changed))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(error).reason == "EVENT_ID_CONFLICT"


async def test_concurrent_appends_get_distinct_contiguous_leaves(audit: AuditClient) -> None:
    events = [access_event(minutes=i) for i in range(30)]
    # Every event sent twice at once: retries racing the first attempt.
    responses = await asyncio.gather(*(append(audit, e) for e in [*events, *events]))
    by_event: dict[str, set[int]] = {}
    for event, response in zip([*events, *events], responses, strict=True):
        by_event.setdefault(event.event_id, set()).add(response.leaf_index)
    assert all(len(indexes) == 1 for indexes in by_event.values())
    assert sorted(i for indexes in by_event.values() for i in indexes) == list(range(30))
    head = await audit.stub.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=audit.auth(SERVICE)
    )
    assert head.tree_size == 30
    for response in responses[:30]:
        proof = await audit.stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(leaf_index=response.leaf_index, tree_size=30),
            metadata=audit.auth(AUDITOR),
        )
        assert merkle.verify_inclusion(
            response.leaf_hash, response.leaf_index, 30, list(proof.audit_path), head.root_hash
        )


async def test_append_records_the_calling_service(audit: AuditClient) -> None:
    event = access_event()
    event.recorded_by = "record-lookup"
    await append(audit, event)
    listed = await audit.stub.ListAccessEvents(
        audit_pb2.ListAccessEventsRequest(parent=f"persons/{PERSON}"), metadata=audit.auth(AUDITOR)
    )
    assert listed.events[0].event.recorded_by == "record-lookup"

    forged = access_event()
    forged.recorded_by = "ingest"
    assert fields(await rpc_error(append(audit, forged))) == {"event.recorded_by"}


async def test_append_rejects_a_missing_event(audit: AuditClient) -> None:
    error = await rpc_error(
        audit.stub.AppendEvent(audit_pb2.AppendEventRequest(), metadata=audit.auth(SERVICE))
    )
    assert fields(error) == {"event"}


async def test_append_lists_every_violation(audit: AuditClient) -> None:
    error = await rpc_error(
        audit.stub.AppendEvent(
            audit_pb2.AppendEventRequest(event=audit_pb2.AccessEvent(basis="x")),
            metadata=audit.auth(SERVICE),
        )
    )
    assert fields(error) == {
        "event.event_id",
        "event.actor",
        "event.action",
        "event.person_token",
        "event.occur_time",
    }

    event = access_event()
    event.event_id = "not-a-ulid"
    event.actor.kind = common_pb2.PRINCIPAL_KIND_UNSPECIFIED
    event.actor.subject = ""
    event.person_token = "persons/with/slashes"
    event.resource_names.append("")
    error = await rpc_error(append(audit, event))
    assert fields(error) == {
        "event.event_id",
        "event.actor.kind",
        "event.actor.subject",
        "event.person_token",
        "event.resource_names",
    }
    # Nothing was appended by the refused calls.
    head = await audit.stub.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=audit.auth(SERVICE)
    )
    assert head.tree_size == 0


async def test_append_uses_the_shared_name_and_principal_rules(audit: AuditClient) -> None:
    async def violations(event: audit_pb2.AccessEvent) -> list[tuple[str, str]]:
        return error_details(await rpc_error(append(audit, event))).field_violations

    # A record of another person in this person's access history would be a false entry.
    foreign = access_event()
    foreign.resource_names.append(record_name(OTHER_PERSON, new_ulid()))
    assert [field for field, _ in await violations(foreign)] == ["event.resource_names"]
    # Under the person is fine whatever the resource is (grants, break-glass sessions).
    own = access_event()
    own.resource_names.extend([f"persons/{PERSON}", f"persons/{PERSON}/grants/{new_ulid()}"])
    await append(audit, own)

    not_a_token = access_event(person_token="patient-7")
    not_a_token.resource_names[:] = []
    assert await violations(not_a_token) == [("event.person_token", PERSON_TOKEN_RULE)]

    bad_actor = access_event(actor_subject="dr 1")
    bad_actor.actor.purpose = common_pb2.PURPOSE_OF_USE_UNSPECIFIED
    assert [field for field, _ in await violations(bad_actor)] == [
        "event.actor.subject",
        "event.actor.purpose",
    ]


async def test_tree_heads_and_consistency_proofs_need_no_credentials(audit: AuditClient) -> None:
    await append(audit, access_event())
    await append(audit, access_event(minutes=1))
    first = await audit.stub.GetTreeHead(audit_pb2.GetTreeHeadRequest())
    assert first.tree_size == 2 and verify_tree_head(first)
    proof = await audit.stub.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(first_tree_size=1, second_tree_size=2)
    )
    assert proof.second_tree_size == 2
    # Inclusion proofs and the access listing still need someone the table admits.
    error = await rpc_error(
        audit.stub.GetInclusionProof(audit_pb2.GetInclusionProofRequest(leaf_index=0))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_append_is_for_services_only(audit: AuditClient) -> None:
    error = await rpc_error(
        audit.stub.AppendEvent(
            audit_pb2.AppendEventRequest(event=access_event()), metadata=audit.auth(CLINICIAN)
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(
        audit.stub.AppendEvent(audit_pb2.AppendEventRequest(event=access_event()))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# --- GetTreeHead, proofs -----------------------------------------------------------------


async def test_tree_head_of_the_empty_log_is_signed(audit: AuditClient, settings: Settings) -> None:
    head = await audit.stub.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=audit.auth(CLINICIAN)
    )
    assert head.tree_size == 0
    assert head.root_hash == merkle.EMPTY_ROOT
    assert verify_tree_head(head)
    # The key that signs is the key provider's ed25519 key.
    assert head.public_key == await build_key_provider(settings).public_key()


async def test_tree_head_and_consistency_proofs_are_public(audit: AuditClient) -> None:
    # A witness or a patient's app needs no login, and so no PHI access, to hold the log
    # to what it signed.
    for minutes in range(3):
        await append(audit, access_event(minutes=minutes))
    first = await audit.stub.GetTreeHead(audit_pb2.GetTreeHeadRequest())
    assert first.tree_size == 3
    assert verify_tree_head(first)
    await append(audit, access_event(minutes=3))
    second = await audit.stub.GetTreeHead(audit_pb2.GetTreeHeadRequest())
    proof = await audit.stub.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(first_tree_size=3, second_tree_size=4)
    )
    assert merkle.verify_consistency(3, 4, first.root_hash, second.root_hash, list(proof.proof))
    # Entries and inclusion proofs still need credentials.
    error = await rpc_error(
        audit.stub.GetEntries(audit_pb2.GetEntriesRequest(start_index=0, end_index=1))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_inclusion_and_consistency_proofs_verify_client_side(audit: AuditClient) -> None:
    reader = audit.auth(PATIENT)
    events = [access_event(minutes=i) for i in range(13)]
    leaf_hashes: list[bytes] = []
    heads: list[audit_pb2.SignedTreeHead] = []
    for event in events:
        response = await append(audit, event)
        leaf_hashes.append(response.leaf_hash)
        heads.append(await audit.stub.GetTreeHead(audit_pb2.GetTreeHeadRequest(), metadata=reader))

    for size, head in enumerate(heads, start=1):
        assert head.tree_size == size
        assert verify_tree_head(head)
        for index in range(size):
            proof = await audit.stub.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(leaf_index=index, tree_size=size),
                metadata=reader,
            )
            assert proof.leaf_hash == leaf_hashes[index]
            assert merkle.verify_inclusion(
                proof.leaf_hash, index, size, list(proof.audit_path), head.root_hash
            )
            assert not merkle.verify_inclusion(
                leaf_hashes[(index + 1) % size] if size > 1 else b"\x00" * 32,
                index,
                size,
                list(proof.audit_path),
                head.root_hash,
            )

    latest = heads[-1]
    for first in heads:
        proof = await audit.stub.GetConsistencyProof(
            audit_pb2.GetConsistencyProofRequest(first_tree_size=first.tree_size),
            metadata=reader,
        )
        assert proof.second_tree_size == latest.tree_size
        assert merkle.verify_consistency(
            first.tree_size, latest.tree_size, first.root_hash, latest.root_hash, list(proof.proof)
        )

    # tree_size 0 means "the current tree".
    current = await audit.stub.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(leaf_index=4), metadata=reader
    )
    assert current.tree_size == 13
    assert merkle.verify_inclusion(
        current.leaf_hash, 4, 13, list(current.audit_path), latest.root_hash
    )


async def test_inclusion_proof_validation(audit: AuditClient) -> None:
    for i in range(3):
        await append(audit, access_event(minutes=i))
    reader = audit.auth(CLINICIAN)

    async def violations(leaf_index: int, tree_size: int) -> set[str]:
        request = audit_pb2.GetInclusionProofRequest(leaf_index=leaf_index, tree_size=tree_size)
        return fields(await rpc_error(audit.stub.GetInclusionProof(request, metadata=reader)))

    assert await violations(-1, -1) == {"leaf_index", "tree_size"}
    assert await violations(3, 3) == {"leaf_index"}
    assert await violations(0, 4) == {"tree_size"}
    assert await violations(3, 0) == {"leaf_index"}


async def test_consistency_proof_validation(audit: AuditClient) -> None:
    for i in range(3):
        await append(audit, access_event(minutes=i))
    reader = audit.auth(CLINICIAN)

    async def violations(first: int, second: int) -> set[str]:
        request = audit_pb2.GetConsistencyProofRequest(
            first_tree_size=first, second_tree_size=second
        )
        return fields(await rpc_error(audit.stub.GetConsistencyProof(request, metadata=reader)))

    assert await violations(0, -1) == {"first_tree_size", "second_tree_size"}
    assert await violations(3, 2) == {"first_tree_size"}
    assert await violations(1, 4) == {"second_tree_size"}
    assert await violations(4, 0) == {"first_tree_size"}
    same = await audit.stub.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(first_tree_size=3, second_tree_size=3),
        metadata=reader,
    )
    assert list(same.proof) == []


# --- ListAccessEvents --------------------------------------------------------------------


async def test_list_access_events_newest_first_with_pages(audit: AuditClient) -> None:
    # Appended out of time order: the listing follows occur_time, not append order.
    appended: dict[str, int] = {}
    for minutes in (5, 1, 9, 3, 7):
        event = access_event(minutes=minutes)
        appended[event.event_id] = (await append(audit, event)).leaf_index
    await append(audit, access_event(OTHER_PERSON))

    listed: list[audit_pb2.LoggedEvent] = []
    page_token = ""
    pages = 0
    while True:
        page = await audit.stub.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(
                parent=f"persons/{PERSON}", page_size=2, page_token=page_token
            ),
            metadata=audit.auth(PATIENT),
        )
        listed.extend(page.events)
        pages += 1
        page_token = page.next_page_token
        if not page_token:
            break
    assert pages == 3
    listed_minutes = [
        int((e.event.occur_time.ToDatetime(tzinfo=UTC) - BASE_TIME).total_seconds() // 60)
        for e in listed
    ]
    assert listed_minutes == [9, 7, 5, 3, 1]
    assert {e.event.event_id: e.leaf_index for e in listed} == appended
    assert all(e.event.person_token == PERSON for e in listed)

    # Each listed event hashes to its leaf: the patient can check it against a signed head.
    head = await audit.stub.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=audit.auth(PATIENT)
    )
    for logged in listed:
        proof = await audit.stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(
                leaf_index=logged.leaf_index, tree_size=head.tree_size
            ),
            metadata=audit.auth(PATIENT),
        )
        assert merkle.verify_inclusion(
            merkle.leaf_hash(leaf_bytes(logged.event)),
            logged.leaf_index,
            head.tree_size,
            list(proof.audit_path),
            head.root_hash,
        )


async def test_list_access_events_callers(audit: AuditClient) -> None:
    await append(audit, access_event())
    request = audit_pb2.ListAccessEventsRequest(parent=f"persons/{PERSON}")
    for allowed in (PATIENT, COMMITTEE, AUDITOR):
        page = await audit.stub.ListAccessEvents(request, metadata=audit.auth(allowed))
        assert len(page.events) == 1
    for refused in (OTHER_PATIENT, CLINICIAN, SERVICE):
        error = await rpc_error(audit.stub.ListAccessEvents(request, metadata=audit.auth(refused)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(audit.stub.ListAccessEvents(request))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_access_events_validation(audit: AuditClient) -> None:
    for minutes in range(3):
        await append(audit, access_event(minutes=minutes))
    reader = audit.auth(COMMITTEE)

    async def violations(**kwargs: object) -> set[str]:
        request = audit_pb2.ListAccessEventsRequest(**kwargs)  # type: ignore[arg-type]
        return fields(await rpc_error(audit.stub.ListAccessEvents(request, metadata=reader)))

    assert await violations() == {"parent"}
    assert await violations(parent=f"patients/{PERSON}", page_size=501) == {
        "parent",
        "page_size",
    }
    # The audit log lists persons by the one person-token rule: no other ids.
    assert await violations(parent="persons/someone-else") == {"parent"}
    assert await violations(parent=f"persons/{PERSON.upper()}", page_size=501) == {
        "parent",
        "page_size",
    }
    assert await violations(parent="persons/", page_size=-1) == {"parent", "page_size"}
    assert await violations(parent=f"persons/{PERSON}", page_token="garbage") == {"page_token"}

    first = await audit.stub.ListAccessEvents(
        audit_pb2.ListAccessEventsRequest(parent=f"persons/{PERSON}", page_size=1),
        metadata=reader,
    )
    assert first.next_page_token
    # A page token only continues the listing it came from.
    assert await violations(parent=f"persons/{OTHER_PERSON}", page_token=first.next_page_token) == {
        "page_token"
    }


# --- durability ----------------------------------------------------------------------------


async def test_log_survives_a_restart(settings: Settings) -> None:
    async def run(events: Sequence[audit_pb2.AccessEvent]) -> audit_pb2.SignedTreeHead:
        async with open_service(settings) as host:
            port = await host.start(0)
            async with open_channel(f"127.0.0.1:{port}") as channel:
                client = AuditClient(audit_pb2_grpc.AuditServiceStub(channel), settings, channel)
                for event in events:
                    await append(client, event)
                return await client.stub.GetTreeHead(
                    audit_pb2.GetTreeHeadRequest(), metadata=client.auth(SERVICE)
                )

    first_events = [access_event(minutes=i) for i in range(5)]
    before = await run(first_events)
    # A retry after the restart is still recognised; new events continue the tree.
    after = await run([first_events[2], *[access_event(minutes=i) for i in range(5, 9)]])
    assert (before.tree_size, after.tree_size) == (5, 9)
    assert before.public_key == after.public_key
    async with open_service(settings) as host:
        port = await host.start(0)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            proof = await stub.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(first_tree_size=5, second_tree_size=9),
                metadata=AuditClient(stub, settings, channel).auth(SERVICE),
            )
    assert merkle.verify_consistency(5, 9, before.root_hash, after.root_hash, list(proof.proof))


async def test_health_reports_serving_once_ready(audit: AuditClient) -> None:
    await wait_for_health(audit.channel, SERVICE_NAME, SERVING, seconds=5)


# --- Cassandra unreachable ----------------------------------------------------------------


async def test_cassandra_outage_is_not_serving_and_unavailable_then_recovers(
    engines: dict[str, str], keyspace_prefix: str, tmp_path: Path
) -> None:
    direct = make_settings(
        tmp_path,
        {
            "HEALTHBANK_STORAGE_BACKEND": "cassandra",
            "HEALTHBANK_CASSANDRA_HOSTS": engines["HEALTHBANK_CASSANDRA_HOSTS"],
            "HEALTHBANK_CASSANDRA_PORT": engines["HEALTHBANK_CASSANDRA_PORT"],
            "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": keyspace_prefix,
        },
    )
    async with (
        cassandra_behind_proxy(direct, CASSANDRA_SERVICES) as (proxy, settings),
        open_service(settings) as host,
    ):
        port = await host.start(0)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            client = AuditClient(audit_pb2_grpc.AuditServiceStub(channel), settings, channel)
            await wait_for_health(channel, SERVICE_NAME, SERVING)
            assert (await append(client, access_event())).leaf_index == 0

            await proxy.cut()
            await wait_for_health(channel, SERVICE_NAME, NOT_SERVING)
            error = await rpc_error(append(client, access_event()))
            # Retryable, and the log did not change: the client just sends it again.
            assert error.code() == grpc.StatusCode.UNAVAILABLE

            await proxy.start()
            await wait_for_health(channel, SERVICE_NAME, SERVING)
            retried = access_event()
            assert (await append(client, retried)).leaf_index == 1
            assert (await append(client, retried)).leaf_index == 1


# --- GetEntries, who the event says ---------------------------------------------------------

AUDITOR = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
PRIVACY_OFFICER = Principal(PrincipalKind.PRIVACY_OFFICER, "po-1", purpose=Purpose.OPERATIONS)


async def test_get_entries_returns_the_events_in_log_order(audit: AuditClient) -> None:
    events = [access_event(minutes=m) for m in (3, 1, 2, 0)]
    for event in events:
        await append(audit, event)
    entries = await audit.stub.GetEntries(
        audit_pb2.GetEntriesRequest(start_index=1, end_index=4), metadata=audit.auth(AUDITOR)
    )
    assert [entry.leaf_index for entry in entries.entries] == [1, 2, 3]
    for entry, sent in zip(entries.entries, events[1:], strict=True):
        assert entry.event.event_id == sent.event_id
        assert entry.event.recorded_by == "record-lookup"
        # The stored bytes are the event's canonical bytes: the leaf a verifier recomputes.
        assert entry.leaf == as_recorded(sent) == leaf_bytes(entry.event)


async def test_get_entries_validation_and_callers(audit: AuditClient) -> None:
    await append(audit, access_event())
    reader = audit.auth(AUDITOR)

    async def violations(start: int, end: int) -> set[str]:
        request = audit_pb2.GetEntriesRequest(start_index=start, end_index=end)
        return fields(await rpc_error(audit.stub.GetEntries(request, metadata=reader)))

    assert await violations(-1, -1) == {"start_index", "end_index"}
    assert await violations(1, 1) == {"end_index"}
    assert await violations(0, 2) == {"end_index"}  # beyond the tree
    request = audit_pb2.GetEntriesRequest(start_index=0, end_index=1)
    for allowed in (AUDITOR, PRIVACY_OFFICER, COMMITTEE):
        assert len((await audit.stub.GetEntries(request, metadata=audit.auth(allowed))).entries)
    # No service needs whole entries (least privilege; docs/authorization.md).
    for refused in (PATIENT, CLINICIAN, SERVICE):
        error = await rpc_error(audit.stub.GetEntries(request, metadata=audit.auth(refused)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_service_cannot_name_another_service_as_the_actor(audit: AuditClient) -> None:
    forged = access_event()
    forged.actor.CopyFrom(
        common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_SERVICE,
            subject="ingest",
            purpose=common_pb2.PURPOSE_OF_USE_OPERATIONS,
        )
    )
    assert fields(await rpc_error(append(audit, forged))) == {"event.actor.subject"}
    # Itself, or the hospital engine (of a hospital) it served, it may name.
    own = access_event()
    own.actor.CopyFrom(forged.actor)
    own.actor.subject = "record-lookup"
    await append(audit, own)
    engine = access_event()
    engine.actor.CopyFrom(forged.actor)
    engine.actor.kind = common_pb2.PRINCIPAL_KIND_HOSPITAL_ENGINE
    engine.actor.subject = "hospital-a-engine"
    engine.actor.hospital_id = "hospital-a"
    await append(audit, engine)
    # A service cannot pass itself off as a hospital's engine-less service either.
    disguised = access_event()
    disguised.actor.CopyFrom(forged.actor)
    disguised.actor.hospital_id = "hospital-a"
    assert fields(await rpc_error(append(audit, disguised))) == {"event.actor.subject"}
