"""The record-lookup flow's ports over gRPC: identity.LookupByNationalId, archive.FetchRecords.

Both calls carry this service's own credentials and the request id (the ClientFactory's
interceptors, streaming calls included); failures follow the one downstream policy
(:func:`healthbank.rpc.downstream.downstream_error`).
"""

from __future__ import annotations

from datetime import datetime

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.contracts.records import record_from_proto
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.records import StoredRecord
from healthbank.rpc import ClientFactory
from healthbank.rpc.downstream import downstream_error


class GrpcPersonDirectory:
    """PersonDirectory over identity.v1.IdentityService/LookupByNationalId."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "identity" service through ``clients``."""
        self._clients = clients

    async def person_of(self, national_id: str) -> str:
        """See PersonDirectory.person_of."""
        stub = identity_pb2_grpc.IdentityServiceStub(self._clients.channel("identity"))
        try:
            response = await stub.LookupByNationalId(
                identity_pb2.LookupByNationalIdRequest(national_id=national_id)
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "identity") from None
        return str(response.person_token)


class GrpcColdArchive:
    """ColdArchive over archive.v1.ArchiveService/FetchRecords."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "archive" service through ``clients``."""
        self._clients = clients

    async def cold_records(
        self, person_token: str, start: datetime | None, end: datetime | None
    ) -> list[StoredRecord]:
        """See ColdArchive.cold_records."""
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
