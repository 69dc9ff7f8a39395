"""The gRPC edge of the ingest service: request validation, status mapping.

Callers are hospital integration engines bound to a hospital; the authorization table
(:mod:`healthbank.rpc.authz`) admits only those and only for their own hospital
(``HOSPITAL_MISMATCH`` otherwise, which ends a stream at the first such message). For HL7 v2
every answer carries the HL7 ACK (``SubmitResponse.hl7_ack``; ADR 15).

``Submit`` fails the call for a bad message (INVALID_ARGUMENT with field violations, reason
INVALID_FHIR / INVALID_HL7V2 / INVALID_DICOM ...). ``SubmitStream`` acknowledges every
message in the order received and turns the same errors into ``OUTCOME_REJECTED`` with a
``Rejection`` (``retryable`` for UNAVAILABLE-type causes); only a caller that may not submit
at all, or a message of another hospital, fails the whole stream. Engine outages (the key
provider, the storage) answer UNAVAILABLE (``KEY_PROVIDER_UNAVAILABLE``,
``STORAGE_UNAVAILABLE``; retryable in a stream): the message was not acknowledged, and its
retry stores it once.

A message larger than one request (64 MiB) goes through ``SubmitStream`` in pieces
(``more_content`` on every piece but the last, :class:`ContentPieces`), up to 256 MiB; it is
acknowledged once, whole.

Messages of one stream are processed concurrently, at most ``stream_concurrency`` at a
time, except that a message waits for the earlier ones about the same patient or with the
same message id, so the outcome is that of in-order processing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.common.v1 import common_pb2
from healthbank.contracts.hl7ack import ack_code, build_ack
from healthbank.contracts.names import HOSPITAL_ID_RULE, is_hospital_id
from healthbank.contracts.principal import Principal
from healthbank.core.ids import new_ulid
from healthbank.core.logs import request_id_var, stack_without_text
from healthbank.core.memory import MemoryReleaser
from healthbank.core.telemetry import business_metrics
from healthbank.crypto import KeyProviderError, KeyProviderUnavailable
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.rpc import ServiceError, Violations, require_principal
from healthbank.rpc.errors import VIOLATIONS_TOTAL_KEY, key_provider_refusal, storage_refusal
from healthbank.storage import StorageRefused, StorageUnavailable
from services.ingest.model import InvalidMessage, SourceFormat
from services.ingest.parse_pool import DEFAULT_LARGE_MESSAGE_BYTES
from services.ingest.pipeline import (
    Ack,
    DependencyFailed,
    DependencyUnavailable,
    IngestPipeline,
    MessageIdReused,
    PatientRejected,
    PreparedMessage,
    Submission,
)

_log = logging.getLogger(__name__)

MAX_CONTENT_BYTES = 64 * 1024 * 1024
# A message SubmitStream receives in pieces (``more_content``) may be larger than one request.
MAX_STREAMED_CONTENT_BYTES = 256 * 1024 * 1024
# A DICOM file is archived sealed, and the archive takes blobs of at most 64 MiB: leave room
# for the envelope (header, wrapped data key, nonce, tag).
MAX_DICOM_BYTES = MAX_CONTENT_BYTES - 4096
MAX_MESSAGE_ID_LENGTH = 256
DEFAULT_STREAM_CONCURRENCY = 8
RETRY_DELAY_SECONDS = 1.0

_FORMATS = {
    common_pb2.SOURCE_FORMAT_FHIR_R4_JSON: SourceFormat.FHIR_R4_JSON,
    common_pb2.SOURCE_FORMAT_HL7V2: SourceFormat.HL7V2,
    common_pb2.SOURCE_FORMAT_DICOM: SourceFormat.DICOM,
    common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON: SourceFormat.FHIR_R4_NDJSON,
}


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """ingest.v1.IngestService over an :class:`IngestPipeline`."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        *,
        stream_concurrency: int = DEFAULT_STREAM_CONCURRENCY,
        memory: MemoryReleaser | None = None,
        large_message_bytes: int = DEFAULT_LARGE_MESSAGE_BYTES,
    ) -> None:
        """Serve ``pipeline``; streams process up to ``stream_concurrency`` messages at once;
        ``memory`` releases free heap memory after each message of ``large_message_bytes``
        or more."""
        if stream_concurrency < 1:
            raise ValueError("stream_concurrency must be at least 1")
        self._pipeline = pipeline
        self._stream_concurrency = stream_concurrency
        self._memory = memory
        self._large_message_bytes = large_message_bytes

    async def Submit(
        self, request: ingest_pb2.SubmitRequest, context: Any
    ) -> ingest_pb2.SubmitResponse:
        """Store one message, or fail the call saying why."""
        principal = require_principal()
        submission = validated_submission(request, principal)
        try:
            ack = await self._pipeline.submit(submission)
        except _PIPELINE_FAILURES as exc:
            raise service_error(exc) from None
        finally:
            self._done_with(submission)
        return _response(ack, submission)

    async def SubmitStream(
        self, request_iterator: AsyncIterator[ingest_pb2.SubmitRequest], context: Any
    ) -> AsyncIterator[ingest_pb2.SubmitResponse]:
        """Acknowledge each message in the order received; bad ones are rejected, not fatal.

        Messages run concurrently, except that a message waits for every earlier message of
        the stream with the same message id or the same patient (see
        ``PreparedMessage.ordering_keys``): a stream behaves as if processed in order.
        """
        principal = require_principal()
        slots = asyncio.Semaphore(self._stream_concurrency)
        acks: asyncio.Queue[asyncio.Task[ingest_pb2.SubmitResponse] | None] = asyncio.Queue()
        latest: dict[tuple[str, ...], asyncio.Task[ingest_pb2.SubmitResponse]] = {}

        async def read() -> None:
            pieces = ContentPieces()
            try:
                async for piece in request_iterator:
                    request = pieces.add(piece)
                    if request is None:
                        continue  # more of the message follows
                    # A slot is held from arrival until the ack is sent: bounded work in flight.
                    await slots.acquire()
                    acks.put_nowait(await self._schedule(request, principal, latest))
                pieces.finish()
            finally:
                acks.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await acks.get()) is not None:
                response = await task
                slots.release()
                yield response
            await reader  # surfaces a broken request stream
        finally:
            reader.cancel()
            while not acks.empty():
                leftover = acks.get_nowait()
                if leftover is not None:
                    leftover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _schedule(
        self,
        request: ingest_pb2.SubmitRequest,
        principal: Principal,
        latest: dict[tuple[str, ...], asyncio.Task[ingest_pb2.SubmitResponse]],
    ) -> asyncio.Task[ingest_pb2.SubmitResponse]:
        """Start a stream message's work after the earlier messages it depends on.

        Parsing (in the parse pool) comes first and in arrival order: it says which earlier
        messages this one depends on.
        """
        try:
            submission = validated_submission(request, principal, MAX_STREAMED_CONTENT_BYTES)
            prepared = await self._pipeline.prepare(submission)
        except ServiceError as err:
            return asyncio.create_task(_ready(_rejected(request, err)))
        except Exception as exc:
            return asyncio.create_task(_ready(_internal_rejection(request, exc)))
        keys = prepared.ordering_keys()
        earlier = {latest[key] for key in keys if key in latest}
        task = asyncio.create_task(self._acknowledge(prepared, earlier))
        for key in keys:
            latest[key] = task

        def forget(done: asyncio.Task[ingest_pb2.SubmitResponse]) -> None:
            for key in keys:
                if latest.get(key) is done:
                    del latest[key]

        task.add_done_callback(forget)
        return task

    async def _acknowledge(
        self, prepared: PreparedMessage, earlier: set[asyncio.Task[ingest_pb2.SubmitResponse]]
    ) -> ingest_pb2.SubmitResponse:
        """One stream message's ack; every failure becomes a Rejection."""
        submission = prepared.submission
        if earlier:
            await asyncio.wait(earlier)
        try:
            return _response(await self._pipeline.submit_prepared(prepared), submission)
        except _PIPELINE_FAILURES as exc:
            return _rejected(submission, service_error(exc))
        except Exception as exc:
            return _internal_rejection(submission, exc)
        finally:
            self._done_with(submission)

    def _done_with(self, submission: Submission) -> None:
        """After a large message, hand the memory it needed back to the system."""
        if self._memory is not None and len(submission.content) >= self._large_message_bytes:
            self._memory.after_large_message()


