"""The intake flow of one hospital message, against narrow ports (no gRPC here).

    receipt? ─ yes, same content ─────────────────────────────────────────┐
       │ no                                                               │
    parse + validate → identity.Resolve → [DICOM: seal file, archive.PutBlob]
       → plan records → seal payloads and facts → note the audit pending  │
       → RecordStore.put_message (claim carrying the audit event) ─────── ┤
                                                                          ▼
                                      audit.AppendEvent (unless already appended) → ack

A message of several patients (:class:`~services.ingest.model.ParsedBatch`) takes this
flow once per patient, as a message of its own (ADR 38, :meth:`IngestPipeline._submit_parts`).

Guarantees and how they hold:

- **Never acknowledged half-written.** Everything the message produces (receipt, records,
  facts, daily counts) is written by one ``put_message``; nothing before it writes to the
  hot store. On SQLite that is one transaction; on Cassandra the records and facts land
  together before the receipt commits, and a failed attempt's rows are rewritten under the
  same ids by its retry (see :mod:`healthbank.records.model`). If identity, archive or the
  key provider fail, nothing was written and the hospital retries (UNAVAILABLE). An imaging
  blob archived before a failed commit is sealed ciphertext that no record points to
  (sealing is randomized, so a retry archives a new blob): harmless garbage for the archive
  to collect, never a record without its blob.
- **Stored once.** ``put_message`` is idempotent by (hospital, message id, content hash). A
  retry is answered from the receipt before any identity call (``submit`` does not even
  parse it again); the same id with other content is refused (:class:`MessageIdReused`),
  whatever that content is.
- **Audited once, even across crashes.** The audit event is appended only after the commit
  (the log never names records that do not exist). Its id, occur time and actor are reserved
  in the receipt claim itself (``claim_note``; the first claim's event is the message's),
  and the message is noted as pending in ingest's own store *before* the claim
  (:mod:`services.ingest.store`, ADR 0019), so:

  * audit unreachable after the commit → the hospital gets UNAVAILABLE and retries; the
    retry finds the receipt, re-appends the reserved event (the audit service is idempotent
    by event id) and answers DUPLICATE, because the records were stored by the earlier try;
  * ingest crashes between commit and append → the same on retry, and if the hospital never
    retries, :meth:`IngestPipeline.flush_pending_audits` appends it in the background;
  * an event already appended is not sent again: a retried duplicate costs no audit call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from healthbank.contracts.principal import Principal, principal_log_fields
from healthbank.core.digest import sha256_hex_off_loop
from healthbank.core.ids import new_ulid
from healthbank.records import (
    MAX_PAYLOAD_BYTES,
    PLACED_PAYLOAD_CONTENT_TYPE,
    ClaimedByEarlierAttempt,
    MessageIdConflict,
    MessageReceipt,
    PutOutcome,
    RecordStore,
    blob_aad,
    placed_payload_stub,
    record_name,
)
from healthbank.storage import StorageRefused
from services.ingest.canonical import (
    MessageSource,
    PlannedRecord,
    plan_records,
    receipt_for,
    surveillance_cases,
)
from services.ingest.model import (
    Category,
    Disposition,
    InvalidMessage,
    Parsed,
    ParsedBatch,
    ParsedMessage,
    PatientIdentity,
    Problems,
    ResourceOutcome,
    SourceFormat,
)
from services.ingest.parse_pool import ParsePool, parse_content
from services.ingest.store import (
    IngestStore,
    WriteAudit,
    write_audit_from_json,
    write_audit_json,
)

_log = logging.getLogger(__name__)

# The audit service takes at most this many resource names per event: a message with more
# records is reported by several events (see :func:`audit_event_ids`).
MAX_NAMES_PER_AUDIT_EVENT = 1000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# The largest payload placed in the archive's blob store: one PutBlob request (64 MiB) holds
# it sealed, with room for the envelope.
MAX_PLACED_PAYLOAD_BYTES = 64 * 1024 * 1024 - 64 * 1024

# A pending audit note older than this without a stored message belongs to a submission
# that failed before its commit; younger ones may still be committing.
PENDING_AUDIT_GRACE = timedelta(minutes=5)


class DependencyUnavailable(Exception):
    """A service or engine the flow needs did not answer; the message may succeed later."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency


