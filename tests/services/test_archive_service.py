"""The archive service over real gRPC: blobs, tiering out of the shared hot store,
fetching cold records, crash-safe re-tiering, corruption and request validation."""

from __future__ import annotations

import hashlib
import os
import threading
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
    Metadata,
    auth_metadata,
    cassandra_behind_proxy,
    rpc_error,
    wait_for_health,
)
from service_support import invalid_fields as fields

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import PERSON_TOKEN_RULE
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings, load_settings
from healthbank.core.ids import new_ulid
from healthbank.records import MessageReceipt, RecordStore, StoredRecord, open_record_store
from healthbank.rpc import error_details
from healthbank.rpc.clients import open_channel
from services.archive.app import SERVICE_NAME, open_service

# The services these tests start on Cassandra: their keyspaces are migrated first.
CASSANDRA_SERVICES = ("archive",)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CUTOFF = datetime(2020, 1, 1, tzinfo=UTC)
PERSON = "a" * 64
OTHER_PERSON = "b" * 64
MIB = 1024 * 1024

OPERATOR = Principal(PrincipalKind.SERVICE, "archive-tiering", purpose=Purpose.OPERATIONS)
INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
READER = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", hospital_id="hospital-a")


@dataclass
class ArchiveClient:
    """A stub on a real channel, credentials, and the shared hot store of the data dir."""

    stub: archive_pb2_grpc.ArchiveServiceStub
    settings: Settings
    hot: RecordStore
    channel: grpc.aio.Channel

    def auth(self, principal: Principal = OPERATOR) -> Metadata:
        return auth_metadata(self.settings, principal)

    @property
    def archive_dir(self) -> Path:
        return self.settings.data_dir / "archive"


