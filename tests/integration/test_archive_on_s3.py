"""The archive service configured for a real S3-compatible server (S3Proxy): blobs and
segments land in the bucket, come back byte-identical, and a byte flipped in the bucket is
found by scrub and answered DATA_LOSS naming the object."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from auth_support import auth_metadata
from engine_support import TcpProxy
from object_store_support import S3PROXY, S3ProxyProcess

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import load_settings
from healthbank.core.ids import new_ulid
from healthbank.records import MessageReceipt, StoredRecord, open_record_store
from healthbank.rpc.clients import open_channel
from healthbank.rpc.errors import ErrorDetails, error_details
from services.archive.app import open_service, scrub_archive

PERSON = "d" * 64
INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
READER = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
TIERING = Principal(PrincipalKind.SERVICE, "archive-tiering", purpose=Purpose.OPERATIONS)


def old_record(index: int) -> StoredRecord:
    effective = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=100 * index)
    return StoredRecord(
        record_id=new_ulid(effective),
        person_token=PERSON,
        source_hospital="hospital-a",
        source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
        message_id=f"msg-{index}",
        source_version="1",
        content_hash=hashlib.sha256(str(index).encode()).hexdigest(),
        category=common_pb2.RECORD_CATEGORY_OBSERVATION,
        code_system="http://loinc.org",
        code="4548-4",
        code_display="Hemoglobin A1c",
        effective_time=effective,
        status="final",
        sealed_payload=os.urandom(500),
    )


async def test_the_archive_service_keeps_its_objects_in_the_s3_bucket(
    tmp_path: Path, s3proxy: S3ProxyProcess
) -> None:
    bucket = s3proxy.new_bucket()
    settings = load_settings(
        {
            "HEALTHBANK_DATA_DIR": str(tmp_path / "data"),
            "HEALTHBANK_ARCHIVE_BACKEND": "s3",
            "HEALTHBANK_ARCHIVE_S3_ENDPOINT": s3proxy.endpoint_url,
            "HEALTHBANK_ARCHIVE_S3_BUCKET": bucket,
            "HEALTHBANK_ARCHIVE_S3_ACCESS_KEY_ID": S3PROXY.ACCESS_KEY_ID,
            "HEALTHBANK_ARCHIVE_S3_SECRET_ACCESS_KEY": S3PROXY.SECRET_ACCESS_KEY,
        }
    )
    seeded = [old_record(index) for index in range(18)]  # five years and more
    hot = await open_record_store(settings)
    await hot.put_message(
        MessageReceipt(
            hospital_id="hospital-a",
            message_id=new_ulid(),
            content_hash=hashlib.sha256(b"seed").hexdigest(),
            person_token=PERSON,
            record_ids=tuple(record.record_id for record in seeded),
        ),
        seeded,
        [],
    )
    await hot.close()
    content = os.urandom(300_000)
    async with open_service(settings, now=lambda: datetime(2026, 6, 1, tzinfo=UTC)) as host:
        port = await host.start(0)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = archive_pb2_grpc.ArchiveServiceStub(channel)
            blob = await put_blob(stub, settings, content)
            request = archive_pb2.TierRecordsRequest()
            request.cutoff.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
            tiered = await stub.TierRecords(request, metadata=auth_metadata(settings, TIERING))
            assert tiered.records_moved == len(seeded)

            objects = s3proxy.store(bucket)
            keys = await objects.list_keys("")
            segment_keys = [f"{name}.seg" for name in tiered.segment_names]
            assert keys == sorted([f"blobs/{blob.sha256[:2]}/{blob.sha256}", *segment_keys])
            assert not (settings.data_dir / "archive").exists()

            fetched = [
                item
                async for item in stub.FetchRecords(
                    archive_pb2.FetchRecordsRequest(person_token=PERSON),
                    metadata=auth_metadata(settings, READER),
                )
            ]
            assert [(f.record.record_id, f.sealed_payload) for f in fetched] == [
                (r.record_id, r.sealed_payload) for r in seeded
            ]
            assert await get_blob(stub, settings, blob.sha256) == content

            report = await scrub_archive(settings)
            # One segment per year of the person's records (2020 to 2024).
            assert len(tiered.segment_names) == 5
            assert (report.segments_checked, report.blobs_checked, report.damaged) == (5, 1, [])

            # One byte flipped in the bucket (bit rot, or a bad replica behind the store).
            segment_key = segment_keys[0]
            damaged = bytearray(await objects.get(segment_key))
            damaged[200] ^= 0x01
            await objects.put(segment_key, bytes(damaged))
            report = await scrub_archive(settings)
            assert report.damaged == [tiered.segment_names[0]]
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                async for _ in stub.FetchRecords(
                    archive_pb2.FetchRecordsRequest(person_token=PERSON),
                    metadata=auth_metadata(settings, READER),
                ):
                    pass
            assert failed.value.code() == grpc.StatusCode.DATA_LOSS
            assert tiered.segment_names[0] in (failed.value.details() or "")


def s3_settings(tmp_path: Path, endpoint: str, bucket: str, secret: str) -> Any:
    return load_settings(
        {
            "HEALTHBANK_DATA_DIR": str(tmp_path / "data"),
            "HEALTHBANK_ARCHIVE_BACKEND": "s3",
            "HEALTHBANK_ARCHIVE_S3_ENDPOINT": endpoint,
            "HEALTHBANK_ARCHIVE_S3_BUCKET": bucket,
            "HEALTHBANK_ARCHIVE_S3_ACCESS_KEY_ID": S3PROXY.ACCESS_KEY_ID,
            "HEALTHBANK_ARCHIVE_S3_SECRET_ACCESS_KEY": secret,
            "HEALTHBANK_ARCHIVE_S3_CONNECT_TIMEOUT_SECONDS": "1",
            "HEALTHBANK_ARCHIVE_S3_READ_TIMEOUT_SECONDS": "2",
            "HEALTHBANK_ARCHIVE_S3_MAX_ATTEMPTS": "1",
        }
    )


async def put_blob(stub: Any, settings: Any, content: bytes) -> archive_pb2.Blob:
    blob: archive_pb2.Blob = await stub.PutBlob(
        archive_pb2.PutBlobRequest(
            person_token=PERSON, content_type="application/dicom", content=content
        ),
        metadata=auth_metadata(settings, INGEST),
    )
    return blob


async def get_blob(stub: Any, settings: Any, sha256: str) -> bytes:
    chunks = [
        item.chunk
        async for item in stub.GetBlob(
            archive_pb2.GetBlobRequest(name=f"blobs/{sha256}"),
            metadata=auth_metadata(settings, READER),
        )
    ]
    return b"".join(chunks)


async def failure_of(call: Awaitable[Any]) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return error_details(raised.value)


async def test_an_s3_outage_is_answered_unavailable_and_the_retry_stores(
    tmp_path: Path, s3proxy: S3ProxyProcess
) -> None:
    bucket = s3proxy.new_bucket()
    relay = TcpProxy("127.0.0.1", s3proxy.port)
    settings = s3_settings(
        tmp_path, f"http://127.0.0.1:{await relay.start()}", bucket, S3PROXY.SECRET_ACCESS_KEY
    )
    async with open_service(settings, now=lambda: datetime(2026, 6, 1, tzinfo=UTC)) as host:
        service_port = await host.start(0)
        async with open_channel(f"127.0.0.1:{service_port}") as channel:
            stub = archive_pb2_grpc.ArchiveServiceStub(channel)
            before = await put_blob(stub, settings, b"before the outage")

            await relay.cut()
            # Retryable, with when to retry: nothing was stored, nothing is lost.
            for call in (
                put_blob(stub, settings, b"during the outage"),
                get_blob(stub, settings, before.sha256),
            ):
                details = await failure_of(call)
                assert details.code == grpc.StatusCode.UNAVAILABLE, details
                assert details.reason == "STORAGE_UNAVAILABLE"
                assert details.retry_delay is not None and details.retry_delay > 0

            await relay.start()
            during = await put_blob(stub, settings, b"during the outage")
            assert await get_blob(stub, settings, during.sha256) == b"during the outage"
            assert await get_blob(stub, settings, before.sha256) == b"before the outage"
    await relay.cut()


async def test_a_store_that_refuses_the_credentials_is_never_answered_retry(
    tmp_path: Path, s3proxy: S3ProxyProcess
) -> None:
    bucket = s3proxy.new_bucket()
    settings = s3_settings(tmp_path, s3proxy.endpoint_url, bucket, "not-the-secret")
    async with open_service(settings, now=lambda: datetime(2026, 6, 1, tzinfo=UTC)) as host:
        service_port = await host.start(0)
        async with open_channel(f"127.0.0.1:{service_port}") as channel:
            stub = archive_pb2_grpc.ArchiveServiceStub(channel)
            details = await failure_of(put_blob(stub, settings, b"refused"))
            assert details.code == grpc.StatusCode.FAILED_PRECONDITION, details
            assert details.reason == "STORAGE_UNAUTHORIZED"
            assert details.retry_delay is None
