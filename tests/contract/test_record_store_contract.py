"""One contract for the hot record store, run against SQLite and real Cassandra."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from contract_support import StoreKind
from engine_support import cassandra_database
from record_support import make_record, receipt_for

from healthbank.records import (
    ClaimedByEarlierAttempt,
    EmergencyFact,
    MessageIdConflict,
    MessageReceipt,
    RecordStore,
    SqliteRecordStore,
    StoredRecord,
    SurveillanceCase,
)
from healthbank.records.cassandra import MIGRATIONS, CassandraRecordStore, month_shard

T0 = datetime(2024, 3, 1, 8, 30, tzinfo=UTC)


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(SqliteRecordStore, "records.db", CassandraRecordStore, "records", MIGRATIONS)


async def test_put_then_list_in_time_order(store: RecordStore) -> None:
    records = [make_record("tok1", T0 + timedelta(days=400 * i)) for i in (2, 0, 1)]
    outcome = await store.put_message(receipt_for("m1", "tok1", records), records, [])
    assert not outcome.duplicate
    listed = await store.list_records("tok1")
    assert [r.effective_time for r in listed] == sorted(r.effective_time for r in records)
    # Read back field for field (Cassandra builds them from rows, StoredRecord.from_fields).
    assert listed == sorted(records, key=lambda r: r.effective_time)
    assert {hash(r) for r in listed} == {hash(r) for r in records}
    assert listed[0].sealed_payload == b"\x01sealed"
    assert await store.list_records("someone-else") == []


async def test_retry_is_stored_once(store: RecordStore) -> None:
    first = [make_record("tok2", T0)]
    await store.put_message(receipt_for("m2", "tok2", first), first, [])
    retry = [make_record("tok2", T0)]
    outcome = await store.put_message(receipt_for("m2", "tok2", retry), retry, [])
    assert outcome.duplicate
    assert outcome.receipt.record_ids == (first[0].record_id,)
    assert len(await store.list_records("tok2")) == 1
    receipt = await store.get_receipt("hospital-a", "m2")
    assert receipt is not None and receipt.record_ids == (first[0].record_id,)


async def test_the_first_claims_note_is_the_messages_whoever_commits(
    store: RecordStore,
) -> None:
    first = [make_record("tok5", T0)]
    stored = await store.put_message(
        replace(receipt_for("m5", "tok5", first), claim_note="first"), first, []
    )
    assert stored.receipt.claim_note == "first"
    retry = [make_record("tok5", T0)]
    outcome = await store.put_message(
        replace(receipt_for("m5", "tok5", retry), claim_note="retry"), retry, []
    )
    assert outcome.duplicate and outcome.receipt.claim_note == "first"
    for linearizable in (True, False):
        receipt = await store.get_receipt("hospital-a", "m5", linearizable=linearizable)
        assert receipt is not None and receipt.claim_note == "first"
    assert await store.get_receipt("hospital-a", "never", linearizable=False) is None


async def test_concurrent_retries_store_once(store: RecordStore) -> None:
    attempts = [[make_record("tok3", T0)] for _ in range(8)]
    outcomes = await asyncio.gather(
        *(store.put_message(receipt_for("m3", "tok3", a), a, []) for a in attempts),
        return_exceptions=True,
    )
    stored = [o for o in outcomes if not isinstance(o, BaseException) and not o.duplicate]
    assert len(stored) >= 1
    assert len(await store.list_records("tok3")) == 1


async def test_same_id_other_content_conflicts(store: RecordStore) -> None:
    records = [make_record("tok4", T0)]
    await store.put_message(receipt_for("m4", "tok4", records), records, [])
    other = [make_record("tok4", T0)]
    with pytest.raises(MessageIdConflict):
        await store.put_message(receipt_for("m4", "tok4", other, digest="h2"), other, [])


async def test_filters_by_category_and_interval(store: RecordStore) -> None:
    records = [
        make_record("tok5", T0, category=1, code="A1"),
        make_record("tok5", T0 + timedelta(days=30), category=4),
        make_record("tok5", T0 + timedelta(days=800), category=4),
    ]
    await store.put_message(receipt_for("m5", "tok5", records), records, [])
    allergies = await store.list_records("tok5", categories=[1])
    assert [r.code for r in allergies] == ["A1"]
    window = await store.list_records(
        "tok5", start=T0 + timedelta(days=1), end=T0 + timedelta(days=799)
    )
    assert [r.record_id for r in window] == [records[1].record_id]


async def test_facts_are_stored_with_their_message(store: RecordStore) -> None:
    records = [make_record("tok6", T0, code="J10"), make_record("tok6", T0, code="J11")]
    facts = [EmergencyFact("tok6", records[0].record_id, 1, b"fact")]
    await store.put_message(receipt_for("m6", "tok6", records), records, facts)
    assert await store.list_facts("tok6") == facts
    # A duplicate stores nothing twice.
    retry = [make_record("tok6", T0, code="J10"), make_record("tok6", T0, code="J11")]
    await store.put_message(receipt_for("m6", "tok6", retry), retry, facts)
    assert await store.list_facts("tok6") == facts
    assert len(await store.list_records("tok6")) == 2


async def test_surveillance_cases_are_a_set_stored_with_their_message(
    store: RecordStore,
) -> None:
    day = date(2024, 3, 1)
    first = [make_record("tokA", T0)]
    cases = [
        SurveillanceCase(day, "黄浦区", "25-59", "tokA"),
        SurveillanceCase(day, "黄浦区", "25-59", "tokB"),
        SurveillanceCase(day, "徐汇区", "60+", "tokC"),
        SurveillanceCase(day + timedelta(days=150), "黄浦区", "0-4", "tokA"),
    ]
    await store.put_message(receipt_for("mA", "tokA", first), first, [], cases)
    # The same cases again (a retry, another message of the same visits) change nothing.
    await store.put_message(receipt_for("mA", "tokA", first), first, [], cases)
    second = [make_record("tokA", T0, code="J11")]
    await store.put_message(receipt_for("mB", "tokA", second), second, [], cases[:1])
    counts = await store.surveillance_counts(day - timedelta(days=1), day + timedelta(days=150))
    assert counts == {(day, "黄浦区"): 2, (day, "徐汇区"): 1}
    assert await store.surveillance_counts(day + timedelta(days=1), day + timedelta(days=151)) == {
        (day + timedelta(days=150), "黄浦区"): 1
    }


async def test_facts_version_changes_with_every_message_that_writes_facts(
    store: RecordStore,
) -> None:
    assert await store.facts_version("tok9") is None
    first = [make_record("tok9", T0)]
    await store.put_message(
        receipt_for("m9a", "tok9", first),
        first,
        [EmergencyFact("tok9", first[0].record_id, 1, b"allergy")],
    )
    version = await store.facts_version("tok9")
    assert version is not None
    # A message without facts leaves it; a retry writes nothing; new facts change it.
    plain = [make_record("tok9", T0, code="J10")]
    await store.put_message(receipt_for("m9b", "tok9", plain), plain, [])
    await store.put_message(
        receipt_for("m9a", "tok9", first),
        first,
        [EmergencyFact("tok9", first[0].record_id, 1, b"allergy")],
    )
    assert await store.facts_version("tok9") == version
    second = [make_record("tok9", T0, code="91936005")]
    await store.put_message(
        receipt_for("m9c", "tok9", second),
        second,
        [EmergencyFact("tok9", second[0].record_id, 1, b"second allergy")],
    )
    assert await store.facts_version("tok9") not in (None, version)
    assert await store.facts_version("tok10") is None


async def test_tiering_reads_old_records_and_deletes(store: RecordStore) -> None:
    old = make_record("tok7", T0 - timedelta(days=3000))
    new = make_record("tok7", T0)
    await store.put_message(receipt_for("m7", "tok7", [old, new]), [old, new], [])
    due = await store.list_effective_before(T0 - timedelta(days=1), limit=100)
    assert old.record_id in {r.record_id for r in due}
    assert new.record_id not in {r.record_id for r in due}
    await store.delete_records([r for r in due if r.person_token == "tok7"])
    assert [r.record_id for r in await store.list_records("tok7")] == [new.record_id]


async def test_check_answers_when_up(store: RecordStore) -> None:
    await store.check()


# --- Cassandra only: a claim whose attempt died, and receipts of the earlier protocol -------


async def test_cassandra_a_retry_finishes_a_dead_claim_under_its_ids_and_note(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    store = await CassandraRecordStore(database).open()
    try:
        dead = [make_record("tok-dead", T0)]
        # The first attempt claimed the message, then died before its records batch.
        await database.execute(
            "INSERT INTO receipts (hospital_id, message_id, content_hash, person_token,"
            " record_ids, claim_note, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            ("hospital-a", "m-dead", "h1", "tok-dead", [dead[0].record_id], "dead's event"),
        )
        assert await store.get_receipt("hospital-a", "m-dead") is None
        assert await store.get_receipt("hospital-a", "m-dead", linearizable=False) is None
        # A retry planned under its own ids is told to plan again under the claim's: its
        # payloads were sealed for its ids and would never open under the claim's.
        other = [make_record("tok-dead", T0)]
        with pytest.raises(ClaimedByEarlierAttempt) as claimed:
            await store.put_message(receipt_for("m-dead", "tok-dead", other), other, [])
        assert claimed.value.receipt.record_ids == (dead[0].record_id,)
        assert claimed.value.receipt.claim_note == "dead's event"
        assert await store.list_records("tok-dead") == []
        retry = [replace(other[0], record_id=dead[0].record_id)]
        outcome = await store.put_message(
            replace(receipt_for("m-dead", "tok-dead", retry), claim_note="retry's event"),
            retry,
            [],
        )
        assert not outcome.duplicate
        assert outcome.receipt.claim_note == "dead's event"
        assert [r.record_id for r in await store.list_records("tok-dead")] == [dead[0].record_id]
        assert await store.get_receipt("hospital-a", "m-dead") == outcome.receipt
        again = await store.put_message(receipt_for("m-dead", "tok-dead", retry), retry, [])
        assert again.duplicate and again.receipt == outcome.receipt

        # A receipt the earlier protocol committed (an LWT on `state`, no note) still counts.
        await database.execute(
            "INSERT INTO receipts (hospital_id, message_id, content_hash, person_token,"
            " record_ids, state) VALUES (?, ?, ?, ?, ?, 'committed')",
            ("hospital-a", "m-old", "h1", "tok-old", ["r1"]),
        )
        old = await store.get_receipt("hospital-a", "m-old", linearizable=False)
        assert old == MessageReceipt("hospital-a", "m-old", "h1", "tok-old", ("r1",))
    finally:
        await store.close()


# --- Cassandra only: a record's packed cell (ADR 60) ------------------------------------------


async def test_cassandra_records_are_read_by_their_packed_cell_or_by_columns_when_older(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    store = await CassandraRecordStore(database).open()
    try:
        new = replace(
            make_record("tok-packed", T0),
            source_format=2,
            source_version="v7",
            code_display="Glucose, fasting — 空腹血糖",
            blob_name="blobs/" + "a" * 64,
        )
        await store.put_message(receipt_for("m-new", "tok-packed", [new]), [new], [])
        # Written with its cell, and its columns beside it for the release before.
        (row,) = await database.execute(
            "SELECT packed_fields, source_format, source_version, code_display, blob_name"
            " FROM records WHERE person_token = ? AND year = ?",
            ("tok-packed", T0.year),
        )
        assert row.packed_fields
        assert (row.source_format, row.source_version, row.code_display, row.blob_name) == (
            2,
            "v7",
            "Glucose, fasting — 空腹血糖",
            "blobs/" + "a" * 64,
        )
        # Read through the cell: the very record put (every field).
        assert await store.list_records("tok-packed") == [new]
        # Without the columns (a later release may stop writing them) the cell alone
        # still gives the record.
        await database.execute(
            "DELETE source_hospital, message_id, code, code_display, status FROM records"
            " WHERE person_token = ? AND year = ? AND effective_time = ? AND record_id = ?",
            ("tok-packed", T0.year, T0, new.record_id),
        )
        assert await store.list_records("tok-packed") == [new]

        # A row the release before ADR 60 wrote has no cell: its columns are read, and a
        # partition mixing both forms gives both records whole.
        old = make_record("tok-packed", T0 + timedelta(hours=1), code="2345-7")
        await database.execute(
            "INSERT INTO records (person_token, year, effective_time, record_id,"
            " source_hospital, source_format, message_id, source_version, content_hash,"
            " category, code_system, code, code_display, status, sealed_payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                old.person_token,
                old.effective_time.year,
                old.effective_time,
                old.record_id,
                old.source_hospital,
                old.source_format,
                old.message_id,
                old.source_version,
                old.content_hash,
                old.category,
                old.code_system,
                old.code,
                old.code_display,
                old.status,
                old.sealed_payload,
            ),
        )
        await database.execute(
            "INSERT INTO records_by_day (day, effective_time, person_token, record_id)"
            " VALUES (?, ?, ?, ?)",
            (old.effective_time.date(), old.effective_time, old.person_token, old.record_id),
        )
        await database.execute(
            "INSERT INTO record_days (shard, day) VALUES (0, ?)", (old.effective_time.date(),)
        )
        assert await store.list_records("tok-packed") == [new, old]
        due = await store.list_effective_before(T0 + timedelta(days=1), limit=100)
        assert [r for r in due if r.person_token == "tok-packed"] == [new, old]
    finally:
        await store.close()


async def test_cassandra_tiering_indexes_a_month_of_a_person_in_one_partition_and_reads_day_rows(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    """ADR 68: a history sent in one message (60 daily results) writes one tiering-index
    partition a month, not one a day; records indexed by day, before that index, still tier
    in time order among the others, and leave both indexes when deleted."""
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    store = await CassandraRecordStore(database).open()
    try:
        start = datetime(2016, 1, 10, 7, 0, tzinfo=UTC)
        daily = [make_record("tok-daily", start + timedelta(days=d)) for d in range(60)]
        await store.put_message(receipt_for("m-daily", "tok-daily", daily), daily, [])
        partitions = await database.execute("SELECT DISTINCT month, shard FROM records_by_month")
        # January, February and March of 2016, one person: three partitions, not 60.
        assert len(partitions) == 3
        # A record stored before the month index: its pointer is in the day index only.
        legacy = make_record("tok-legacy", start + timedelta(days=5, hours=1))
        await store.put_message(receipt_for("m-legacy", "tok-legacy", [legacy]), [legacy], [])
        await database.execute(
            "DELETE FROM records_by_month WHERE month = ? AND shard = ? AND effective_time = ?"
            " AND person_token = ? AND record_id = ?",
            (
                date(2016, 1, 1),
                month_shard("tok-legacy"),
                legacy.effective_time,
                "tok-legacy",
                legacy.record_id,
            ),
        )
        await database.execute(
            "INSERT INTO records_by_day (day, effective_time, person_token, record_id)"
            " VALUES (?, ?, ?, ?)",
            (legacy.effective_time.date(), legacy.effective_time, "tok-legacy", legacy.record_id),
        )
        await database.execute(
            "INSERT INTO record_days (shard, day) VALUES (0, ?)", (legacy.effective_time.date(),)
        )
        oldest_first = [
            r.record_id for r in sorted([*daily, legacy], key=lambda r: r.effective_time)
        ]
        cutoff = start + timedelta(days=61)
        due = await store.list_effective_before(cutoff, limit=1000)
        assert [r.record_id for r in due] == oldest_first
        # The limit keeps the oldest, the day-indexed one in its place among them.
        assert [r.record_id for r in await store.list_effective_before(cutoff, 8)] == oldest_first[
            :8
        ]
        assert [
            r.record_id for r in await store.list_effective_before(start + timedelta(days=3), 1000)
        ] == oldest_first[:3]
        await store.delete_records(due)
        assert await store.list_effective_before(cutoff, limit=1000) == []
        assert await store.list_records("tok-daily") == []
    finally:
        await store.close()


async def test_cassandra_tiering_unlists_a_drained_partition_and_a_late_record_is_listed_again(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    """ADR 69: once a month's partition is drained (its records tiered), the next listing
    unlists it, and so does the day index of a drained day; the partition that holds the
    cutoff stays listed; a record of a drained month stored later, even between the read that
    found the partition empty and the delete that unlists it, is listed and found."""
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    late: list[StoredRecord] = []

    class RecordStoreWithARacingWriter(CassandraRecordStore):
        """Stores ``late``'s records after a read found their partitions empty, before the
        delete that unlists them: the interleaving a concurrent ingest could produce."""

        async def _unlist_drained(self, *args: object) -> None:  # type: ignore[override]
            while late:
                record = late.pop()
                await self.put_message(
                    receipt_for("m-race", record.person_token, [record]), [record], []
                )
            await super()._unlist_drained(*args)  # type: ignore[arg-type]

    # No margin for writers' clock skew: one clock here, and the records were written now.
    store = await RecordStoreWithARacingWriter(database, unlist_margin_s=0).open()

    async def listed() -> set[tuple[date, int]]:
        rows = await database.execute("SELECT month, shard FROM record_months WHERE bucket = 0")
        return {(date.fromisoformat(str(row.month)), row.shard) for row in rows}

    async def days_listed() -> set[str]:
        return {str(row.day) for row in await database.execute("SELECT day FROM record_days")}

    try:
        january = make_record("tok-drain", datetime(2016, 1, 10, 7, 0, tzinfo=UTC))
        february = make_record("tok-drain", datetime(2016, 2, 10, 7, 0, tzinfo=UTC))
        march = make_record("tok-drain", datetime(2016, 3, 20, 7, 0, tzinfo=UTC))
        records = [january, february, march]
        await store.put_message(receipt_for("m-drain", "tok-drain", records), records, [])
        # A day-indexed pointer, as written before the month index (ADR 68).
        await database.execute(
            "INSERT INTO record_days (shard, day) VALUES (0, ?)", (date(2016, 1, 11),)
        )
        shard = month_shard("tok-drain")
        cutoff = datetime(2016, 3, 25, tzinfo=UTC)
        due = await store.list_effective_before(cutoff, limit=100)
        assert [r.record_id for r in due] == [r.record_id for r in records]
        # Nothing is unlisted while it holds records.
        assert await listed() == {(date(2016, m, 1), shard) for m in (1, 2, 3)}
        await store.delete_records([january, february, march])

        assert await store.list_effective_before(cutoff, limit=100) == []
        # March holds the cutoff: a record after it may still come. January and February
        # are drained, and so is the day.
        assert await listed() == {(date(2016, 3, 1), shard)}
        assert await days_listed() == set()

        # A late January record, stored after its partition was unlisted.
        after = make_record("tok-drain", datetime(2016, 1, 12, 7, 0, tzinfo=UTC))
        await store.put_message(receipt_for("m-after", "tok-drain", [after]), [after], [])
        assert [r.record_id for r in await store.list_effective_before(cutoff, 100)] == [
            after.record_id
        ]
        await store.delete_records([after])
        # January is drained again; a January record arrives between the read that finds
        # its partition empty and the unlisting.
        racing = make_record("tok-drain", datetime(2016, 1, 14, 7, 0, tzinfo=UTC))
        late.append(racing)
        assert await store.list_effective_before(cutoff, limit=100) == []
        assert not late  # the racing writer ran
        assert (date(2016, 1, 1), shard) in await listed()
        assert [r.record_id for r in await store.list_effective_before(cutoff, 100)] == [
            racing.record_id
        ]
    finally:
        await store.close()