_PIPELINE_FAILURES = (
    InvalidMessage,
    MessageIdReused,
    PatientRejected,
    DependencyUnavailable,
    DependencyFailed,
    KeyProviderError,  # KeyProviderUnavailable included
    StorageUnavailable,
    StorageRefused,
)


async def _ready(response: ingest_pb2.SubmitResponse) -> ingest_pb2.SubmitResponse:
    return response


def _internal_rejection(
    submitted: Submission | ingest_pb2.SubmitRequest, exc: Exception
) -> ingest_pb2.SubmitResponse:
    # Type and frames only: the text of an unexpected error may hold message content.
    request_id = request_id_var.get() or "-"
    _log.error(
        "unhandled %s in SubmitStream (request id %s)\n%s",
        type(exc).__name__,
        request_id,
        stack_without_text(exc),
    )
    return _rejected(
        submitted,
        ServiceError(
            grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", reason="INTERNAL"
        ),
    )


class ContentPieces:
    """Joins a stream message sent in pieces (``more_content``) back into one request.

    Pieces of one message follow each other; anything else (another message id, hospital or
    format before the last piece, a stream ending mid-message, more than
    MAX_STREAMED_CONTENT_BYTES) breaks the stream's framing and fails the stream with
    INVALID_ARGUMENT, as a message of another hospital does.
    """

    def __init__(self) -> None:
        self._first: ingest_pb2.SubmitRequest | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, piece: ingest_pb2.SubmitRequest) -> ingest_pb2.SubmitRequest | None:
        """The whole request once ``piece`` completes it, else None (wait for more)."""
        first = self._first
        if first is None and not piece.more_content:
            return piece
        if first is not None and (piece.hospital_id, piece.message_id, piece.format) != (
            first.hospital_id,
            first.message_id,
            first.format,
        ):
            raise ServiceError.invalid_argument(
                [("more_content", "the next request must continue the same message")],
                reason="INCOMPLETE_MESSAGE",
            )
        self._first = first or piece
        self._parts.append(piece.content)
        self._size += len(piece.content)
        if self._size > MAX_STREAMED_CONTENT_BYTES:
            raise ServiceError.invalid_argument(
                [("content", f"must be at most {MAX_STREAMED_CONTENT_BYTES} bytes in all pieces")],
                reason="MESSAGE_TOO_LARGE",
            )
        if piece.more_content:
            return None
        whole = ingest_pb2.SubmitRequest()
        whole.CopyFrom(self._first)
        whole.content = b"".join(self._parts)
        whole.more_content = False
        self._first, self._parts, self._size = None, [], 0
        return whole

    def finish(self) -> None:
        """The stream ended: INVALID_ARGUMENT if it stopped before a message's last piece."""
        if self._first is not None:
            raise ServiceError.invalid_argument(
                [("more_content", "the stream ended before the message's last piece")],
                reason="INCOMPLETE_MESSAGE",
            )


