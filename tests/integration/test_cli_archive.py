"""`healthbank archive tier` with progress and `healthbank archive scrub`, as real processes
against a real archive service (embedded storage): one flipped byte in a stored segment or
blob is found by scrub, and fetching it answers DATA_LOSS naming the object."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from auth_support import auth_metadata
from test_cli_scheduled_jobs import healthbank

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings, load_settings
from healthbank.core.ids import new_ulid
from healthbank.records import MessageReceipt, StoredRecord, open_record_store
from healthbank.rpc import error_details
from healthbank.rpc.clients import open_channel
from services.archive.app import open_service

PERSON = "c" * 64
INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
READER = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)


def flip_one_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


async def seed_old_records(settings: Settings, count: int) -> None:
    records = await open_record_store(settings)
    start = datetime.now(UTC) - timedelta(days=800)
    batch = [
        StoredRecord(
            record_id=new_ulid(start + timedelta(days=index)),
            person_token=PERSON,
            source_hospital="hospital-a",
            source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
            message_id=f"msg-{index}",
            source_version="1",
            content_hash=hashlib.sha256(str(index).encode()).hexdigest(),
            category=common_pb2.RECORD_CATEGORY_OBSERVATION,
            code_system="http://loinc.org",
            code="2345-7",
            code_display="Glucose",
            effective_time=start + timedelta(days=index),
            status="final",
            sealed_payload=os.urandom(400),
        )
        for index in range(count)
    ]
    try:
        await records.put_message(
            MessageReceipt(
                hospital_id="hospital-a",
                message_id=new_ulid(),
                content_hash=hashlib.sha256(b"seed").hexdigest(),
                person_token=PERSON,
                record_ids=tuple(record.record_id for record in batch),
            ),
            batch,
            [],
        )
    finally:
        await records.close()


async def test_tier_shows_progress_and_scrub_finds_a_flipped_byte(tmp_path: Path) -> None:
    env = {"HEALTHBANK_DATA_DIR": str(tmp_path / "data")}
    settings = load_settings({**env, "HEALTHBANK_PORT": "0"})
    await seed_old_records(settings, 12)
    async with open_service(settings) as host:
        port = await host.start(0)
        env["HEALTHBANK_ARCHIVE_ADDR"] = f"127.0.0.1:{port}"
        code, out, err = await healthbank("archive", "tier", "--batch", "5", env=env)
        assert (code, out) == (0, "archive tier: 12 records moved\n"), err
        assert err.splitlines() == [
            "archive tier: 5 records moved so far",
            "archive tier: 10 records moved so far",
            "archive tier: 12 records moved so far",
        ]
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = archive_pb2_grpc.ArchiveServiceStub(channel)
            blob = await stub.PutBlob(
                archive_pb2.PutBlobRequest(
                    person_token=PERSON, content_type="application/dicom", content=os.urandom(5000)
                ),
                metadata=auth_metadata(settings, INGEST),
            )
            code, out, err = await healthbank("archive", "scrub", env=env)
            assert (code, out) == (
                0,
                "archive scrub: 3 segments, 1 blobs checked, 0 damaged\n",
            ), err

            archive_dir = settings.data_dir / "archive"
            segment_file = sorted((archive_dir / "segments").iterdir())[1]
            segment_name = f"segments/{segment_file.name.removesuffix('.seg')}"
            flip_one_byte(segment_file, 100)
            blob_file = archive_dir / "blobs" / blob.sha256[:2] / blob.sha256
            flip_one_byte(blob_file, 4000)

            code, out, err = await healthbank("archive", "scrub", env=env)
            assert code == 1, err
            assert out.splitlines() == [
                f"DAMAGED {segment_name}",
                f"DAMAGED blobs/{blob.sha256}",
                "archive scrub: 3 segments, 1 blobs checked, 2 damaged",
            ]

            with pytest.raises(grpc.aio.AioRpcError) as fetched:
                async for _ in stub.FetchRecords(
                    archive_pb2.FetchRecordsRequest(person_token=PERSON),
                    metadata=auth_metadata(settings, READER),
                ):
                    pass
            assert fetched.value.code() == grpc.StatusCode.DATA_LOSS
            assert segment_name in (fetched.value.details() or "")
            assert error_details(fetched.value).reason == "SEGMENT_CORRUPT"

            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in stub.GetBlob(
                    archive_pb2.GetBlobRequest(name=f"blobs/{blob.sha256}"),
                    metadata=auth_metadata(settings, READER),
                ):
                    pass
            assert streamed.value.code() == grpc.StatusCode.DATA_LOSS
            assert f"blobs/{blob.sha256}" in (streamed.value.details() or "")
