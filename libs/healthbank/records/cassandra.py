"""RecordStore on Apache Cassandra (keyspace ``<prefix>_records``).

Tables are shaped by their queries:

- ``records``: a person's history, partitioned by (person_token, year) so no
  partition grows without bound; ``person_years`` lists a person's partitions. A row's
  descriptive fields are read from one cell, ``packed_fields`` (ADR 60); their columns
  are still written beside it, and read only for rows written before the cell.
- ``records_by_month``: what the archive tiers, partitioned by (month, person shard), so a
  message of many days of one person (a history sent in bulk) writes a partition a month,
  not one a day, and a month of a city's records spreads over :data:`MONTH_SHARDS`
  partitions (ADR 68); ``record_months`` lists the (month, shard) partitions written.
  ``records_by_day`` and ``record_days``, the index before it (one partition a day), are
  still read and deleted from, never written. A listed partition found drained is unlisted
  (ADR 69).
- ``facts``: emergency facts per person (never tiered).
- ``receipts``: the idempotency key (hospital, message id). INSERT IF NOT EXISTS
  (the one lightweight transaction of a message) claims it with its record ids and
  the writer's ``claim_note``; the plain ``committed`` cell, which no LWT ever writes
  (so Paxos and client timestamps never compete for it), commits it. Receipts of the
  earlier protocol are committed by ``state = 'committed'``.
- ``code_day_counts``: counters per code and UTC day, no longer written or read (the
  forecast counts ``surveillance_cases``; the counter bump was one more request per
  message, the costliest in a bulk load, and stalled writes while a dead replica was
  its leader).
- ``surveillance_cases``: one row per ILI case (local day, district, age band, person
  token; ADR 30), partitioned by day; a set member, so a rewrite changes nothing. Written
  in the message's last batch, before its receipt commits.

A message is stored as: claim the receipt (the LWT) → UNLOGGED batches of its rows, each
under :data:`MAX_BATCH_BYTES` (one batch per message would exceed the node's request cap
for a large message, ADR 18) → the facts version of each person with new facts → the
receipt's ``committed`` cell. Each step starts only once the one before it has been applied
everywhere it must be, so a message is committed only once every row is written (ADR 19),
and a version never names facts not yet written. No LOGGED batch: its batchlog waits on two
other nodes and stalled every write while a dead node was not yet marked down (ADR 36);
an attempt that dies half-way leaves a pending claim that the retry finishes. A retry of a
message whose earlier attempt died after the claim re-writes the batches with the
record ids of the claim, so nothing is stored twice: the pipeline plans and seals
them again under those ids when its own differ (:class:`ClaimedByEarlierAttempt`).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from healthbank.common.v1 import common_pb2
from healthbank.contracts.records import fill_descriptive, record_from_packed
from healthbank.core.ids import new_ulid
from healthbank.records.model import (
    ClaimedByEarlierAttempt,
    EmergencyFact,
    MessageIdConflict,
    MessageReceipt,
    PutOutcome,
    StoredRecord,
    SurveillanceCase,
)
from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.coalesced import CoalescedReads, CoalescedWrites

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS receipts (
        hospital_id text, message_id text, content_hash text, person_token text,
        record_ids list<text>, state text,
        PRIMARY KEY ((hospital_id, message_id))
    );
    CREATE TABLE IF NOT EXISTS records (
        person_token text, year int, effective_time timestamp, record_id text,
        source_hospital text, source_format int, message_id text, source_version text,
        content_hash text, category int, code_system text, code text, code_display text,
        status text, sealed_payload blob, blob_name text,
        PRIMARY KEY ((person_token, year), effective_time, record_id)
    ) WITH CLUSTERING ORDER BY (effective_time ASC, record_id ASC);
    CREATE TABLE IF NOT EXISTS person_years (
        person_token text, year int, PRIMARY KEY ((person_token), year)
    );
    CREATE TABLE IF NOT EXISTS records_by_day (
        day date, effective_time timestamp, person_token text, record_id text,
        PRIMARY KEY ((day), effective_time, person_token, record_id)
    );
    CREATE TABLE IF NOT EXISTS record_days (
        shard int, day date, PRIMARY KEY ((shard), day)
    );
    CREATE TABLE IF NOT EXISTS facts (
        person_token text, record_id text, category int, sealed_fact blob,
        PRIMARY KEY ((person_token), record_id)
    );
    CREATE TABLE IF NOT EXISTS code_day_counts (
        code_system text, code text, day date, count counter,
        PRIMARY KEY ((code_system, code), day)
    )
    """,
    """
    ALTER TABLE receipts ADD IF NOT EXISTS claim_note text;
    ALTER TABLE receipts ADD IF NOT EXISTS committed boolean
    """,
    "ALTER TABLE facts ADD IF NOT EXISTS facts_version text STATIC",
    """
    CREATE TABLE IF NOT EXISTS surveillance_cases (
        day date, district text, age_band text, person_token text,
        PRIMARY KEY ((day), district, age_band, person_token)
    )
    """,
    # A record's descriptive columns packed in one cell, the one that reads select (ADR 60).
    "ALTER TABLE records ADD IF NOT EXISTS packed_fields blob",
    # Tiering's index by month and person shard (ADR 68).
    """
    CREATE TABLE IF NOT EXISTS records_by_month (
        month date, shard int, effective_time timestamp, person_token text, record_id text,
        PRIMARY KEY ((month, shard), effective_time, person_token, record_id)
    );
    CREATE TABLE IF NOT EXISTS record_months (
        bucket int, month date, shard int, PRIMARY KEY ((bucket), month, shard)
    )
    """,
    # ADR 70: the Paxos state of a receipt's claim (a partition a message) is kept 3 hours,
    # not 10 days. A receipt's cells are never deleted or nulled after its claim.
    "ALTER TABLE IF EXISTS receipts WITH gc_grace_seconds = 10800",
]

