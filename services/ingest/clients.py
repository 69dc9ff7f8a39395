"""The pipeline's ports over gRPC: identity.Resolve, archive.PutBlob, audit.AppendEvent.

The ClientFactory given must call as ingest itself (``service_client_factory(settings,
"ingest")``): the audit service records the calling service as ``recorded_by``, and the
hospital engine is named where it belongs, in the request (``ResolveRequest.hospital_id``,
``AccessEvent.actor``). gRPC failures become the pipeline's exceptions, judged by the one
downstream policy (:func:`healthbank.rpc.downstream.downstream_error`): what it answers
UNAVAILABLE → DependencyUnavailable; the identity answers that concern the patient →
PatientRejected; anything else → DependencyFailed (ingest built the request itself, so a
refusal is ingest's fault, not the hospital's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.timestamp_pb2 import Timestamp

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.audit.v1 import audit_pb2
from healthbank.contracts.principal import principal_to_proto
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import ClientFactory, error_details
from healthbank.rpc.access_log import AuditAppender
from healthbank.rpc.downstream import downstream_error
from services.ingest.model import PatientIdentity
from services.ingest.pipeline import DependencyFailed, DependencyUnavailable, PatientRejected
from services.ingest.store import WriteAudit

RECORDED_BY = "ingest"
AUDIT_BASIS = "INGEST"


def _dependency_error(dependency: str, exc: grpc.aio.AioRpcError) -> Exception:
    if downstream_error(exc, dependency).retryable:
        return DependencyUnavailable(dependency)
    return DependencyFailed(dependency)


class GrpcIdentityResolver:
    """IdentityResolver over identity.v1.IdentityService/Resolve."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "identity" service through ``clients``."""
        self._clients = clients

    async def resolve(self, hospital_id: str, patient: PatientIdentity) -> str:
        """See IdentityResolver.resolve."""
        demographics = patient.demographics
        request = identity_pb2.ResolveRequest(
            hospital_id=hospital_id,
            mrn=patient.mrn,
            national_id=patient.national_id,
            demographics=identity_pb2.Demographics(
                family_name=demographics.family_name,
                given_name=demographics.given_name,
                birth_date=demographics.birth_date,
                sex=demographics.sex,
                phone=demographics.phone,
            ),
            prior_mrns=patient.prior_mrns,
        )
        stub = identity_pb2_grpc.IdentityServiceStub(self._clients.channel("identity"))
        try:
            response = await stub.Resolve(request)
        except grpc.aio.AioRpcError as exc:
            raise _identity_error(exc, patient.field_paths) from None
        person_token: str = response.person_token
        return person_token


def _identity_error(exc: grpc.aio.AioRpcError, paths: Mapping[str, str]) -> Exception:
    code = exc.code()
    if code not in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    ):
        return _dependency_error("identity", exc)
    details = error_details(exc)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        # Point at where the rejected value came from in the message.
        violations = [
            (_content_path(field, paths), description)
            for field, description in details.field_violations
        ] or [(paths.get("identifiers", "content"), "the patient's identity was rejected")]
        return PatientRejected(
            "IDENTITY_REJECTED", "the patient's identity was rejected", violations
        )
    # FAILED_PRECONDITION / NOT_FOUND: the content is well-formed but the index disagrees.
    # The identity service's own message is PHI-free by contract; the reason is kept.
    return PatientRejected(
        details.reason or "UNKNOWN_PATIENT",
        details.message or "the patient could not be resolved",
        precondition=True,
    )


def _content_path(field: str, paths: Mapping[str, str]) -> str:
    if field in paths:
        return paths[field]
    if field.split("[", 1)[0] in paths:  # "prior_mrns[1]": where the list came from
        return paths[field.split("[", 1)[0]]
    if field == "national_id":
        return paths.get("identifiers", "content")
    return "content"


class GrpcBlobArchive:
    """BlobArchive over archive.v1.ArchiveService/PutBlob."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "archive" service through ``clients``."""
        self._clients = clients

    async def put_blob(self, person_token: str, content_type: str, sealed: bytes) -> str:
        """See BlobArchive.put_blob."""
        stub = archive_pb2_grpc.ArchiveServiceStub(self._clients.channel("archive"))
        request = archive_pb2.PutBlobRequest(
            person_token=person_token, content_type=content_type, content=sealed
        )
        try:
            blob = await stub.PutBlob(request)
        except grpc.aio.AioRpcError as exc:
            raise _dependency_error("archive", exc) from None
        name: str = blob.name
        return name


class GrpcAuditLog:
    """AuditLog over the audit service (concurrent messages' events in one call)."""

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "audit" service through ``clients``."""
        self._appender = AuditAppender(clients)

    async def append_write(
        self, audit: WriteAudit, person_token: str, resource_names: Sequence[str]
    ) -> None:
        """See AuditLog.append_write."""
        occur_time = Timestamp()
        occur_time.FromDatetime(audit.occur_time)
        event = audit_pb2.AccessEvent(
            event_id=audit.event_id,
            actor=principal_to_proto(audit.actor),
            action=audit_pb2.ACTION_WRITE,
            person_token=person_token,
            resource_names=list(resource_names),
            basis=AUDIT_BASIS,
            flagged_for_review=False,
            occur_time=occur_time,
            recorded_by=RECORDED_BY,
        )
        try:
            await self._appender.append(event)
        except grpc.aio.AioRpcError as exc:
            raise _dependency_error("audit", exc) from None
