"""The pipeline's ports over gRPC: identity.ResolveBatch, archive.PutBlob, audit.AppendEvents.

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
from dataclasses import dataclass

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.timestamp_pb2 import Timestamp

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.audit.v1 import audit_pb2
from healthbank.contracts.demographics import matching_text
from healthbank.contracts.principal import principal_to_proto
from healthbank.core.group_commit import GroupCommit
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import ClientFactory, ErrorDetails, error_details
from healthbank.rpc.access_log import AuditAppender
from healthbank.rpc.downstream import downstream_error
from services.ingest.model import PatientIdentity
from services.ingest.pipeline import DependencyFailed, DependencyUnavailable, PatientRejected
from services.ingest.store import WriteAudit

RECORDED_BY = "ingest"
# The most patients one ResolveBatch call takes (identity's limit).
MAX_RESOLVES_PER_CALL = 1000
# Identity's answers that concern the patient, not the call.
_PATIENT_REFUSALS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
)
AUDIT_BASIS = "INGEST"


def _dependency_error(dependency: str, exc: grpc.aio.AioRpcError) -> Exception:
    if downstream_error(exc, dependency).retryable:
        return DependencyUnavailable(dependency)
    return DependencyFailed(dependency)


class GrpcIdentityResolver:
    """IdentityResolver over identity.v1.IdentityService: the patients of concurrent
    messages leave together in one ``ResolveBatch`` call (group commit, as the audit
    client's events do; ADR 55).

    Batches go one at a time, so two messages of one new person that one ingest replica
    resolves never race each other's registration: in one batch identity chains them (ADR
    54); in two, the earlier batch is filed before the later one looks for candidates. A
    lone patient goes by ``Resolve``.
    """

    def __init__(self, clients: ClientFactory) -> None:
        """Call the "identity" service through ``clients``."""
        self._clients = clients
        self._group: GroupCommit[_PatientToResolve, str] = GroupCommit(
            self._send, max_batch=MAX_RESOLVES_PER_CALL
        )

    async def resolve(self, hospital_id: str, patient: PatientIdentity) -> str:
        """See IdentityResolver.resolve."""
        demographics = patient.demographics
        request = identity_pb2.ResolveRequest(
            hospital_id=hospital_id,
            mrn=patient.mrn,
            national_id=patient.national_id,
            demographics=identity_pb2.Demographics(
                family_name=matching_text(demographics.family_name),
                given_name=matching_text(demographics.given_name),
                birth_date=demographics.birth_date,
                sex=demographics.sex,
                phone=matching_text(demographics.phone),
                address=matching_text(demographics.address),
            ),
            prior_mrns=patient.prior_mrns,
        )
        (person_token,) = await self._group.append(
            [_PatientToResolve(request, patient.field_paths)]
        )
        return person_token

    async def _send(self, patients: list[_PatientToResolve]) -> list[str | Exception]:
        """Each patient's person token, or the pipeline's exception for that patient."""
        stub = identity_pb2_grpc.IdentityServiceStub(self._clients.channel("identity"))
        if len(patients) == 1:
            (patient,) = patients
            try:
                response = await stub.Resolve(patient.request)
            except grpc.aio.AioRpcError as exc:
                return [_identity_error(exc, patient.paths)]
            return [response.person_token]
        try:
            batch = await stub.ResolveBatch(
                identity_pb2.ResolveBatchRequest(requests=[p.request for p in patients])
            )
        except grpc.aio.AioRpcError as exc:
            # A refusal of one patient is that patient's result, so a failed call is an
            # outage (or ingest's own fault): the same for every patient in it.
            return [_dependency_error("identity", exc) for _ in patients]
        return [
            _refusal(_batch_refusal(result.failure), patient.paths)
            if result.HasField("failure")
            else result.resolution.person_token
            for patient, result in zip(patients, batch.results, strict=True)
        ]


@dataclass(frozen=True)
class _PatientToResolve:
    request: identity_pb2.ResolveRequest
    paths: Mapping[str, str]  # PatientIdentity.field_paths: where each field came from


def _identity_error(exc: grpc.aio.AioRpcError, paths: Mapping[str, str]) -> Exception:
    if exc.code() not in _PATIENT_REFUSALS:
        return _dependency_error("identity", exc)
    return _refusal(error_details(exc), paths)


def _batch_refusal(failure: identity_pb2.ResolveFailure) -> ErrorDetails:
    """A ResolveBatch result's failure as Resolve would have raised it."""
    code = getattr(grpc.StatusCode, failure.code, grpc.StatusCode.UNKNOWN)
    refusal = ErrorDetails(code=code, message=failure.message, reason=failure.reason)
    refusal.field_violations.extend((v.field, v.description) for v in failure.field_violations)
    return refusal


def _refusal(refusal: ErrorDetails, paths: Mapping[str, str]) -> Exception:
    """What identity's refusal of one patient means for the message."""
    if refusal.code not in _PATIENT_REFUSALS:
        # Not about the patient: ingest built something identity refuses (a deployment bug).
        return DependencyFailed("identity")
    if refusal.code == grpc.StatusCode.INVALID_ARGUMENT:
        # Point at where the rejected value came from in the message.
        violations = [
            (_content_path(field, paths), description)
            for field, description in refusal.field_violations
        ] or [(paths.get("identifiers", "content"), "the patient's identity was rejected")]
        return PatientRejected(
            "IDENTITY_REJECTED", "the patient's identity was rejected", violations
        )
    # FAILED_PRECONDITION / NOT_FOUND: the content is well-formed but the index disagrees.
    # The identity service's own message is PHI-free by contract; the reason is kept.
    return PatientRejected(
        refusal.reason or "UNKNOWN_PATIENT",
        refusal.message or "the patient could not be resolved",
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
