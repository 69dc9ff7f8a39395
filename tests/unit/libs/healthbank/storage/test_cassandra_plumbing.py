"""The driver plumbing that needs no cluster: which statements count as lightweight
transactions, and rows whose class is built once per column list."""

from __future__ import annotations

from healthbank.storage.cassandra import _is_plain_read, _row_factory, is_conditional


def test_conditional_writes_are_told_from_plain_statements() -> None:
    assert is_conditional("INSERT INTO receipts (id) VALUES (?) IF NOT EXISTS")
    assert is_conditional("UPDATE log_head SET size = ? WHERE id = ? IF size = ?")
    assert is_conditional("DELETE FROM grants WHERE id = ? IF EXISTS")
    assert not is_conditional("INSERT INTO leaves (bucket, leaf_index) VALUES (?, ?)")
    assert not is_conditional("SELECT size FROM log_head WHERE id = ?")
    assert not is_conditional("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")


def test_rows_share_one_class_per_column_list_and_read_applied_by_name() -> None:
    first = _row_factory(["[applied]", "size"], [(True, 3)])
    second = _row_factory(["[applied]", "size"], [(False, 4), (True, 5)])
    assert type(first[0]) is type(second[0])
    assert first[0].applied is True and first[0].size == 3
    assert [row.size for row in second] == [4, 5]
    assert second[0]._asdict() == {"applied": False, "size": 4}
    other = _row_factory(["size"], [(7,)])
    assert type(other[0]) is not type(first[0]) and other[0].size == 7


def test_only_plain_reads_may_be_sent_to_a_second_replica() -> None:
    assert _is_plain_read("SELECT size FROM log_head WHERE id = ?")
    assert _is_plain_read("  select version FROM schema_migrations")
    assert not _is_plain_read("INSERT INTO leaves (bucket, leaf_index) VALUES (?, ?)")
    assert not _is_plain_read("UPDATE day_counts SET n = n + 1 WHERE day = ?")
    assert not _is_plain_read("INSERT INTO receipts (id) VALUES (?) IF NOT EXISTS")
