"""AppendEvents over real gRPC: many events in one call share the group commit with single
appends, keep their order, stay idempotent, and are refused all together when one is bad."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from service_support import BearerAuth, both_backends, failure

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import record_name
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.crypto import LocalKeyring
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import leaf_bytes, verify_tree_head
from healthbank.rpc.clients import open_channel
from services.audit.app import open_service
from services.audit.log import AuditLog
from services.audit.store import SqliteAuditStore

# The services these tests start on Cassandra: their keyspaces are migrated first.
CASSANDRA_SERVICES = ("audit",)
PERSON = "c" * 64
OTHER = "d" * 64
INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", hospital_id="hospital-a")


@dataclass
class AuditClient(BearerAuth):
    stub: audit_pb2_grpc.AuditServiceStub
    settings: Settings


@pytest.fixture
async def audit(settings: Settings) -> AsyncIterator[AuditClient]:
    async with open_service(settings) as host:
        port = await host.start(0)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            yield AuditClient(audit_pb2_grpc.AuditServiceStub(channel), settings)


def write_event(person: str = PERSON, minute: int = 0) -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_HOSPITAL_ENGINE,
            subject="engine-a",
            hospital_id="hospital-a",
            purpose=common_pb2.PURPOSE_OF_USE_TREATMENT,
        ),
        action=audit_pb2.ACTION_WRITE,
        person_token=person,
        resource_names=[record_name(person, new_ulid())],
    )
    event.occur_time.FromDatetime(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=minute))
    return event


def recorded_leaf(event: audit_pb2.AccessEvent) -> bytes:
    recorded = audit_pb2.AccessEvent()
    recorded.CopyFrom(event)
    recorded.recorded_by = "ingest"
    return leaf_bytes(recorded)


async def append_events(
    client: AuditClient, events: list[audit_pb2.AccessEvent]
) -> audit_pb2.AppendEventsResponse:
    return await client.stub.AppendEvents(
        audit_pb2.AppendEventsRequest(events=events), metadata=client.auth(INGEST)
    )


async def tree_size(client: AuditClient) -> int:
    head = await client.stub.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=client.auth(INGEST)
    )
    return head.tree_size


@both_backends
async def test_a_batch_lands_in_order_with_single_appends_and_a_retry_answers_the_same(
    audit: AuditClient,
) -> None:
    batch = [write_event(PERSON if i % 2 else OTHER, i) for i in range(30)]
    singles = [write_event(minute=100 + i) for i in range(20)]
    responses = await asyncio.gather(
        append_events(audit, batch),
        *(
            audit.stub.AppendEvent(
                audit_pb2.AppendEventRequest(event=event), metadata=audit.auth(INGEST)
            )
            for event in singles
        ),
    )
    batch_results = list(responses[0].results)
    indexes = [result.leaf_index for result in batch_results]
    # The batch keeps its order; together with the singles every index is used once.
    assert indexes == sorted(indexes)
    every = indexes + [response.leaf_index for response in responses[1:]]
    assert sorted(every) == list(range(50))
    for event, result in zip(batch, batch_results, strict=True):
        assert result.leaf_hash == merkle.leaf_hash(recorded_leaf(event))
        assert result.tree_size == result.leaf_index + 1
    # A retry of the batch (with a new event and a repeated id inside) appends only the new one.
    extra = write_event(minute=999)
    again = await append_events(audit, [*batch[:3], extra, batch[0]])
    assert [r.leaf_index for r in again.results] == [*indexes[:3], 50, indexes[0]]
    assert await tree_size(audit) == 51


async def test_one_invalid_event_refuses_the_whole_batch(audit: AuditClient) -> None:
    bad = write_event()
    bad.person_token = "not-a-token"
    details = await failure(append_events(audit, [write_event(), bad]))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].person_token" in [name for name, _ in details.field_violations]
    assert await tree_size(audit) == 0
    empty = await failure(append_events(audit, []))
    assert [name for name, _ in empty.field_violations] == ["events"]


async def test_only_services_append_batches(audit: AuditClient) -> None:
    details = await failure(
        audit.stub.AppendEvents(
            audit_pb2.AppendEventsRequest(events=[write_event()]), metadata=audit.auth(CLINICIAN)
        )
    )
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert await tree_size(audit) == 0


async def test_heads_are_signed_at_a_steady_interval_while_the_tree_grows(
    tmp_path: Path,
) -> None:
    store = await SqliteAuditStore(tmp_path / "audit.db").open()
    keys = LocalKeyring(tmp_path / "keyring.json", "steady-heads", scrypt_n=2**10)
    log = AuditLog(store, keys, lambda: datetime.now(UTC))
    signer = asyncio.create_task(log.sign_heads(timedelta(milliseconds=10)))
    try:
        for size in range(1, 4):
            # Appends ask for no head; the background signer covers each new size by itself.
            await log.append(write_event(minute=size))
            for _ in range(500):
                head = log.latest_head
                if head is not None and head.tree_size == size:
                    break
                await asyncio.sleep(0.01)
            assert head is not None and head.tree_size == size
            signed = audit_pb2.SignedTreeHead(
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                signature=head.signature,
                public_key=head.public_key,
            )
            signed.timestamp.FromDatetime(head.timestamp)
            assert verify_tree_head(signed)
    finally:
        signer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await signer
        await store.close()
