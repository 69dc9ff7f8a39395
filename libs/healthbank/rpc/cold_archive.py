"""A person's records in the cold tier, over archive.v1.ArchiveService/FetchRecords: one
client for every service that reads them (record-lookup's history, ai-alert's trends).

The records arrive sealed; the caller opens them only through its consent gate's admission.
"""

from __future__ import annotations

from datetime import datetime

import grpc

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.contracts.records import record_from_proto
from healthbank.records import StoredRecord
from healthbank.rpc.clients import ClientFactory
from healthbank.rpc.downstream import downstream_error


class GrpcColdArchive:
    """Cold records over archive.v1 FetchRecords, with the calling service's credentials."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "archive" service through ``clients``."""
        self._clients = clients

    async def cold_records(
        self, person_token: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[StoredRecord]:
        """Every cold record of the person effective in [start, end) (open ends:
        unbounded), still sealed, oldest first."""
        request = archive_pb2.FetchRecordsRequest(person_token=person_token)
        if start is not None:
            request.effective.start.FromDatetime(start)
        if end is not None:
            request.effective.end.FromDatetime(end)
        stub = archive_pb2_grpc.ArchiveServiceStub(self._clients.channel("archive"))
        try:
            return [
                record_from_proto(item.record, item.sealed_payload)
                async for item in stub.FetchRecords(request)
            ]
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "archive") from None
