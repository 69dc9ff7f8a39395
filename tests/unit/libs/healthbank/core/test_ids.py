"""Unit tests for the ULID helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healthbank.core.ids import (
    CROCKFORD_ALPHABET,
    MonotonicUlidGenerator,
    derived_ulid,
    is_ulid,
    new_ulid,
    ulid_time,
)


def test_shape() -> None:
    ulid = new_ulid()
    assert len(ulid) == 26
    assert set(ulid) <= set(CROCKFORD_ALPHABET)
    assert is_ulid(ulid)


def test_time_round_trips_to_the_millisecond() -> None:
    now = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    assert ulid_time(new_ulid(now)) == datetime(2026, 3, 4, 5, 6, 7, 891_000, tzinfo=UTC)


def test_known_encoding() -> None:
    # The time part of a ULID is the 48-bit millisecond count in 10 base32 characters.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert new_ulid(epoch).startswith("0000000000")
    assert new_ulid(epoch + timedelta(milliseconds=32)).startswith("0000000010")
    # The time-part example from the ULID specification.
    spec_time = epoch + timedelta(milliseconds=1469918176385)
    assert new_ulid(spec_time).startswith("01ARYZ6S41")
    assert ulid_time("01ARYZ6S41" + "0" * 16) == spec_time
    assert is_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(ValueError):
        ulid_time("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")  # year 10889: beyond datetime


def test_sorts_by_time() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ulids = [new_ulid(start + timedelta(milliseconds=step * 7)) for step in range(200)]
    assert sorted(ulids) == ulids


def test_random_part_differs() -> None:
    now = datetime.now(UTC)
    assert len({new_ulid(now) for _ in range(1000)}) == 1000


def test_monotonic_generator_increases_within_a_millisecond() -> None:
    generate = MonotonicUlidGenerator()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ulids = [generate(now) for _ in range(100)]
    assert sorted(ulids) == ulids and len(set(ulids)) == 100
    # A clock that steps back does not break the order either.
    earlier = generate(now - timedelta(seconds=1))
    assert earlier > ulids[-1]
    later = generate(now + timedelta(seconds=1))
    assert later > earlier and ulid_time(later) == now + timedelta(seconds=1)


def test_rejects_naive_and_out_of_range_times() -> None:
    with pytest.raises(ValueError):
        new_ulid(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        new_ulid(datetime(1969, 12, 31, tzinfo=UTC))


@pytest.mark.parametrize(
    "bad",
    ["", "01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAVX", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
     "01ARZ3NDEKTSV4RRFFQ69G5FAU", "01arz3ndektsv4rrffq69g5fav",
     # letters Crockford leaves out, and what int(..., 32) would also take
     "01ARZ3NDEKTSV4RRFFQ69G5FAI", "01ARZ3NDEKTSV4RRFFQ69G5FAL", "01ARZ3NDEKTSV4RRFFQ69G5FAO",
     "01ARZ3NDEKTSV4RRFFQ69G5F_V", "01ARZ3NDEKTSV4RRFFQ69G5F V", "+1ARZ3NDEKTSV4RRFFQ69G5FAV"],
)  # fmt: skip
def test_malformed_ulids(bad: str) -> None:
    assert not is_ulid(bad)
    with pytest.raises(ValueError):
        ulid_time(bad)


def test_a_derived_ulid_is_the_same_for_the_same_moment_and_seed() -> None:
    moment = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    first = derived_ulid(moment, b"grant:person")
    assert is_ulid(first)
    assert derived_ulid(moment, b"grant:person") == first
    assert derived_ulid(moment, b"grant:other") != first
    assert first[:10] == new_ulid(moment)[:10]  # the time part is the moment's
