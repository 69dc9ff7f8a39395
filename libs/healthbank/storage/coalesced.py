"""Concurrent single-partition requests to Cassandra, sent together.

A request costs the node and this process (the driver, the event loop) far more than the
row it reads or writes: on this machine (tools/bench/cassandra_floor.py, ADR 53) a point
read took 0.040 ms of the node's CPU and 0.108 ms of the client's, while one ``IN`` read of
20 rows took 0.010 and 0.006 ms a row; a plain insert 0.228 and 0.093 ms, a row of an
UNLOGGED batch 0.085 and 0.015. Where many callers make the same kind of small
request at once (the identity service resolving a batch of registrations), these gather
them with :class:`~healthbank.core.group_commit.GroupCommit`: a lone request goes out at
once, and the ones arriving while it is in flight leave together as the next one. Each
caller still gets only its own rows, or the request's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from healthbank.core.group_commit import GroupCommit
from healthbank.storage.cassandra import CassandraDatabase

__all__ = ["CoalescedReads", "CoalescedWrites"]

# Partitions per IN request: the coordinator reads each one; more gains little per partition
# and makes one slow partition hold up more callers.
MAX_KEYS_PER_READ = 50
# Reads gathered into one round (each round then sends requests of MAX_KEYS_PER_READ keys
# at once): a bound on one round's fan-out, far above the concurrency of any caller here.
MAX_READS_PER_ROUND = 1000
# Callers' writes per UNLOGGED batch: a few small rows each, well under the keyspace's batch
# warning (256 KiB).
MAX_WRITES = 32
# Write batches under way at once (ADR 58). One at a time, the identity service's writes were
# a queue busy 95 % of the time while 2,000 new registrations went through ResolveBatch, and
# the node sat at ~80 %; four at once: 390-470 registrations/s instead of 342-346. Writes of
# different callers are independent, so their batches need no order.
WRITE_BATCHES_IN_FLIGHT = 4

Statement = tuple[str, Sequence[Any]]


class CoalescedReads:
    """Reads of single partitions by one ``SELECT ... IN ?`` statement, concurrent ones
    in one request per group.

    ``cql`` binds its parameters in order, the last one the ``IN`` list of keys; any text
    after that ``?`` must bind nothing (``PER PARTITION LIMIT 20`` written out). A read is
    ``rows(*group, key)``: reads of the same ``group`` values share requests. ``row_key``
    gives a row's ``(*group, key)``, so the statement must select those columns.
    """

    def __init__(
        self,
        database: CassandraDatabase,
        cql: str,
        row_key: Callable[[Any], tuple[Hashable, ...]],
        *,
        max_keys: int = MAX_KEYS_PER_READ,
    ) -> None:
        """Read with ``cql`` on ``database``, at most ``max_keys`` partitions a request."""
        self._db = database
        self._cql = cql
        self._row_key = row_key
        self._max_keys = max_keys
        self._group: GroupCommit[tuple[Hashable, ...], list[Any]] = GroupCommit(
            self._read, max_batch=MAX_READS_PER_ROUND
        )

    async def rows(self, *params: Hashable) -> list[Any]:
        """The rows of the partition ``params`` (``*group, key``) names."""
        (found,) = await self._group.append([params])
        return found

    async def rows_of_each(self, params: Sequence[tuple[Hashable, ...]]) -> list[list[Any]]:
        """The rows of each partition, in order (all read with whatever else is waiting)."""
        return await self._group.append(params)

    async def _read(self, reads: list[tuple[Hashable, ...]]) -> list[list[Any]]:
        # Each partition once, in the order first asked for.
        keys_by_group: dict[tuple[Hashable, ...], dict[Hashable, None]] = {}
        for read in reads:
            keys_by_group.setdefault(read[:-1], {})[read[-1]] = None
        requests: list[tuple[tuple[Hashable, ...], list[Hashable]]] = []
        for group, keys in keys_by_group.items():
            ordered = list(keys)
            requests += [
                (group, ordered[start : start + self._max_keys])
                for start in range(0, len(ordered), self._max_keys)
            ]
        answers = await asyncio.gather(
            *(self._db.execute(self._cql, (*group, keys)) for group, keys in requests)
        )
        found: dict[tuple[Hashable, ...], list[Any]] = {}
        for rows in answers:
            for row in rows:
                found.setdefault(self._row_key(row), []).append(row)
        return [found.get(read, []) for read in reads]


class CoalescedWrites:
    """Idempotent upserts from concurrent callers, sent as one UNLOGGED batch.

    A caller's statements are applied when :meth:`apply` returns. After an error any subset
    of the batch may be applied (each partition's part whole or not at all), as with
    :meth:`CassandraDatabase.execute_batch`: callers must be able to write theirs again.
    A caller's statements always travel in one batch, with those of at most ``max_writes - 1``
    other callers; up to :data:`WRITE_BATCHES_IN_FLIGHT` batches are under way at once.
    """

    def __init__(self, database: CassandraDatabase, *, max_writes: int = MAX_WRITES) -> None:
        """Write to ``database``, the statements of up to ``max_writes`` callers a batch."""
        self._db = database
        self._group: GroupCommit[Sequence[Statement], None] = GroupCommit(
            self._write,
            max_batch=max_writes,
            max_in_flight=WRITE_BATCHES_IN_FLIGHT,
        )

    async def apply(self, statements: Sequence[Statement]) -> None:
        """Apply ``statements`` with whatever else is waiting."""
        if statements:
            await self._group.append([statements])

    async def _write(self, writes: list[Sequence[Statement]]) -> list[None]:
        await self._db.execute_batch([statement for write in writes for statement in write])
        return [None] * len(writes)