class DependencyFailed(Exception):
    """A dependency refused the call for a reason retrying will not fix (a deployment bug)."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} refused the call")
        self.dependency = dependency


class PatientRejected(Exception):
    """The identity service could not resolve the message's patient.

    ``precondition`` is True when the content is fine but the index's state forbids it
    (the record number is linked to someone else); False when the content lacks something.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        violations: Sequence[tuple[str, str]] = (),
        *,
        precondition: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = list(violations)
        self.precondition = precondition


class MessageIdReused(Exception):
    """The hospital sent different content under a message id it already used."""


class IdentityResolver(Protocol):
    """Resolves a hospital patient to a person token (the identity service)."""

    async def resolve(self, hospital_id: str, patient: PatientIdentity) -> str:
        """The person token; raises PatientRejected, DependencyUnavailable, DependencyFailed."""
        ...


class BlobArchive(Protocol):
    """Stores sealed imaging blobs (the archive service)."""

    async def put_blob(self, person_token: str, content_type: str, sealed: bytes) -> str:
        """Store the blob; return its name ("blobs/{sha256}")."""
        ...


class AuditLog(Protocol):
    """The access ledger (the audit service)."""

    async def append_write(
        self, audit: WriteAudit, person_token: str, resource_names: Sequence[str]
    ) -> None:
        """Append the write event; idempotent by ``audit.event_id``."""
        ...


class PayloadSealer(Protocol):
    """Envelope encryption (``healthbank.crypto.Sealer``)."""

    async def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad``."""
        ...

    async def seal_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Encrypt each ``(plaintext, aad)``, in order (large ones off the event loop)."""
        ...


@dataclass(frozen=True)
class Submission:
    """One message as a hospital submitted it, with who submitted it."""

    hospital_id: str
    message_id: str
    source_format: SourceFormat
    content: bytes
    submitter: Principal

    def __repr__(self) -> str:
        # Never print the content: it holds names and ID numbers.
        return f"Submission({self.hospital_id}, {self.source_format.name}, {len(self.content)} B)"


@dataclass(frozen=True)
class ResourceAck:
    """What became of one resource of a message; ``record_name`` for RECORD and DOCUMENT."""

    resource_type: str
    resource_id: str
    disposition: Disposition
    record_name: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Ack:
    """What happened to a message: stored now, or stored by an earlier identical submission.

    ``resources`` says what became of each resource of a FHIR message stored now (empty for
    a duplicate, which is answered from its receipt); ``patient_unidentified`` that a message
    stored now named no patient and was filed under a placeholder person (False for a
    duplicate, for the same reason).
    """

    message_id: str
    duplicate: bool
    person_token: str
    record_names: tuple[str, ...]
    resources: tuple[ResourceAck, ...] = ()
    patient_unidentified: bool = False
    patients: tuple[PartAck, ...] = ()


@dataclass(frozen=True)
class PartAck:
    """What happened to one patient's part of a message of several patients (ADR 38): its
    ack, or the permanent failure that rejected it (:data:`PART_REJECTIONS`)."""

    message_id: str
    ack: Ack | None
    problem: Exception | None = None


@dataclass(frozen=True)
class PreparedMessage:
    """A submission parsed ahead of storing it: the message, or why it is invalid."""

    submission: Submission
    source: MessageSource
    message: Parsed | None
    problem: InvalidMessage | None

    def parsed(self) -> Parsed:
        """The parsed message; raises the InvalidMessage found while parsing."""
        if self.message is None:
            assert self.problem is not None
            raise self.problem
        return self.message

    def ordering_keys(self) -> frozenset[tuple[str, ...]]:
        """What this message must be stored after, if an earlier message shares it.

        The message id (a retry, or a reuse, is judged against what came first) and the
        patient (an update without a national ID relies on the link an earlier admission
        made; facts of one patient keep their order).
        """
        hospital = self.source.hospital_id
        keys: set[tuple[str, ...]] = {("message", hospital, self.source.message_id)}
        if isinstance(self.message, ParsedBatch):
            patients = [part.message.patient for part in self.message.parts if part.message]
        else:
            patients = [self.message.patient] if self.message is not None else []
        for patient in patients:
            if patient is not None:
                keys.add(("mrn", hospital, patient.mrn))
                if patient.national_id:
                    keys.add(("national-id", patient.national_id))
        return frozenset(keys)


