"""Record-lookup's reads, against the consent gate and narrow ports (no gRPC here).

History::

    gate.admit_reading (SELF | consent.Check ‖ identity (the persons merged into this one)
      → audit ‖ hot store ‖ archive (cold), of the person and each merged one)
      → merge → open each payload (a stub: its blob from the archive, ADR 22) → every item,
      oldest first

A history follows merges (ADR 33): the records filed under a person merged into the one
asked about are theirs too, read under the consent of the person asked about (they are the
same human), and the read is in each merged person's access log as well. Recent exams and
images follow them the same way.

Emergency summary::

    identity (national ID → person) → gate.admit_emergency (consent.BreakGlass → audit,
      flagged for review ‖ the facts version → the summary cached at that version, or the
      sealed facts) → open → decode → summarize

"‖": concurrently (ADR 0023). The rows are fetched while the read is audited, but opened and
returned only once the audit answered: no audit, no read.

Image::

    gate.admit (the IMAGING category ‖ identity (the persons merged into this one); audited
      as ACTION_READ_IMAGE naming the record) → the record, hot or cold, of the person or a
      merged one → its blob from the archive (with this service's token)
      → open it (sealed by ingest for the record's person) → the DICOM bytes

Everything is read and opened before anything is returned: a failing archive or a tampered
payload must not leave the caller with a silently truncated history. Every emergency read
is audited, also when its summary comes from the cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.contracts.facts import Fact, MalformedFact, decode_fact, encode_fact
from healthbank.contracts.names import record_name
from healthbank.contracts.principal import Principal
from healthbank.contracts.terminology import LOINC
from healthbank.crypto import Sealer, TamperedPayload
from healthbank.records import EmergencyFact, RecordStore, StoredRecord, is_placed_payload_stub
from healthbank.rpc.gate import Admission, ConsentGate, MergedPersons, ReadScope
from healthbank.storage.cache import Cache, emergency_summary_key
from services.record_lookup import domain, exam_equivalence

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundPerson:
    """A person found by national ID, and the persons merged into them (ADR 33), whose
    records are theirs too."""

    person_token: str
    merged_tokens: tuple[str, ...] = ()

    @property
    def all_tokens(self) -> tuple[str, ...]:
        """The person's token first, then the merged ones."""
        return (self.person_token, *self.merged_tokens)


class PersonDirectory(Protocol):
    """Finds a person by national ID (the identity service)."""

    async def person_of(self, national_id: str) -> FoundPerson:
        """The person; NOT_FOUND (PERSON_NOT_FOUND) when nobody has that ID."""
        ...

    async def merged_into(self, person_token: str) -> Sequence[str]:
        """The persons merged into ``person_token`` (none for an unknown person)."""
        ...


class ColdArchive(Protocol):
    """A person's records moved to the archive (the archive service)."""

    async def cold_records(
        self, person_token: str, start: datetime | None, end: datetime | None
    ) -> list[StoredRecord]:
        """Every cold record effective in [start, end) (open ends: unbounded), still sealed."""
        ...


@dataclass(frozen=True)
class SealedBlob:
    """An imaging blob as the archive keeps it: sealed by ingest, bound to its person."""

    person_token: str
    content_type: str
    sealed: bytes


class ImageArchive(Protocol):
    """Imaging blobs (the archive service, read with this service's own credentials)."""

    async def sealed_blob(self, blob_name: str) -> SealedBlob:
        """The blob named ``blobs/{sha256}``; NOT_FOUND (BLOB_NOT_FOUND) when absent."""
        ...


class ImageNotFound(Exception):
    """The person has no such record, or the record carries no image."""


@dataclass(frozen=True)
class Image:
    """A record's image, opened for an admitted reader."""

    record_name: str
    blob_name: str
    content_type: str
    content: bytes


class HistoryEntry(NamedTuple):
    """One record of a history, its payload opened (a tuple: a history builds a thousand,
    and a frozen dataclass's ``__init__`` costs ~1 us of them each)."""

    record: StoredRecord
    is_cold: bool
    fhir_json: bytes


@dataclass(frozen=True)
class OrderedExam:
    """An exam about to be ordered: a modality and body site, or a LOINC code."""

    modality: str = ""
    body_site: str = ""
    loinc_code: str = ""


@dataclass(frozen=True)
class RecentExam:
    """An earlier exam equivalent to the one ordered, and the rule that says so."""

    record: StoredRecord
    is_cold: bool
    rule: str


@dataclass(frozen=True)
class EmergencyReport:
    """An emergency summary and the access behind it."""

    person_token: str
    summary: domain.Summary
    generate_time: datetime
    audit_leaf_index: int
    break_glass_name: str


