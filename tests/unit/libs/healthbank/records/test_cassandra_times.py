"""The Cassandra record store's reading of the driver's naive UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from healthbank.records.cassandra import _utc


@pytest.mark.parametrize(
    "naive",
    [
        datetime(2024, 3, 1, 8, 30, 15, 123000),
        datetime(1969, 12, 31, 23, 59, 59, 999000),  # before the epoch
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999000),
    ],
)
def test_a_naive_time_is_the_same_wall_time_in_utc(naive: datetime) -> None:
    aware = _utc(naive)
    assert aware == naive.replace(tzinfo=UTC)
    assert (aware.tzinfo, aware.fold) == (UTC, 0)
    assert aware.replace(tzinfo=None) == naive


def test_an_aware_time_is_kept() -> None:
    moment = datetime(2024, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=8)))
    assert _utc(moment) is moment