PART_REJECTIONS = (InvalidMessage, MessageIdReused, PatientRejected, StorageRefused)
"""Failures that reject one patient's part of a message of several patients and not the
others; any other failure (an outage) fails the whole message, whose retry finds the parts
stored so far by their receipts."""


def parse_message(submission: Submission) -> Parsed:
    """Parse and validate a submission's content here, in this thread (tests, tools)."""
    return parse_content(submission.source_format, submission.content)


def acknowledged_resources(
    outcomes: Sequence[ResourceOutcome], record_names: Sequence[str]
) -> tuple[ResourceAck, ...]:
    """Each resource's outcome with the name of the record it became (entries' order)."""
    return tuple(
        ResourceAck(
            outcome.resource_type,
            outcome.resource_id,
            outcome.disposition,
            record_names[outcome.entry_index] if outcome.entry_index is not None else "",
            outcome.reason,
        )
        for outcome in outcomes
    )


def audit_event_ids(event_id: str, count: int) -> list[str]:
    """The ids of the ``count`` audit events reporting one message: ``event_id`` first.

    The others keep its time part and take their random part from a hash of it and their
    position, so a retry re-appends the very same events (the audit log is idempotent by id).
    """
    ids = [event_id]
    for position in range(1, count):
        digest = hashlib.sha256(f"{event_id}/{position}".encode()).digest()
        number = int.from_bytes(digest[:10], "big")  # 80 bits: the ULID's random part
        random_part = "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(75, -1, -5))
        ids.append(event_id[:10] + random_part)
    return ids


async def _source(submission: Submission) -> MessageSource:
    # The receipt's content hash (canonical.content_hash), off the loop for a large message.
    digest = await sha256_hex_off_loop(submission.content)
    return MessageSource(
        submission.hospital_id, submission.message_id, submission.source_format, digest
    )