# What one logged batch may carry (sealed payloads and facts plus a row's other columns):
# the node refuses batches over 4 MiB and requests over 8 MiB (cassandra.yaml.template).
# A record's payload is at most healthbank.records.MAX_PAYLOAD_BYTES, so it fits alone.
MAX_BATCH_BYTES = 2 * 1024 * 1024
_ROW_OVERHEAD_BYTES = 512
# A message's rows at most this large leave with those of concurrent messages (ADR 53): 32
# such messages stay at the node's batch warning (256 KiB). Larger ones are sent alone.
COALESCED_BATCH_BYTES = 8 * 1024

# record_days is one small partition of distinct days (tens of thousands of rows at most).
_DAYS_SHARD = 0
# A month's records of the whole city spread over this many partitions of records_by_month
# (by person): ~30 million records a month make ~120,000 rows (~12 MB) each (ADR 68).
MONTH_SHARDS = 256
# record_months is one small partition of (month, shard) pairs (3,072 a year at most).
_MONTHS_BUCKET = 0
# A drained index partition is unlisted by a delete timestamped this long before the read
# that found it empty (ADR 69): a listing row written after it (a late record of that month:
# every message writes its listing rows again) outlives the delete; one written before it
# came with a record that read would have seen. Covers the writers' clock skew; a partition
# written to within it stays listed until a later run.
UNLIST_MARGIN_S = 600.0
_UNLIST_MONTH = (
    "DELETE FROM record_months USING TIMESTAMP ? WHERE bucket = ? AND month = ? AND shard = ?"
)
_UNLIST_DAY = "DELETE FROM record_days USING TIMESTAMP ? WHERE shard = ? AND day = ?"