def validated_submission(
    request: ingest_pb2.SubmitRequest,
    principal: Principal,
    max_content_bytes: int = MAX_CONTENT_BYTES,
) -> Submission:
    """The request as a Submission; INVALID_ARGUMENT listing every bad field otherwise.

    ``max_content_bytes``: larger for a stream message joined from pieces.
    """
    violations = Violations()
    violations.check(
        not request.more_content, "more_content", "is for SubmitStream only (pieces of a message)"
    )
    if violations.require(request.hospital_id, "hospital_id"):
        violations.check(is_hospital_id(request.hospital_id), "hospital_id", HOSPITAL_ID_RULE)
    if violations.require(request.message_id, "message_id"):
        violations.check(
            len(request.message_id) <= MAX_MESSAGE_ID_LENGTH,
            "message_id",
            f"must be at most {MAX_MESSAGE_ID_LENGTH} characters",
        )
        violations.check(
            request.message_id.isprintable() and request.message_id == request.message_id.strip(),
            "message_id",
            "must be printable characters without leading or trailing spaces",
        )
    source_format = _FORMATS.get(request.format)
    violations.check(
        source_format is not None, "format", "must be FHIR_R4_JSON, FHIR_R4_NDJSON, HL7V2 or DICOM"
    )
    if violations.require(request.content, "content"):
        limit = MAX_DICOM_BYTES if source_format == SourceFormat.DICOM else max_content_bytes
        violations.check(len(request.content) <= limit, "content", f"must be at most {limit} bytes")
    violations.raise_if_any()
    assert source_format is not None
    return Submission(
        hospital_id=request.hospital_id,
        message_id=request.message_id,
        source_format=source_format,
        content=request.content,
        submitter=principal,
    )