class IngestPipeline:
    """Runs the intake flow; one instance per process, safe for concurrent messages."""

    def __init__(
        self,
        *,
        records: RecordStore,
        store: IngestStore,
        identity: IdentityResolver,
        archive: BlobArchive,
        audit: AuditLog,
        sealer: PayloadSealer,
        now: Callable[[], datetime],
        parsers: ParsePool,
    ) -> None:
        """Wire the flow to its ports; ``now`` is the UTC clock; ``parsers`` parse messages
        off the event loop. (Cached emergency summaries need no word from here: each is tied
        to the facts version a message with facts renews, ADR 29.)"""
        self._records = records
        self._store = store
        self._identity = identity
        self._archive = archive
        self._audit = audit
        self._sealer = sealer
        self._now = now
        self._parsers = parsers

    async def prepare(self, submission: Submission) -> PreparedMessage:
        """Parse a message in the parse pool (never raises for bad content).

        Streams prepare messages as they arrive, in order, to learn which earlier messages a
        message must wait for (:meth:`PreparedMessage.ordering_keys`).
        """
        source = await _source(submission)
        try:
            message = await self._parse(submission)
            return PreparedMessage(submission, source, message, None)
        except InvalidMessage as problem:
            return PreparedMessage(submission, source, None, problem)

    async def submit(self, submission: Submission) -> Ack:
        """Store a message once and audit it; see the module docstring for the guarantees.

        Raises InvalidMessage, MessageIdReused, PatientRejected, DependencyUnavailable,
        DependencyFailed, KeyProviderError or StorageUnavailable (engine failures are let
        through as they are: the RPC edge answers an outage UNAVAILABLE, a key provider's
        refusal FAILED_PRECONDITION). On any of them the
        message is not acknowledged and its retry completes it once: nothing was committed,
        or (audit log or storage failing after the commit) the retry finds the receipt and
        finishes the audit.
        """
        # A retry is answered from its receipt without parsing the content again.
        return await self._submit(submission, await _source(submission), None)

    async def submit_prepared(self, prepared: PreparedMessage) -> Ack:
        """:meth:`submit` for a message :meth:`prepare` already parsed."""
        return await self._submit(prepared.submission, prepared.source, prepared)

    async def _parse(self, submission: Submission) -> Parsed:
        return await self._parsers.parse(submission.source_format, submission.content)

    async def _submit(
        self, submission: Submission, source: MessageSource, prepared: PreparedMessage | None
    ) -> Ack:
        # A hint: a commit this read misses is found by the claim in put_message.
        receipt = await self._records.get_receipt(
            source.hospital_id, source.message_id, linearizable=False
        )
        if receipt is not None:
            if receipt.content_hash != source.content_hash:
                raise MessageIdReused(source.message_id)
            return await self._acknowledge(receipt, submission.submitter, duplicate=True)

        message = prepared.parsed() if prepared is not None else await self._parse(submission)
        if isinstance(message, ParsedBatch):
            return await self._submit_parts(submission, source, message)
        now = self._now()
        if message.directory:
            # Before the records: a retry that finds the receipt never gets here again.
            await self._store.put_directory(source.hospital_id, message.directory, now)
        if message.patient is None:
            _log.info("directory stored entries=%d", len(message.directory))
            resources = acknowledged_resources(message.outcomes, ())
            return Ack(source.message_id, False, "", (), resources)
        person_token = await self._identity.resolve(source.hospital_id, message.patient)
        # The claim carries the audit event, noted pending first: a committed message always
        # has its event on file, and is found if its append never happens. Its time is the
        # plan's, so a retry can plan exactly what this attempt claimed.
        audit = self._new_audit(
            source.hospital_id, source.message_id, source.content_hash, submission.submitter, now
        )
        try:
            outcome = await self._seal_and_put(message, source, person_token, now, audit)
        except ClaimedByEarlierAttempt as claimed:
            # An attempt that died after its claim: finish it as it was planned.
            first = claimed.receipt
            if len(first.record_ids) != len(message.entries):
                raise MessageIdReused(source.message_id) from None
            outcome = await self._seal_and_put(
                message,
                source,
                first.person_token,
                self._claimed_audit(first, audit).occur_time,
                audit,
                first.record_ids,
            )
        _log.info(
            "message stored person_token=%s records=%d duplicate=%s",
            outcome.receipt.person_token,
            len(outcome.receipt.record_ids),
            outcome.duplicate,
            extra=principal_log_fields(submission.submitter),
        )
        # The claim's event, ours or an earlier attempt's; a message committed now cannot
        # have been appended yet.
        ack = await self._acknowledge(
            outcome.receipt,
            submission.submitter,
            duplicate=outcome.duplicate,
            unappended=not outcome.duplicate,
        )
        if outcome.duplicate:
            return ack
        return replace(
            ack,
            resources=acknowledged_resources(message.outcomes, ack.record_names),
            patient_unidentified=message.patient.unidentified,
        )

    async def _submit_parts(
        self, submission: Submission, source: MessageSource, batch: ParsedBatch
    ) -> Ack:
        """Store each patient's part as a message of its own (``<message id>#patient-<n>``),
        one after another: two parts may be the same person, whom identity links in order.

        A part rejected for good leaves the others stored; when every part is rejected the
        message fails as a whole (:func:`_every_part_rejected`). An outage fails it at once,
        and its retry answers the parts stored so far as duplicates.
        """
        if batch.directory:
            await self._store.put_directory(source.hospital_id, batch.directory, self._now())
        parts: list[PartAck] = []
        for part in batch.parts:
            part_id = part.message_id(source.message_id)
            if part.message is None:
                assert part.problem is not None
                parts.append(PartAck(part_id, None, part.problem))
                continue
            part_source = replace(source, message_id=part_id, content_hash=part.content_hash)
            part_submission = replace(submission, message_id=part_id)
            prepared = PreparedMessage(part_submission, part_source, part.message, None)
            try:
                ack = await self._submit(part_submission, part_source, prepared)
            except PART_REJECTIONS as problem:
                parts.append(PartAck(part_id, None, problem))
            else:
                parts.append(PartAck(part_id, ack))
        stored = [part.ack for part in parts if part.ack is not None]
        if not stored:
            raise _every_part_rejected(parts)
        return Ack(
            source.message_id,
            duplicate=all(ack.duplicate for ack in stored),
            person_token="",
            record_names=tuple(name for ack in stored for name in ack.record_names),
            resources=acknowledged_resources(batch.outcomes, ()),
            patients=tuple(parts),
        )

    async def _seal_and_put(
        self,
        message: ParsedMessage,
        source: MessageSource,
        person_token: str,
        now: datetime,
        audit: WriteAudit,
        record_ids: Sequence[str] | None = None,
    ) -> PutOutcome:
        """Plan, seal and store the message's records (with its image) under one claim,
        and return the outcome. Raises ClaimedByEarlierAttempt when an
        earlier attempt claimed it under other record ids (nothing is written then)."""
        blob_name = ""
        if message.imaging is not None:
            sealed_blob = await self._sealer.seal(message.imaging.data, blob_aad(person_token))
            blob_name = await self._archive.put_blob(
                person_token, message.imaging.content_type, sealed_blob
            )
        # Serializing every payload is CPU work that grows with the message: not on the loop.
        planned = await asyncio.to_thread(
            plan_records, message, person_token, source, now, record_ids
        )
        _refuse_unplaceable(planned, has_image=bool(blob_name))
        planned, placed_blobs = await self._place_large_payloads(planned, person_token)
        sealed_payloads = await self._sealer.seal_many(
            [(record.payload, record.payload_aad) for record in planned]
        )
        stored = [
            record.stored(
                source,
                sealed,
                placed_blobs.get(record.record_id)
                or (blob_name if record.entry.category == Category.IMAGING else ""),
            )
            for record, sealed in zip(planned, sealed_payloads, strict=True)
        ]
        with_facts = [(record, record.fact) for record in planned if record.fact is not None]
        sealed_facts = await self._sealer.seal_many(
            [(fact, record.fact_aad) for record, fact in with_facts]
        )
        facts = [
            record.emergency_fact(sealed)
            for (record, _), sealed in zip(with_facts, sealed_facts, strict=True)
        ]
        receipt = replace(
            receipt_for(source, person_token, planned), claim_note=write_audit_json(audit)
        )
        await self._store.note_pending(audit)
        try:
            outcome = await self._records.put_message(
                receipt, stored, facts, surveillance_cases(message, person_token)
            )
        except MessageIdConflict:
            raise MessageIdReused(source.message_id) from None
        return outcome

    async def _place_large_payloads(
        self, planned: Sequence[PlannedRecord], person_token: str
    ) -> tuple[list[PlannedRecord], dict[str, str]]:
        """Put each payload over MAX_PAYLOAD_BYTES in the archive's blob store, sealed and
        bound to its person as an image is, and keep a stub in its record (ADR 22).

        Returns the records to store and the blob name of each placed record, by record id.
        Like an image, a blob archived before a failed commit is garbage no record names.
        """
        kept, placed = [], {}
        for record in planned:
            if len(record.payload) <= MAX_PAYLOAD_BYTES:
                kept.append(record)
                continue
            sealed = await self._sealer.seal(record.payload, blob_aad(person_token))
            placed[record.record_id] = await self._archive.put_blob(
                person_token, PLACED_PAYLOAD_CONTENT_TYPE, sealed
            )
            kept.append(replace(record, payload=placed_payload_stub(record.entry.resource)))
        if placed:
            _log.info("placed %d large payloads in the blob store", len(placed))
        return kept, placed

    def _new_audit(
        self,
        hospital_id: str,
        message_id: str,
        content_hash: str,
        submitter: Principal,
        now: datetime,
    ) -> WriteAudit:
        return WriteAudit(
            hospital_id=hospital_id,
            message_id=message_id,
            content_hash=content_hash,
            event_id=new_ulid(now),
            occur_time=now,
            actor=submitter,
        )

    @staticmethod
    def _claimed_audit(receipt: MessageReceipt, fallback: WriteAudit) -> WriteAudit:
        """The event the receipt's claim reserved; ``fallback`` for a receipt claimed
        without one (before ADR 0019, when ingest's own store held the reservation)."""
        return write_audit_from_json(receipt.claim_note) if receipt.claim_note else fallback

    async def _acknowledge(
        self,
        receipt: MessageReceipt,
        submitter: Principal,
        *,
        duplicate: bool,
        unappended: bool = False,
    ) -> Ack:
        """Make sure the write is audited, then acknowledge from the receipt.

        ``unappended``: the caller knows the event was never appended (it just committed).
        """
        audit = self._claimed_audit(
            receipt,
            self._new_audit(
                receipt.hospital_id,
                receipt.message_id,
                receipt.content_hash,
                submitter,
                self._now(),
            ),
        )
        names = _record_names(receipt)
        if unappended or not await self._store.is_audit_appended(
            audit.hospital_id, audit.message_id, audit.content_hash
        ):
            await self._append_audit(audit, receipt.person_token, names)
            await self._store.mark_audit_appended(audit)
        return Ack(receipt.message_id, duplicate, receipt.person_token, names)

    async def _append_audit(
        self, audit: WriteAudit, person_token: str, names: Sequence[str]
    ) -> None:
        """Append the message's write event(s): one per MAX_NAMES_PER_AUDIT_EVENT names."""
        chunks = [
            names[start : start + MAX_NAMES_PER_AUDIT_EVENT]
            for start in range(0, len(names), MAX_NAMES_PER_AUDIT_EVENT)
        ] or [names]
        for event_id, chunk in zip(
            audit_event_ids(audit.event_id, len(chunks)), chunks, strict=True
        ):
            await self._audit.append_write(replace(audit, event_id=event_id), person_token, chunk)

    async def flush_pending_audits(self, limit: int = 100) -> int:
        """Append audit events of stored messages whose append never happened; forget the rest.

        Returns how many events were appended. Stops early (quietly) when the audit service
        is unavailable: the next run continues.
        """
        appended = 0
        pending = await self._store.list_unappended_audits(self._now() - PENDING_AUDIT_GRACE, limit)
        for noted in pending:
            receipt = await self._records.get_receipt(noted.hospital_id, noted.message_id)
            if receipt is None or receipt.content_hash != noted.content_hash:
                # That submission failed before its commit: there is no write to report.
                await self._store.discard_audit(noted)
                continue
            # The claim's event: the note may be a losing attempt's.
            audit = self._claimed_audit(receipt, noted)
            try:
                await self._append_audit(audit, receipt.person_token, _record_names(receipt))
            except DependencyUnavailable:
                return appended
            await self._store.mark_audit_appended(audit)
            if audit.event_id != noted.event_id:
                await self._store.discard_audit(noted)
            appended += 1
        if appended:
            _log.info("appended %d pending write audit events", appended)
        return appended


