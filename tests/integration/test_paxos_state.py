"""ADR 70: the Paxos state of the claims a message makes (the receipt's, identity's national
ID, MRN link and match claims: a new partition each) is kept 3 hours, not Cassandra's
default 10 days, held on the real node after ``healthbank migrate``'s migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from engine_support import cassandra_database, cassandra_session
from record_support import make_record, receipt_for

from healthbank.records.cassandra import MIGRATIONS as RECORD_MIGRATIONS
from healthbank.records.cassandra import CassandraRecordStore
from services.identity.store_cassandra import MIGRATIONS as IDENTITY_MIGRATIONS

THREE_HOURS = 3 * 3600
CLAIM_TABLES = {
    "records": ["receipts"],
    "identity": ["national_ids", "mrn_hash_links", "match_claims"],
}


async def test_a_claims_paxos_state_expires_after_three_hours(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    hosts, port = engines["HEALTHBANK_CASSANDRA_HOSTS"], engines["HEALTHBANK_CASSANDRA_PORT"]
    records = cassandra_database(engines, f"{keyspace_prefix}_records", RECORD_MIGRATIONS)
    cassandra_database(engines, f"{keyspace_prefix}_identity", IDENTITY_MIGRATIONS)
    store = await CassandraRecordStore(records).open()
    try:
        record = make_record("tok-paxos", datetime(2020, 1, 1, tzinfo=UTC))
        receipt = receipt_for("m-paxos", "tok-paxos", [record])
        await store.put_message(receipt, [record], [])  # the receipt's claim: one LWT
    finally:
        await store.close()
    with cassandra_session(hosts, port) as session:
        for concern, tables in CLAIM_TABLES.items():
            for table in tables:
                options = session.execute(
                    "SELECT id, gc_grace_seconds FROM system_schema.tables"
                    " WHERE keyspace_name = %s AND table_name = %s",
                    (f"{keyspace_prefix}_{concern}", table),
                ).one()
                assert options.gc_grace_seconds == THREE_HOURS, table
        receipts = session.execute(
            "SELECT id FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
            (f"{keyspace_prefix}_records", "receipts"),
        ).one()
        # The node keeps a transaction's state for its table's gc_grace_seconds, 3 hours at
        # least (Cassandra's paxos_state_purging: legacy): the claim's commit expires then.
        ttls = [
            row.ttl
            for row in session.execute(
                "SELECT TTL(most_recent_commit) AS ttl FROM system.paxos WHERE cf_id = %s"
                " ALLOW FILTERING",
                (receipts.id,),
            )
        ]
        assert len(ttls) == 1 and 0 < ttls[0] <= THREE_HOURS, ttls