class RecordLookupFlow:
    """Runs history and emergency reads; one instance per process.

    Args:
        records: the shared hot record store.
        gate: decides and audits each read and opens the admitted person's payloads.
        directory: national ID → person token.
        archive: cold records.
        images: imaging blobs.
        sealer: seals and opens this service's cached summaries.
        cache: emergency summaries, sealed, per person.
        cache_ttl_seconds: how long a computed summary is reused (0: never).
        now: the clock (UTC).
    """

    def __init__(
        self,
        *,
        records: RecordStore,
        gate: ConsentGate,
        directory: PersonDirectory,
        archive: ColdArchive,
        images: ImageArchive,
        sealer: Sealer,
        cache: Cache,
        cache_ttl_seconds: float,
        now: Callable[[], datetime],
    ) -> None:
        self._records = records
        self._gate = gate
        self._directory = directory
        self._archive = archive
        self._images = images
        self._sealer = sealer
        self._cache = cache
        self._cache_ttl_seconds = cache_ttl_seconds
        self._now = now

    async def history(
        self,
        principal: Principal,
        person_token: str,
        categories: Sequence[int],
        start: datetime | None,
        end: datetime | None,
    ) -> list[HistoryEntry]:
        """The person's records in ``categories`` (empty: all) effective in [start, end),
        with those of every person merged into them."""

        async def sealed_records(
            scope: ReadScope,
        ) -> tuple[frozenset[int], list[StoredRecord], list[StoredRecord]]:
            readable = domain.readable_categories(categories, scope.permitted_categories)
            hot, cold = await self._sealed_records(scope.person_tokens, readable, start, end)
            return readable, hot, cold

        admission, (readable, hot, cold) = await self._gate.admit_reading(
            principal,
            person_token,
            sealed_records,
            action=audit_pb2.ACTION_READ_HISTORY,
            categories=categories,
            merged_persons=self._merged_into(person_token),
        )
        merged = domain.merge_history(hot, cold, readable)
        payloads = await self._payloads(admission, [record for record, _ in merged])
        return [
            HistoryEntry(record, is_cold, payload)
            for (record, is_cold), payload in zip(merged, payloads, strict=True)
        ]

    def _merged_into(self, person_token: str) -> MergedPersons:
        """Identity's lookup of the persons merged into ``person_token``, for the gate: asked
        on every read, never cached, so an unmerge holds from the next read on."""
        return lambda: self._directory.merged_into(person_token)

    async def _sealed_records(
        self,
        tokens: Sequence[str],
        categories: Iterable[int],
        start: datetime | None,
        end: datetime | None,
    ) -> tuple[list[StoredRecord], list[StoredRecord]]:
        """(hot, cold) records of each of ``tokens`` effective in [start, end), both tiers
        read at once; hot ones in ``categories`` only (empty: all), cold ones all."""
        return await asyncio.gather(
            self._hot_records(tokens, categories, start, end),
            self._cold_records(tokens, start, end),
        )

    async def _hot_records(
        self,
        tokens: Sequence[str],
        categories: Iterable[int],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[StoredRecord]:
        wanted = sorted(categories)
        listed = await asyncio.gather(
            *(
                self._records.list_records(token, categories=wanted, start=start, end=end)
                for token in tokens
            )
        )
        return [record for records in listed for record in records]

    async def _cold_records(
        self, tokens: Sequence[str], start: datetime | None, end: datetime | None
    ) -> list[StoredRecord]:
        listed = await asyncio.gather(
            *(self._archive.cold_records(token, start, end) for token in tokens)
        )
        return [record for records in listed for record in records if _belongs_to(record, tokens)]

    async def _payload(self, admission: Admission, record: StoredRecord) -> bytes:
        """A record's FHIR JSON (see :meth:`_payloads`)."""
        (payload,) = await self._payloads(admission, [record])
        return payload

    async def _payloads(self, admission: Admission, records: Sequence[StoredRecord]) -> list[bytes]:
        """Each record's FHIR JSON: from the record, or from the blob its stub points to when
        the resource was too large for a record (ADR 22)."""
        payloads = await admission.open_payloads(
            [(record.record_id, record.sealed_payload, record.person_token) for record in records]
        )
        for index, (record, payload) in enumerate(zip(records, payloads, strict=True)):
            # The payload first: reading blob_name unpacks a record's cell (ADR 63).
            if is_placed_payload_stub(payload) and record.blob_name:
                _, payloads[index] = await self._open_blob(admission, record)
        return payloads

    async def _open_blob(self, admission: Admission, record: StoredRecord) -> tuple[str, bytes]:
        """(content type, content) of the blob a record names, opened for the admitted
        reader; ImageNotFound if the blob belongs to someone else."""
        name = record_name(record.person_token, record.record_id)
        blob = await self._images.sealed_blob(record.blob_name)
        if blob.person_token != record.person_token or blob.person_token not in admission.persons:
            # Never open (or hand out) another person's blob, whatever a record points to.
            _log.error("record %s points to a blob of another person", name)
            raise ImageNotFound(name)
        return blob.content_type, await admission.open_blob(blob.sealed, blob.person_token)

    async def recent_exams(
        self, principal: Principal, person_token: str, ordered: OrderedExam, since: datetime
    ) -> list[RecentExam]:
        """The person's exams since ``since`` equivalent to ``ordered``, newest first, read
        (hot and cold) under the same consent and audit as a history of that category, with
        those of every person merged into them."""
        category = (
            common_pb2.RECORD_CATEGORY_OBSERVATION
            if ordered.loinc_code
            else common_pb2.RECORD_CATEGORY_IMAGING
        )

        async def sealed_records(
            scope: ReadScope,
        ) -> tuple[list[StoredRecord], list[StoredRecord]]:
            if not domain.readable_categories([category], scope.permitted_categories):
                return [], []
            return await self._sealed_records(scope.person_tokens, [category], since, None)

        admission, (hot, cold) = await self._gate.admit_reading(
            principal,
            person_token,
            sealed_records,
            action=audit_pb2.ACTION_READ_HISTORY,
            categories=[category],
            merged_persons=self._merged_into(person_token),
        )
        found = []
        candidates = [(record, False) for record in hot] + [(record, True) for record in cold]
        for record, is_cold in candidates:
            if record.category != category:
                continue
            rule = await self._equivalent(admission, record, ordered)
            if rule is not None:
                found.append(RecentExam(record, is_cold, rule))
        return sorted(found, key=lambda exam: exam.record.effective_time, reverse=True)

    async def _equivalent(
        self, admission: Admission, record: StoredRecord, ordered: OrderedExam
    ) -> str | None:
        """The rule under which ``record`` counts as ``ordered``, or None."""
        if ordered.loinc_code:
            rule = exam_equivalence.lab_rule(ordered.loinc_code)
            matches = record.code_system == LOINC and record.code in rule.loinc_codes
            return rule.name if matches else None
        imaging = exam_equivalence.imaging_rule(ordered.modality, ordered.body_site)
        if record.code.upper() not in imaging.modalities:
            return None
        # The body site is inside the sealed study (DICOM BodyPartExamined per series).
        study = json.loads(await self._payload(admission, record))
        sites = {
            exam_equivalence.normalize_site(str(series.get("bodySite", {}).get(key, "")))
            for series in study.get("series", [])
            if isinstance(series, dict) and isinstance(series.get("bodySite"), dict)
            for key in ("display", "code")
        }
        return imaging.name if sites & imaging.body_sites else None

    async def image(self, principal: Principal, person_token: str, record_id: str) -> Image:
        """The image of one of the person's records (or of a person merged into them), for a
        reader consent admits to the IMAGING category; the read is audited before the record
        is even looked up. The image carries its record's own name, as a history item does.

        Raises ImageNotFound when the record does not exist or has no image.
        """
        name = record_name(person_token, record_id)
        admission = await self._gate.admit(
            principal,
            person_token,
            action=audit_pb2.ACTION_READ_IMAGE,
            categories=[common_pb2.RECORD_CATEGORY_IMAGING],
            resource_names=[name],
            merged_persons=self._merged_into(person_token),
        )
        tokens = (person_token, *sorted(admission.merged_tokens))
        record = await self._imaging_record(tokens, record_id)
        if record is None or not record.blob_name:
            raise ImageNotFound(name)
        content_type, content = await self._open_blob(admission, record)
        return Image(
            record_name=record.name,
            blob_name=record.blob_name,
            content_type=content_type,
            content=content,
        )

    async def _imaging_record(self, tokens: Sequence[str], record_id: str) -> StoredRecord | None:
        """The imaging record ``record_id`` of one of ``tokens``, hot tier first, then the
        archive (asked only on a miss: most images are read while hot)."""
        imaging = [common_pb2.RECORD_CATEGORY_IMAGING]
        for record in await self._hot_records(tokens, imaging):
            if record.record_id == record_id:
                return record
        for record in await self._cold_records(tokens, None, None):
            if record.record_id == record_id:
                return record
        return None

    async def emergency_summary(
        self, principal: Principal, national_id: str, justification: str
    ) -> EmergencyReport:
        """Break the glass for the person with ``national_id`` and summarize their facts,
        with those of every person merged into them (a hospital's duplicate registration may
        hold the allergy)."""
        person = await self._directory.person_of(national_id)
        person_token = person.person_token
        admission, stored = await self._gate.admit_emergency(
            principal,
            person_token,
            justification,
            lambda _: self._stored_facts(person),
            merged_tokens=frozenset(person.merged_tokens),
        )
        facts, generate_time = await self._facts(admission, stored)
        return EmergencyReport(
            person_token=person_token,
            summary=domain.summarize(facts),
            generate_time=generate_time,
            audit_leaf_index=admission.audit_leaf_index,
            break_glass_name=admission.authority_name,
        )

    async def _stored_facts(self, person: FoundPerson) -> _StoredFacts:
        """The person's facts version, then their cached entry if it was computed at that
        version, else their sealed facts (read after the version, so at least that new).
        With persons merged into them, the version names each one's too, so a merge, an
        unmerge or a new fact of any of them is a new version."""
        tokens = person.all_tokens
        versions, cached = await asyncio.gather(
            asyncio.gather(*(self._records.facts_version(token) for token in tokens)),
            self._cache.get(emergency_summary_key(person.person_token)),
        )
        version = _combined_version(tokens, [v or "" for v in versions])
        if cached is not None:
            cached_version, _, sealed = cached.partition(b"\n")
            if cached_version == version.encode():
                return _StoredFacts(version, sealed, [])
        return _StoredFacts(version, None, await self._list_facts(tokens))

    async def _list_facts(self, tokens: Sequence[str]) -> list[EmergencyFact]:
        listed = await asyncio.gather(*(self._records.list_facts(token) for token in tokens))
        return [row for rows in listed for row in rows]

    async def _facts(
        self, admission: Admission, stored: _StoredFacts
    ) -> tuple[list[Fact], datetime]:
        """The person's facts and when they were read: from the cached entry, or from the
        store's rows (then cached, under the facts version they were read at)."""
        person_token = admission.person_token
        key = emergency_summary_key(person_token)
        # The version is bound in: an entry cannot be passed off as another version's.
        aad = domain.summary_aad(person_token) + b":" + stored.version.encode()
        rows = stored.rows
        if stored.cached is not None:
            try:
                return _decode_cached(await self._sealer.open(stored.cached, aad))
            except (TamperedPayload, MalformedFact):
                _log.warning("cached emergency facts of %s unreadable; recomputing", person_token)
                await self._cache.delete(key)
            rows = await self._list_facts((person_token, *sorted(admission.merged_tokens)))
        facts = []
        for row in rows:  # each opened as its own person's (a merged one's, or theirs)
            owner = row.person_token
            facts.append(
                await admission.open_fact(row.record_id, row.sealed_fact, row.category, owner)
            )
        generate_time = self._now()
        if self._cache_ttl_seconds > 0:
            sealed = await self._sealer.seal(_encode_cached(facts, generate_time), aad)
            entry = stored.version.encode() + b"\n" + sealed
            await self._cache.set(key, entry, self._cache_ttl_seconds)
        return facts, generate_time


@dataclass(frozen=True)
class _StoredFacts:
    """What the emergency read fetched while it was audited: the facts version, and the
    entry cached at that version (sealed) or else the sealed facts."""

    version: str
    cached: bytes | None
    rows: list[EmergencyFact]


def _combined_version(tokens: Sequence[str], versions: Sequence[str]) -> str:
    """The facts version of a person alone, or with merged persons each token's with its
    version (a ULID or "": no comma or newline in either)."""
    if len(tokens) == 1:
        return versions[0]
    return ",".join(f"{token}={version}" for token, version in zip(tokens, versions, strict=True))


def _belongs_to(record: StoredRecord, owners: Container[str]) -> bool:
    """Whether a cold record is of one of ``owners`` (the person read, or one merged in)."""
    if record.person_token in owners:
        return True
    # Never hand out another person's record, whatever the archive says.
    _log.error("archive returned a record of another person; dropped")
    return False


# A cached entry is the facts version, a newline, and this sealed: the computation time,
# then one fact per line (compact JSON has no raw newline), so the cache holds the same fact
# shape the store does. A version is a ULID or "" (no facts yet), or with merged persons
# those joined by commas with their tokens (:func:`_combined_version`): no newline.
def _encode_cached(facts: Iterable[Fact], generate_time: datetime) -> bytes:
    return b"\n".join([generate_time.isoformat().encode(), *(encode_fact(f) for f in facts)])


def _decode_cached(entry: bytes) -> tuple[list[Fact], datetime]:
    head, *lines = entry.split(b"\n")
    try:
        generate_time = datetime.fromisoformat(head.decode())
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedFact("cached entry has no generation time") from error
    if generate_time.tzinfo is None:
        raise MalformedFact("cached generation time has no zone")
    return [decode_fact(line, 0) for line in lines], generate_time
