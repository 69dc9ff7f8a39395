"""The record-lookup flow's ports over gRPC: identity.LookupByNationalId and
identity.ListMergedPersons, archive.FetchRecords and archive.GetBlob.

Every call carries this service's own credentials and the request id (the ClientFactory's
interceptors, streaming calls included); failures follow the one downstream policy
(:func:`healthbank.rpc.downstream.downstream_error`).
"""

from __future__ import annotations

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.contracts.names import person_name
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import ClientFactory
from healthbank.rpc.downstream import downstream_error
from services.record_lookup.flow import FoundPerson, SealedBlob


class GrpcPersonDirectory:
    """PersonDirectory over identity.v1.IdentityService/LookupByNationalId."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "identity" service through ``clients``."""
        self._clients = clients

    async def person_of(self, national_id: str) -> FoundPerson:
        """See PersonDirectory.person_of."""
        stub = identity_pb2_grpc.IdentityServiceStub(self._clients.channel("identity"))
        try:
            response = await stub.LookupByNationalId(
                identity_pb2.LookupByNationalIdRequest(national_id=national_id)
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "identity") from None
        return FoundPerson(response.person_token, tuple(response.merged_person_tokens))

    async def merged_into(self, person_token: str) -> list[str]:
        """See PersonDirectory.merged_into."""
        stub = identity_pb2_grpc.IdentityServiceStub(self._clients.channel("identity"))
        try:
            response = await stub.ListMergedPersons(
                identity_pb2.ListMergedPersonsRequest(parent=person_name(person_token))
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "identity") from None
        return list(response.merged_person_tokens)


class GrpcImageArchive:
    """ImageArchive over archive.v1.ArchiveService/GetBlob (service-only: record-lookup asks
    with its own token after the consent gate admitted and recorded the reader)."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "archive" service through ``clients``."""
        self._clients = clients

    async def sealed_blob(self, blob_name: str) -> SealedBlob:
        """See ImageArchive.sealed_blob."""
        stub = archive_pb2_grpc.ArchiveServiceStub(self._clients.channel("archive"))
        metadata: archive_pb2.Blob | None = None
        chunks: list[bytes] = []
        try:
            async for response in stub.GetBlob(archive_pb2.GetBlobRequest(name=blob_name)):
                if response.HasField("blob"):
                    metadata = response.blob
                chunks.append(response.chunk)
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "archive") from None
        if metadata is None:
            # An empty stream: the archive holds no such blob after all.
            return SealedBlob(person_token="", content_type="", sealed=b"")
        return SealedBlob(
            person_token=metadata.person_token,
            content_type=metadata.content_type,
            sealed=b"".join(chunks),
        )