def _every_part_rejected(parts: Sequence[PartAck]) -> Exception:
    """The failure of a message none of whose parts could be stored: every problem found
    when all are invalid content, else the first part's."""
    problems = [part.problem for part in parts if part.problem is not None]
    if all(isinstance(problem, InvalidMessage) for problem in problems):
        invalid = [problem for problem in problems if isinstance(problem, InvalidMessage)]
        return InvalidMessage(
            invalid[0].reason, [violation for each in invalid for violation in each.violations]
        )
    return problems[0]


def _refuse_unplaceable(planned: Sequence[PlannedRecord], *, has_image: bool) -> None:
    """INVALID_ARGUMENT naming each resource too large to store, before any write: over
    what one archive blob holds, or an image's record (its blob is the image) over what a
    record holds."""
    problems = Problems("RESOURCE_TOO_LARGE")
    for record in planned:
        size = len(record.payload)
        if size > MAX_PLACED_PAYLOAD_BYTES:
            problems.add(
                record.entry.path,
                f"is larger than the {MAX_PLACED_PAYLOAD_BYTES} bytes one resource may have",
            )
        elif size > MAX_PAYLOAD_BYTES and has_image and record.entry.category == Category.IMAGING:
            problems.add(
                record.entry.path, f"is larger than the {MAX_PAYLOAD_BYTES} bytes a record holds"
            )
    problems.raise_if_any()


def _record_names(receipt: MessageReceipt) -> tuple[str, ...]:
    return tuple(record_name(receipt.person_token, record_id) for record_id in receipt.record_ids)