@pytest.fixture(params=["sqlite", CASSANDRA])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test runs on each storage backend (conftest.py's ``settings`` follows it)."""
    return str(request.param)


@pytest.fixture
async def archive(settings: Settings) -> AsyncIterator[ArchiveClient]:
    async with open_service(settings, now=lambda: NOW) as host:
        port = await host.start(0)
        # The same shared hot store the service opened (file or keyspace).
        hot = await open_record_store(settings)
        try:
            async with open_channel(f"127.0.0.1:{port}") as channel:
                yield ArchiveClient(
                    archive_pb2_grpc.ArchiveServiceStub(channel), settings, hot, channel
                )
        finally:
            await hot.close()


async def stream_error(stream: AsyncIterator[object]) -> tuple[list[object], grpc.aio.AioRpcError]:
    received: list[object] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in stream:
            received.append(message)
    return received, caught.value


# --- blobs ----------------------------------------------------------------------------------


async def put_blob(
    client: ArchiveClient, content: bytes, person_token: str = PERSON
) -> archive_pb2.Blob:
    return await client.stub.PutBlob(
        archive_pb2.PutBlobRequest(
            person_token=person_token, content_type="application/dicom", content=content
        ),
        metadata=client.auth(INGEST),
    )


def blob_files(client: ArchiveClient) -> list[Path]:
    return sorted(path for path in (client.archive_dir / "blobs").rglob("*") if path.is_file())


async def test_put_blob_is_content_addressed_and_idempotent(archive: ArchiveClient) -> None:
    content = os.urandom(2 * MIB + 12345)
    sha = hashlib.sha256(content).hexdigest()
    blob = await put_blob(archive, content)
    assert blob == archive_pb2.Blob(
        name=f"blobs/{sha}",
        sha256=sha,
        size_bytes=len(content),
        content_type="application/dicom",
        person_token=PERSON,
    )
    path = archive.archive_dir / "blobs" / sha[:2] / sha
    assert path.read_bytes() == content
    assert blob_files(archive) == [path]

    assert await put_blob(archive, content) == blob
    assert blob_files(archive) == [path]

    # The same bytes claimed for another person are refused, not silently re-owned.
    error = await rpc_error(put_blob(archive, content, OTHER_PERSON))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(error).reason == "BLOB_METADATA_CONFLICT"


async def test_get_blob_streams_verified_chunks(archive: ArchiveClient) -> None:
    content = os.urandom(2 * MIB + 7)
    blob = await put_blob(archive, content)
    responses = [
        response
        async for response in archive.stub.GetBlob(
            archive_pb2.GetBlobRequest(name=blob.name), metadata=archive.auth(READER)
        )
    ]
    assert [len(r.chunk) for r in responses] == [MIB, MIB, 7]
    assert responses[0].blob == blob
    assert all(not r.HasField("blob") for r in responses[1:])
    assert b"".join(r.chunk for r in responses) == content


async def test_get_blob_detects_corruption(archive: ArchiveClient) -> None:
    content = os.urandom(2 * MIB + 7)
    blob = await put_blob(archive, content)
    path = archive.archive_dir / "blobs" / blob.sha256[:2] / blob.sha256
    damaged = bytearray(content)
    damaged[MIB + 5] ^= 0x01
    path.write_bytes(bytes(damaged))

    received, error = await stream_error(
        archive.stub.GetBlob(
            archive_pb2.GetBlobRequest(name=blob.name), metadata=archive.auth(READER)
        )
    )
    assert error.code() == grpc.StatusCode.DATA_LOSS
    assert error_details(error).reason == "BLOB_CORRUPT"
    # The stream never looked complete: the final chunk was held back.
    assert len(received) < 3

    path.unlink()
    _, error = await stream_error(
        archive.stub.GetBlob(
            archive_pb2.GetBlobRequest(name=blob.name), metadata=archive.auth(READER)
        )
    )
    assert error.code() == grpc.StatusCode.DATA_LOSS

    # Storing the content again repairs the missing file.
    assert await put_blob(archive, content) == blob
    assert path.read_bytes() == content


async def test_get_blob_not_found_and_malformed(archive: ArchiveClient) -> None:
    unknown = "blobs/" + hashlib.sha256(b"never stored").hexdigest()
    _, error = await stream_error(
        archive.stub.GetBlob(
            archive_pb2.GetBlobRequest(name=unknown), metadata=archive.auth(READER)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(error).reason == "BLOB_NOT_FOUND"
    for name in ("", "blobs/xyz", "blobs/" + "A" * 64, "records/" + "a" * 64):
        _, error = await stream_error(
            archive.stub.GetBlob(
                archive_pb2.GetBlobRequest(name=name), metadata=archive.auth(READER)
            )
        )
        assert fields(error) == {"name"}


async def test_put_blob_validation(archive: ArchiveClient) -> None:
    error = await rpc_error(
        archive.stub.PutBlob(archive_pb2.PutBlobRequest(), metadata=archive.auth(INGEST))
    )
    assert fields(error) == {"person_token", "content_type", "content"}
    error = await rpc_error(
        archive.stub.PutBlob(
            archive_pb2.PutBlobRequest(
                person_token="has/slash", content_type="not a mime type", content=b"x"
            ),
            metadata=archive.auth(INGEST),
        )
    )
    assert fields(error) == {"person_token", "content_type"}
    # Person tokens follow the one rule of every service: 64 lowercase hex digits.
    for not_a_token in ("patient-7", PERSON.upper(), PERSON[:-1]):
        error = await rpc_error(
            archive.stub.PutBlob(
                archive_pb2.PutBlobRequest(
                    person_token=not_a_token, content_type="application/dicom", content=b"x"
                ),
                metadata=archive.auth(INGEST),
            )
        )
        assert error_details(error).field_violations == [("person_token", PERSON_TOKEN_RULE)]
    assert blob_files(archive) == []


# --- tiering and fetching ------------------------------------------------------------------


def hot_record(person_token: str, effective: datetime, index: int) -> StoredRecord:
    return StoredRecord(
        record_id=new_ulid(effective),
        person_token=person_token,
        source_hospital="hospital-a",
        source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
        message_id=f"msg-{person_token[:4]}-{index}",
        source_version="1",
        content_hash=hashlib.sha256(f"{person_token}{index}".encode()).hexdigest(),
        category=common_pb2.RECORD_CATEGORY_OBSERVATION,
        code_system="http://loinc.org",
        code="718-7",
        code_display="Hemoglobin",
        effective_time=effective,
        status="final",
        sealed_payload=os.urandom(200 + index),
    )


async def seed(
    client: ArchiveClient, person_token: str, effective_times: Sequence[datetime]
) -> list[StoredRecord]:
    records = [hot_record(person_token, moment, i) for i, moment in enumerate(effective_times)]
    await client.hot.put_message(
        MessageReceipt(
            hospital_id="hospital-a",
            message_id=new_ulid(),
            content_hash=hashlib.sha256(os.urandom(8)).hexdigest(),
            person_token=person_token,
            record_ids=tuple(r.record_id for r in records),
        ),
        records,
        [],
    )
    return records


async def tier(
    client: ArchiveClient, cutoff: datetime = CUTOFF, max_records: int = 0
) -> archive_pb2.TierRecordsResponse:
    request = archive_pb2.TierRecordsRequest(max_records=max_records)
    request.cutoff.FromDatetime(cutoff)
    return await client.stub.TierRecords(request, metadata=client.auth())


async def fetch(
    client: ArchiveClient,
    person_token: str = PERSON,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[archive_pb2.FetchRecordsResponse]:
    request = archive_pb2.FetchRecordsRequest(person_token=person_token)
    if start is not None:
        request.effective.start.FromDatetime(start)
    if end is not None:
        request.effective.end.FromDatetime(end)
    return [item async for item in client.stub.FetchRecords(request, metadata=client.auth(READER))]


def years(*values: int) -> list[datetime]:
    # Millisecond times: the hot store keeps no finer precision on Cassandra.
    return [datetime(value, 3, 14, 15, 9, 26, 535000, tzinfo=UTC) for value in values]


async def test_tier_then_fetch_then_hot_store_no_longer_has_them(archive: ArchiveClient) -> None:
    old = await seed(archive, PERSON, years(2016, 2012, 2018))
    recent = await seed(archive, PERSON, years(2022, 2024))
    other_old = await seed(archive, OTHER_PERSON, years(2014))

    response = await tier(archive)
    assert response.records_moved == 4
    # One segment per person and year (ADR 31).
    assert len(response.segment_names) == 4
    for name in response.segment_names:
        segment_id = name.removeprefix("segments/")
        assert (archive.archive_dir / "segments" / f"{segment_id}.seg").is_file()

    # The hot store kept only what is newer than the cutoff.
    hot = await archive.hot.list_records(PERSON)
    assert [r.record_id for r in hot] == [r.record_id for r in recent]
    assert await archive.hot.list_records(OTHER_PERSON) == []

    cold = await fetch(archive)
    expected = sorted(old, key=lambda r: r.effective_time)
    assert [item.record.record_id for item in cold] == [r.record_id for r in expected]
    for item, original in zip(cold, expected, strict=True):
        # Payloads stay sealed, byte for byte; metadata survives; no plaintext.
        assert item.sealed_payload == original.sealed_payload
        assert item.record.tier == common_pb2.TIER_COLD
        assert item.record.person_token == PERSON
        assert item.record.name == original.name
        assert item.record.effective_time.ToDatetime(tzinfo=UTC) == original.effective_time
        assert item.record.code.code == original.code
        assert item.record.source.content_hash == original.content_hash
        assert item.record.fhir_json == b""
    other = await fetch(archive, OTHER_PERSON)
    assert [item.record.record_id for item in other] == [other_old[0].record_id]

    # Interval filter: [start, end).
    window = await fetch(archive, start=years(2012)[0], end=years(2018)[0])
    assert [i.record.record_id for i in window] == [r.record_id for r in expected[:2]]
    assert await fetch(archive, "c" * 64) == []


async def test_re_tiering_is_idempotent(archive: ArchiveClient) -> None:
    await seed(archive, PERSON, years(2010, 2011, 2012))
    assert (await tier(archive)).records_moved == 3
    again = await tier(archive)
    assert (again.records_moved, list(again.segment_names)) == (0, [])
    assert len(await fetch(archive)) == 3


async def test_retry_after_a_crash_before_the_hot_delete_makes_no_duplicates(
    archive: ArchiveClient,
) -> None:
    records = await seed(archive, PERSON, years(2010, 2011, 2012))
    first = await tier(archive)
    assert first.records_moved == 3
    # The state a crash between "indexed" and "deleted from hot" leaves: the same
    # records (same record ids) are cold and still hot.
    await archive.hot.put_message(
        MessageReceipt("hospital-a", new_ulid(), "f" * 64, PERSON, ()), records, []
    )
    assert len(await archive.hot.list_records(PERSON)) == 3

    retry = await tier(archive)
    assert retry.records_moved == 3
    assert list(retry.segment_names) == []  # nothing archived twice
    assert await archive.hot.list_records(PERSON) == []
    cold = await fetch(archive)
    assert [i.record.record_id for i in cold] == [r.record_id for r in records]
    segments = list((archive.archive_dir / "segments").glob("*.seg"))
    assert len(segments) == 3  # one per year, none written by the retry


async def test_tier_respects_max_records(archive: ArchiveClient) -> None:
    await seed(archive, PERSON, years(2010, 2011, 2012, 2013, 2014))
    first = await tier(archive, max_records=2)
    assert first.records_moved == 2
    assert len(await archive.hot.list_records(PERSON)) == 3
    rest = await tier(archive, max_records=10)
    assert rest.records_moved == 3
    cold = await fetch(archive)
    assert [i.record.effective_time.ToDatetime(tzinfo=UTC).year for i in cold] == [
        2010,
        2011,
        2012,
        2013,
        2014,
    ]


async def test_fetch_detects_a_damaged_segment(archive: ArchiveClient) -> None:
    await seed(archive, PERSON, years(2010, 2011))
    response = await tier(archive)
    segment_id = response.segment_names[0].removeprefix("segments/")
    path = archive.archive_dir / "segments" / f"{segment_id}.seg"
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))

    request = archive_pb2.FetchRecordsRequest(person_token=PERSON)
    received, error = await stream_error(
        archive.stub.FetchRecords(request, metadata=archive.auth(READER))
    )
    assert received == []
    assert error.code() == grpc.StatusCode.DATA_LOSS
    assert error_details(error).reason == "SEGMENT_CORRUPT"


async def test_tier_validation(archive: ArchiveClient) -> None:
    error = await rpc_error(
        archive.stub.TierRecords(
            archive_pb2.TierRecordsRequest(max_records=-1), metadata=archive.auth()
        )
    )
    assert fields(error) == {"cutoff", "max_records"}
    request = archive_pb2.TierRecordsRequest(max_records=100_001)
    request.cutoff.FromDatetime(NOW + timedelta(days=1))
    error = await rpc_error(archive.stub.TierRecords(request, metadata=archive.auth()))
    assert fields(error) == {"cutoff", "max_records"}


async def test_fetch_validation(archive: ArchiveClient) -> None:
    request = archive_pb2.FetchRecordsRequest()
    request.effective.start.FromDatetime(years(2015)[0])
    request.effective.end.FromDatetime(years(2010)[0])
    _, error = await stream_error(archive.stub.FetchRecords(request, metadata=archive.auth(READER)))
    assert fields(error) == {"person_token", "effective.end"}


async def test_every_rpc_is_for_services_only(archive: ArchiveClient) -> None:
    clinician = archive.auth(CLINICIAN)
    cutoff_request = archive_pb2.TierRecordsRequest()
    cutoff_request.cutoff.FromDatetime(CUTOFF)
    calls = [
        lambda md: archive.stub.PutBlob(
            archive_pb2.PutBlobRequest(
                person_token=PERSON, content_type="application/dicom", content=b"x"
            ),
            metadata=md,
        ),
        lambda md: archive.stub.TierRecords(cutoff_request, metadata=md),
    ]
    streams = [
        lambda md: archive.stub.GetBlob(
            archive_pb2.GetBlobRequest(name="blobs/" + "a" * 64), metadata=md
        ),
        lambda md: archive.stub.FetchRecords(
            archive_pb2.FetchRecordsRequest(person_token=PERSON), metadata=md
        ),
    ]
    for call in calls:
        assert (await rpc_error(call(clinician))).code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await rpc_error(call(()))).code() == grpc.StatusCode.UNAUTHENTICATED
    for stream in streams:
        _, error = await stream_error(stream(clinician))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        _, error = await stream_error(stream(()))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_reports_serving_once_ready(archive: ArchiveClient) -> None:
    await wait_for_health(archive.channel, SERVICE_NAME, SERVING, seconds=5)


# --- Cassandra unreachable ----------------------------------------------------------------


async def test_cassandra_outage_is_not_serving_and_unavailable_then_recovers(
    engines: dict[str, str], keyspace_prefix: str, tmp_path: Path
) -> None:
    direct = load_settings(
        {
            "HEALTHBANK_DATA_DIR": str(tmp_path),
            "HEALTHBANK_PORT": "0",
            "HEALTHBANK_STORAGE_BACKEND": "cassandra",
            "HEALTHBANK_CASSANDRA_HOSTS": engines["HEALTHBANK_CASSANDRA_HOSTS"],
            "HEALTHBANK_CASSANDRA_PORT": engines["HEALTHBANK_CASSANDRA_PORT"],
            "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": keyspace_prefix,
        }
    )
    async with (
        cassandra_behind_proxy(direct, CASSANDRA_SERVICES) as (proxy, settings),
        open_service(settings, now=lambda: NOW) as host,
    ):
        port = await host.start(0)
        hot = await open_record_store(settings)
        try:
            async with open_channel(f"127.0.0.1:{port}") as channel:
                stub = archive_pb2_grpc.ArchiveServiceStub(channel)
                client = ArchiveClient(stub, settings, hot, channel)
                await wait_for_health(channel, SERVICE_NAME, SERVING)
                await put_blob(client, b"before the outage")

                await proxy.cut()
                await wait_for_health(channel, SERVICE_NAME, NOT_SERVING)
                error = await rpc_error(put_blob(client, b"during the outage"))
                assert error.code() == grpc.StatusCode.UNAVAILABLE

                await proxy.start()
                await wait_for_health(channel, SERVICE_NAME, SERVING)
                # The retry stores the blob; its bytes may already be on disk from the try.
                stored = await put_blob(client, b"during the outage")
                assert stored.size_bytes == len(b"during the outage")
        finally:
            await hot.close()


async def test_an_archive_directory_the_service_cannot_write_is_a_refusal_not_internal(
    archive: ArchiveClient,
) -> None:
    archive.archive_dir.mkdir(parents=True, exist_ok=True)
    (archive.archive_dir / "blobs").write_bytes(b"a file where the blobs' folder belongs")
    details = error_details(await rpc_error(put_blob(archive, b"refused")))
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION, details
    assert details.reason == "STORAGE_CONFIGURATION"
    assert details.retry_delay is None


async def test_segments_are_encoded_verified_and_decoded_off_the_event_loop(
    archive: ArchiveClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment holds up to a thousand records: its work would stall every other RPC."""
    from services.archive import archive as domain

    loop_thread = threading.get_ident()
    threads: dict[str, set[bool]] = {}

    def watched(name: str) -> None:
        original = getattr(domain, name)

        def spy(*args: object) -> object:
            threads.setdefault(name, set()).add(threading.get_ident() == loop_thread)
            return original(*args)

        monkeypatch.setattr(domain, name, spy)

    for name in ("encode_segment", "verify_segment", "decode_segment"):
        watched(name)
    old = await seed(archive, PERSON, years(2011, 2012, 2013))
    assert (await tier(archive)).records_moved == 3
    cold = await fetch(archive)
    assert [item.record.record_id for item in cold] == [r.record_id for r in old]
    # Each ran, and never on the loop's thread.
    assert threads == {
        "encode_segment": {False},
        "verify_segment": {False},
        "decode_segment": {False},
    }