# The descriptive columns are still written beside their packed cell (ADR 60): replicas of
# the release before it, running during a rolling update, read them.
_INSERT_RECORD = (
    "INSERT INTO records (person_token, year, effective_time, record_id, source_hospital,"
    " source_format, message_id, source_version, content_hash, category, code_system, code,"
    " code_display, status, sealed_payload, blob_name, packed_fields)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_YEAR = "INSERT INTO person_years (person_token, year) VALUES (?, ?)"
_INSERT_MONTH = (
    "INSERT INTO records_by_month (month, shard, effective_time, person_token, record_id)"
    " VALUES (?, ?, ?, ?, ?)"
)
_INSERT_MONTHS = "INSERT INTO record_months (bucket, month, shard) VALUES (?, ?, ?)"
_INSERT_FACT = (
    "INSERT INTO facts (person_token, record_id, category, sealed_fact) VALUES (?, ?, ?, ?)"
)
_SET_FACTS_VERSION = "UPDATE facts SET facts_version = ? WHERE person_token = ?"
_INSERT_CASE = (
    "INSERT INTO surveillance_cases (day, district, age_band, person_token) VALUES (?, ?, ?, ?)"
)
# Days per surveillance read (one IN query over day partitions).
_CASE_DAYS_PER_QUERY = 100
_COMMIT_RECEIPT = "UPDATE receipts SET committed = true WHERE hospital_id = ? AND message_id = ?"
# What a read selects: the key, the packed cell and the payload. Each column selected costs
# the node and the driver per row; the twelve descriptive ones cost a history of 1,000
# records ~30 % of the node's CPU and ~25 % of the driver's (ADR 60).
_PACKED_COLUMNS = "person_token, effective_time, record_id, packed_fields, sealed_payload"
# What a row written before ADR 60 (no packed cell) is read by.
_RECORD_COLUMNS = (
    "person_token, effective_time, record_id, source_hospital, source_format, message_id,"
    " source_version, content_hash, category, code_system, code, code_display, status,"
    " sealed_payload, blob_name"
)
_RECORD_FIELDS = tuple(column.strip() for column in _RECORD_COLUMNS.split(","))


class CassandraRecordStore:
    """RecordStore on Cassandra; see the module docstring for the write protocol."""

    def __init__(
        self, database: CassandraDatabase, *, unlist_margin_s: float = UNLIST_MARGIN_S
    ) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`;
        ``unlist_margin_s``: see :data:`UNLIST_MARGIN_S`."""
        self._db = database
        self._unlist_margin_s = unlist_margin_s
        # Concurrent messages' small writes, receipt and facts-version reads leave together
        # (ADR 53).
        self._writes = CoalescedWrites(database)
        self._receipts = CoalescedReads(
            database,
            "SELECT * FROM receipts WHERE hospital_id = ? AND message_id IN ?",
            lambda row: (row.hospital_id, row.message_id),
        )
        self._facts_versions = CoalescedReads(
            database,
            "SELECT person_token, facts_version FROM facts WHERE person_token IN ?"
            " PER PARTITION LIMIT 1",
            lambda row: (row.person_token,),
        )

    async def open(self) -> CassandraRecordStore:
        """Connect and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def put_message(
        self,
        receipt: MessageReceipt,
        records: Sequence[StoredRecord],
        facts: Sequence[EmergencyFact],
        cases: Sequence[SurveillanceCase] = (),
    ) -> PutOutcome:
        """See RecordStore.put_message."""
        claim = await self._db.execute(
            "INSERT INTO receipts (hospital_id, message_id, content_hash, person_token,"
            " record_ids, claim_note, state) VALUES (?, ?, ?, ?, ?, ?, 'pending') IF NOT EXISTS",
            (
                receipt.hospital_id,
                receipt.message_id,
                receipt.content_hash,
                receipt.person_token,
                list(receipt.record_ids),
                receipt.claim_note,
            ),
        )
        row = claim[0]
        if not row.applied:
            if row.content_hash != receipt.content_hash:
                raise MessageIdConflict(receipt.message_id)
            first = _receipt_from_row(row)
            if _committed(row):
                return PutOutcome(duplicate=True, receipt=first)
            # An earlier attempt claimed the message and died: finish it, under its record
            # ids (payloads sealed for other ids would never open again).
            if (first.record_ids, first.person_token) != (
                receipt.record_ids,
                receipt.person_token,
            ):
                raise ClaimedByEarlierAttempt(first)
            receipt = first
        await self._write_batches(receipt, records, facts, cases)
        return PutOutcome(duplicate=False, receipt=receipt)

    async def _write_batches(
        self,
        receipt: MessageReceipt,
        records: Sequence[StoredRecord],
        facts: Sequence[EmergencyFact],
        cases: Sequence[SurveillanceCase] = (),
    ) -> None:
        batches: list[list[tuple[str, tuple[Any, ...]]]] = [[]]
        sizes = [0]

        def add(statements: list[tuple[str, tuple[Any, ...]]], nbytes: int) -> None:
            if batches[-1] and sizes[-1] + nbytes > MAX_BATCH_BYTES:
                batches.append([])
                sizes.append(0)
            batches[-1].extend(statements)
            sizes[-1] += nbytes

        # The index rows (a person's years, the months that have records) repeat across a
        # message's records: each is written once (the receipt commits only after every
        # batch is written, so which batch carries it does not matter).
        indexed: set[tuple[str, tuple[Any, ...]]] = set()

        def index(statement: tuple[str, tuple[Any, ...]]) -> list[tuple[str, tuple[Any, ...]]]:
            if statement in indexed:
                return []
            indexed.add(statement)
            return [statement]

        for record in records:
            when = record.effective_time
            month, shard = _month_of(when), month_shard(record.person_token)
            add(
                [
                    (_INSERT_RECORD, _record_values(record)),
                    *index((_INSERT_YEAR, (record.person_token, when.year))),
                    (_INSERT_MONTH, (month, shard, when, record.person_token, record.record_id)),
                    *index((_INSERT_MONTHS, (_MONTHS_BUCKET, month, shard))),
                ],
                len(record.sealed_payload) + _ROW_OVERHEAD_BYTES,
            )
        for fact in facts:
            add(
                [
                    (
                        _INSERT_FACT,
                        (fact.person_token, fact.record_id, fact.category, fact.sealed_fact),
                    )
                ],
                len(fact.sealed_fact) + _ROW_OVERHEAD_BYTES,
            )
        # Cases are idempotent set members, written before the commit so no stored message
        # misses them.
        batches[-1].extend(
            (_INSERT_CASE, (c.day, c.district, c.age_band, c.person_token)) for c in cases
        )
        for batch, size in zip(batches, sizes, strict=True):
            if size <= COALESCED_BATCH_BYTES:
                await self._writes.apply(batch)
            else:
                await self._db.execute_batch(batch)
        # Then the versions, so a version is never seen before all of its facts...
        await self._writes.apply(
            [
                (_SET_FACTS_VERSION, (new_ulid(), person))
                for person in sorted({fact.person_token for fact in facts})
            ]
        )
        # ...and last the commit: only after every row and version is written.
        await self._writes.apply([(_COMMIT_RECEIPT, (receipt.hospital_id, receipt.message_id))])

    async def get_receipt(
        self, hospital_id: str, message_id: str, *, linearizable: bool = True
    ) -> MessageReceipt | None:
        """See RecordStore.get_receipt (committed messages only; SERIAL when linearizable,
        which also completes a claim left in flight)."""
        if linearizable:
            rows = await self._db.execute(
                "SELECT * FROM receipts WHERE hospital_id = ? AND message_id = ?",
                (hospital_id, message_id),
                consistency="SERIAL",
            )
        else:
            rows = await self._receipts.rows(hospital_id, message_id)
        if not rows or not _committed(rows[0]):
            return None
        return _receipt_from_row(rows[0])

    async def list_records(
        self,
        person_token: str,
        *,
        categories: Sequence[int] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[StoredRecord]:
        """See RecordStore.list_records."""
        years = [
            row.year
            for row in await self._db.execute(
                "SELECT year FROM person_years WHERE person_token = ?", (person_token,)
            )
            if (start is None or row.year >= start.year) and (end is None or row.year <= end.year)
        ]
        lower = start or datetime(1, 1, 1, tzinfo=UTC)
        upper = end or datetime(9999, 12, 31, tzinfo=UTC)
        # Every year's partition at once: a long history spans many.
        by_year = await asyncio.gather(
            *(
                self._read_records(
                    "WHERE person_token = ? AND year = ? AND effective_time >= ?"
                    " AND effective_time < ?",
                    (person_token, year, lower, upper),
                )
                for year in sorted(years)
            )
        )
        found = [record for records in by_year for record in records]
        if categories:
            wanted = set(categories)
            found = [record for record in found if record.category in wanted]
        return found

    async def facts_version(self, person_token: str) -> str | None:
        """See RecordStore.facts_version (a static column of the facts partition)."""
        rows = await self._facts_versions.rows(person_token)
        return str(rows[0].facts_version) if rows and rows[0].facts_version else None

    async def list_facts(self, person_token: str) -> list[EmergencyFact]:
        """See RecordStore.list_facts."""
        rows = await self._db.execute(
            "SELECT person_token, record_id, category, sealed_fact FROM facts"
            " WHERE person_token = ?",
            (person_token,),
        )
        return [EmergencyFact(r.person_token, r.record_id, r.category, r.sealed_fact) for r in rows]

    async def list_effective_before(self, cutoff: datetime, limit: int) -> list[StoredRecord]:
        """See RecordStore.list_effective_before: month by month, oldest first, from both
        indexes (``records_by_month`` and, for records written before it, ``records_by_day``).
        A listed partition wholly before ``cutoff`` that holds nothing (its records tiered)
        is unlisted, so later runs do not read it again (ADR 69)."""
        months: dict[date, list[_IndexPartition]] = {}
        for row in await self._db.execute(
            "SELECT month, shard FROM record_months WHERE bucket = ? AND month <= ?",
            (_MONTHS_BUCKET, _month_of(cutoff)),
        ):
            month = _as_date(row.month)
            months.setdefault(month, []).append(
                _IndexPartition(
                    "SELECT effective_time, person_token, record_id FROM records_by_month"
                    " WHERE month = ? AND shard = ? AND effective_time < ? LIMIT ?",
                    (month, row.shard, cutoff, limit),
                    (_UNLIST_MONTH, (_MONTHS_BUCKET, month, row.shard))
                    if _starts_by(_next_month(month), cutoff)
                    else None,
                )
            )
        for row in await self._db.execute(
            "SELECT day FROM record_days WHERE shard = ? AND day <= ?",
            (_DAYS_SHARD, cutoff.date()),
        ):
            day = _as_date(row.day)
            months.setdefault(day.replace(day=1), []).append(
                _IndexPartition(
                    "SELECT effective_time, person_token, record_id FROM records_by_day"
                    " WHERE day = ? AND effective_time < ? LIMIT ?",
                    (day, cutoff, limit),
                    (_UNLIST_DAY, (_DAYS_SHARD, day))
                    if _starts_by(day + timedelta(days=1), cutoff)
                    else None,
                )
            )
        found: list[StoredRecord] = []
        for month in sorted(months):
            # A month's partitions at once; each holds its oldest first, so the month's
            # oldest ``limit`` are among what each returned.
            read_at = time.time()
            listed = await asyncio.gather(
                *(self._db.execute(part.query, part.params) for part in months[month])
            )
            await self._unlist_drained(months[month], listed, read_at)
            pointers = sorted(
                (_utc(row.effective_time), row.person_token, row.record_id)
                for rows in listed
                for row in rows
            )
            for when, person_token, record_id in pointers:
                found.extend(
                    await self._read_records(
                        "WHERE person_token = ? AND year = ? AND effective_time = ?"
                        " AND record_id = ?",
                        (person_token, when.year, when, record_id),
                    )
                )
                if len(found) >= limit:
                    return found
        return found

    async def _unlist_drained(
        self, parts: Sequence[_IndexPartition], listed: Sequence[Sequence[Any]], read_at: float
    ) -> None:
        """Unlist each of ``parts`` that the read at ``read_at`` found empty though its whole
        span is before the cutoff, timestamped so that a listing written since survives."""
        stamp = int((read_at - self._unlist_margin_s) * 1_000_000)
        await asyncio.gather(
            *(
                self._db.execute(part.unlist[0], (stamp, *part.unlist[1]))
                for part, rows in zip(parts, listed, strict=True)
                if part.unlist is not None and not rows
            )
        )

    async def _read_records(self, where: str, params: Sequence[Any]) -> list[StoredRecord]:
        """The records of one partition ``where`` selects, by their packed cells; read
        again by their columns when a row has none (written before ADR 60)."""
        rows = await self._db.execute(f"SELECT {_PACKED_COLUMNS} FROM records {where}", params)
        if all(row.packed_fields is not None for row in rows):
            return [_record_from_packed(row) for row in rows]
        rows = await self._db.execute(
            f"SELECT {_RECORD_COLUMNS}, packed_fields FROM records {where}", params
        )
        return [
            _record_from_packed(row) if row.packed_fields is not None else _record_from_row(row)
            for row in rows
        ]

    async def delete_records(self, records: Sequence[StoredRecord]) -> None:
        """See RecordStore.delete_records."""
        await self._db.execute_many(
            "DELETE FROM records WHERE person_token = ? AND year = ? AND effective_time = ?"
            " AND record_id = ?",
            [
                (r.person_token, r.effective_time.year, r.effective_time, r.record_id)
                for r in records
            ],
        )
        await self._db.execute_many(
            "DELETE FROM records_by_month WHERE month = ? AND shard = ? AND effective_time = ?"
            " AND person_token = ? AND record_id = ?",
            [
                (
                    _month_of(r.effective_time),
                    month_shard(r.person_token),
                    r.effective_time,
                    r.person_token,
                    r.record_id,
                )
                for r in records
            ],
        )
        # A record written before records_by_month is indexed by its day (ADR 68); for one
        # written after, this is a tombstone in a day partition nothing lists.
        await self._db.execute_many(
            "DELETE FROM records_by_day WHERE day = ? AND effective_time = ? AND person_token = ?"
            " AND record_id = ?",
            [
                (r.effective_time.date(), r.effective_time, r.person_token, r.record_id)
                for r in records
            ],
        )

    async def surveillance_counts(self, start: date, end: date) -> dict[tuple[date, str], int]:
        """See RecordStore.surveillance_counts."""
        days = [start + timedelta(days=n) for n in range((end - start).days)]
        persons: dict[tuple[date, str], set[str]] = {}
        for first in range(0, len(days), _CASE_DAYS_PER_QUERY):
            chunk = days[first : first + _CASE_DAYS_PER_QUERY]
            rows = await self._db.execute(
                "SELECT day, district, person_token FROM surveillance_cases"
                f" WHERE day IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
            for row in rows:
                persons.setdefault((_as_date(row.day), row.district), set()).add(row.person_token)
        return {key: len(tokens) for key, tokens in persons.items()}

    async def check(self) -> None:
        """See RecordStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See RecordStore.close."""
        await self._db.close()


def _record_values(record: StoredRecord) -> tuple[Any, ...]:
    return (
        record.person_token,
        record.effective_time.year,
        record.effective_time,
        record.record_id,
        record.source_hospital,
        record.source_format,
        record.message_id,
        record.source_version,
        record.content_hash,
        record.category,
        record.code_system,
        record.code,
        record.code_display,
        record.status,
        record.sealed_payload,
        record.blob_name,
        _packed_fields(record),
    )


def _packed_fields(record: StoredRecord) -> bytes:
    """The record's descriptive fields as one cell: the API's Record message with only
    those set, so protobuf's compatibility rules keep every cell written readable."""
    message = common_pb2.Record()
    fill_descriptive(message, record)
    return message.SerializeToString()


def _record_from_packed(row: Any) -> StoredRecord:
    """A record from a row of _PACKED_COLUMNS."""
    return record_from_packed(
        row.packed_fields,
        record_id=row.record_id,
        person_token=row.person_token,
        effective_time=_utc(row.effective_time),
        sealed_payload=row.sealed_payload,
    )


def _record_from_row(row: Any) -> StoredRecord:
    """A record from a row of _RECORD_COLUMNS (then packed_fields, unused here)."""
    # The row's first columns are the record's fields; two are mended after.
    fields = dict(zip(_RECORD_FIELDS, row[: len(_RECORD_FIELDS)], strict=True))
    fields["effective_time"] = _utc(fields["effective_time"])
    fields["blob_name"] = fields["blob_name"] or ""
    return StoredRecord.from_fields(fields)


def _receipt_from_row(row: Any) -> MessageReceipt:
    return MessageReceipt(
        hospital_id=row.hospital_id,
        message_id=row.message_id,
        content_hash=row.content_hash,
        person_token=row.person_token,
        record_ids=tuple(row.record_ids or ()),
        claim_note=row.claim_note or "",
    )


def _committed(row: Any) -> bool:
    return bool(row.committed) or row.state == "committed"


def _utc(moment: datetime) -> datetime:
    """The driver returns naive UTC datetimes (millisecond precision). Made aware by
    arithmetic: ``replace(tzinfo=UTC)`` costs ~1 µs (keyword parsing), this ~0.1, and a
    1,000-record history makes a thousand."""
    return _AWARE_EPOCH + (moment - _NAIVE_EPOCH) if moment.tzinfo is None else moment


_NAIVE_EPOCH = datetime(1970, 1, 1)
_AWARE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def month_shard(person_token: str) -> int:
    """The records_by_month partition of a person's records within a month (ADR 68): the
    same for every record of the person, spread evenly over :data:`MONTH_SHARDS`."""
    return zlib.crc32(person_token.encode()) % MONTH_SHARDS


class _IndexPartition(NamedTuple):
    """One listed partition of a tiering index: its read and, when the whole partition lies
    before the cutoff, the statement that unlists it (run only when the read finds none)."""

    query: str
    params: tuple[Any, ...]
    unlist: tuple[str, tuple[Any, ...]] | None


def _next_month(month: date) -> date:
    """The first day of the month after ``month`` (itself a first day)."""
    return (month + timedelta(days=31)).replace(day=1)


def _starts_by(day: date, cutoff: datetime) -> bool:
    """Whether UTC midnight starting ``day`` is at or before ``cutoff``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) <= cutoff


def _month_of(moment: datetime) -> date:
    """The first day of ``moment``'s month (UTC): a records_by_month partition."""
    return moment.date().replace(day=1)


def _as_date(value: Any) -> date:
    """The driver returns cassandra.util.Date for `date` columns."""
    if isinstance(value, date):
        return value
    return date(1970, 1, 1) + timedelta(days=int(value.days_from_epoch))
