"""A message with more records than one audit event may name is reported by several events."""

from __future__ import annotations

from datetime import UTC, datetime

from healthbank.core.ids import is_ulid, new_ulid
from services.ingest.pipeline import audit_event_ids


def test_event_ids_start_with_the_reserved_one_and_are_the_same_on_every_retry() -> None:
    reserved = new_ulid(datetime(2026, 12, 1, tzinfo=UTC))
    ids = audit_event_ids(reserved, 3)
    assert ids[0] == reserved
    assert ids == audit_event_ids(reserved, 3)  # a retry appends the very same events
    assert len(set(ids)) == 3
    assert all(is_ulid(event_id) and event_id[:10] == reserved[:10] for event_id in ids)
    assert audit_event_ids(reserved, 1) == [reserved]
    assert audit_event_ids(new_ulid(), 2)[1] != ids[1]