def service_error(exc: Exception) -> ServiceError:
    """The status a pipeline failure is reported with."""
    if isinstance(exc, InvalidMessage):
        return ServiceError.invalid_argument(exc.violations, reason=exc.reason)
    if isinstance(exc, MessageIdReused):
        return ServiceError.already_exists(
            "the message id was already used for different content", reason="MESSAGE_ID_REUSED"
        )
    if isinstance(exc, PatientRejected):
        code = (
            grpc.StatusCode.FAILED_PRECONDITION
            if exc.precondition
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        return ServiceError(code, exc.message, reason=exc.reason, field_violations=exc.violations)
    if isinstance(exc, DependencyUnavailable):
        return ServiceError.unavailable(
            f"the {exc.dependency} service is unavailable; retry the message",
            reason=f"{exc.dependency.upper()}_UNAVAILABLE",
            retry_delay=RETRY_DELAY_SECONDS,
        )
    if isinstance(exc, KeyProviderUnavailable):
        return ServiceError.unavailable(
            "the key provider is unavailable; retry the message",
            reason="KEY_PROVIDER_UNAVAILABLE",
            retry_delay=RETRY_DELAY_SECONDS,
        )
    if isinstance(exc, KeyProviderError):
        return key_provider_refusal()
    if isinstance(exc, StorageUnavailable):
        # The same answer the error interceptor gives an engine outage, here with the delay
        # ingest recommends and usable as a stream Rejection too.
        return ServiceError.unavailable(
            "the record storage is unavailable; retry the message",
            reason="STORAGE_UNAVAILABLE",
            retry_delay=RETRY_DELAY_SECONDS,
        )
    if isinstance(exc, StorageRefused):
        return storage_refusal(exc)
    if isinstance(exc, DependencyFailed):
        request_id = request_id_var.get() or "-"
        return ServiceError(
            grpc.StatusCode.INTERNAL,
            f"the {exc.dependency} service refused the call (request id {request_id})",
            reason="DEPENDENCY_FAILED",
        )
    raise TypeError(f"not a pipeline failure: {type(exc).__name__}")


def _response(ack: Ack, submission: Submission) -> ingest_pb2.SubmitResponse:
    counters = business_metrics()
    rejected = any(part.problem is not None for part in ack.patients)
    counters.messages_ingested.add(
        1,
        {"outcome": "partially_stored" if rejected else "duplicate" if ack.duplicate else "stored"},
    )
    if not ack.duplicate:
        counters.records_stored.add(len(ack.record_names))
    response = _acknowledgement(ack, submission)
    if rejected:
        response.outcome = ingest_pb2.OUTCOME_PARTIALLY_STORED
    for part in ack.patients:
        if part.ack is not None:
            response.patients.append(_acknowledgement(part.ack, submission))
        else:
            assert part.problem is not None
            response.patients.append(
                ingest_pb2.SubmitResponse(
                    message_id=part.message_id,
                    outcome=ingest_pb2.OUTCOME_REJECTED,
                    rejection=_rejection(service_error(part.problem)),
                )
            )
    return response


def _acknowledgement(ack: Ack, submission: Submission) -> ingest_pb2.SubmitResponse:
    return ingest_pb2.SubmitResponse(
        message_id=ack.message_id,
        outcome=ingest_pb2.OUTCOME_DUPLICATE if ack.duplicate else ingest_pb2.OUTCOME_STORED,
        person_token=ack.person_token,
        record_names=list(ack.record_names),
        hl7_ack=hl7_ack_for(submission.source_format, submission.content, None),
        resources=[
            ingest_pb2.ResourceOutcome(
                resource_type=resource.resource_type,
                resource_id=resource.resource_id,
                disposition=f"RESOURCE_DISPOSITION_{resource.disposition.name}",
                record_name=resource.record_name,
                reason=resource.reason,
            )
            for resource in ack.resources
        ],
        patient_unidentified=ack.patient_unidentified,
    )


def hl7_ack_for(
    source_format: SourceFormat | int, content: bytes, err: ServiceError | None
) -> bytes:
    """The HL7 ACK of an HL7 v2 message (empty for other formats): AA, or AE/AR from ``err``."""
    if source_format not in (SourceFormat.HL7V2, common_pb2.SOURCE_FORMAT_HL7V2):
        return b""
    violations = err.field_violations if err is not None else []
    return build_ack(
        content,
        ack_code(
            accepted=err is None,
            retryable=err is not None and err.retryable,
            violations=violations,
        ),
        control_id=new_ulid(),
        now=datetime.now(UTC),
        reason=err.reason if err is not None else "",
        violations=violations,
        retryable=err is not None and err.retryable,
    )


def _rejected(
    submitted: Submission | ingest_pb2.SubmitRequest, err: ServiceError
) -> ingest_pb2.SubmitResponse:
    source_format = (
        submitted.source_format if isinstance(submitted, Submission) else submitted.format
    )
    # The reason is a code from a fixed set, never the message's content.
    business_metrics().messages_ingested.add(1, {"outcome": "rejected", "reason": err.reason})
    return ingest_pb2.SubmitResponse(
        message_id=submitted.message_id,
        hl7_ack=hl7_ack_for(source_format, submitted.content, err),
        outcome=ingest_pb2.OUTCOME_REJECTED,
        rejection=_rejection(err),
    )


def _rejection(err: ServiceError) -> ingest_pb2.Rejection:
    return ingest_pb2.Rejection(
        reason=err.reason,
        message=err.message,
        field_violations=[
            ingest_pb2.FieldViolation(field=name, description=description)
            for name, description in err.field_violations
        ],
        retryable=err.retryable,
        violations_total=int(err.metadata.get(VIOLATIONS_TOTAL_KEY, 0)),
    )
