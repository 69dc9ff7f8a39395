"""Apache Cassandra plumbing: one keyspace per concern, versioned migrations,
prepared statements, tunable consistency and an asyncio bridge for the driver.

The driver runs its own I/O thread (libev); ``execute`` turns its ResponseFuture
into an asyncio future, following every result page, so services stay async.
Driver errors become :class:`StorageUnavailable` (retry later: UNAVAILABLE) or
:class:`StorageRefused` (never: a permanent error naming the cause), see
:mod:`healthbank.storage.cassandra_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn

from cassandra import ConsistencyLevel
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.policies import (
    ConstantReconnectionPolicy,
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    TokenAwarePolicy,
    WhiteListRoundRobinPolicy,
)
from cassandra.query import BatchStatement, BatchType, PreparedStatement
from opentelemetry import trace

from healthbank.core.config import Settings
from healthbank.core.telemetry import traced
from healthbank.storage.cassandra_errors import storage_error
from healthbank.storage.errors import SchemaPending, StorageUnavailable
from healthbank.storage.schema import NO_DELAY, PROTOCOL_VERSION, required_version, schema_version

_log = logging.getLogger(__name__)

# A conditional write (lightweight transaction): ``... IF NOT EXISTS`` / ``... IF <cond>``.
_CONDITIONAL = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b.*\bIF\s", re.I | re.S)
# How long a read waits for its replica before asking a second one too.
_SPECULATION_DELAY = 0.5
# How often a keyspace waiting for `healthbank migrate` looks again.
_SCHEMA_RECHECK = 1.0
_SERIAL_LEVELS = (ConsistencyLevel.SERIAL, ConsistencyLevel.LOCAL_SERIAL)


@dataclass
class StatementCounts:
    """What this process sent to Cassandra through :class:`CassandraDatabase`.

    ``requests`` are round trips (a batch is one), ``statements`` count each statement of a
    batch, ``lwts`` the conditional writes (Paxos), ``serial_reads`` the SERIAL reads (Paxos
    too). Health checks are not counted. The benchmark and the budget tests read the
    difference around a piece of work (:meth:`since`), per keyspace (:data:`STATEMENT_COUNTS`).
    """

    requests: int = 0
    statements: int = 0
    lwts: int = 0
    serial_reads: int = 0

    def snapshot(self) -> StatementCounts:
        """A copy of the counts now."""
        return StatementCounts(self.requests, self.statements, self.lwts, self.serial_reads)

    def since(self, before: StatementCounts) -> StatementCounts:
        """What was sent after ``before`` (a snapshot) was taken."""
        return StatementCounts(
            self.requests - before.requests,
            self.statements - before.statements,
            self.lwts - before.lwts,
            self.serial_reads - before.serial_reads,
        )

    def __add__(self, other: StatementCounts) -> StatementCounts:
        return StatementCounts(
            self.requests + other.requests,
            self.statements + other.statements,
            self.lwts + other.lwts,
            self.serial_reads + other.serial_reads,
        )


# Process-wide, like a metric: what each keyspace of the process sent, by keyspace name.
STATEMENT_COUNTS: dict[str, StatementCounts] = {}


def counts_since(before: dict[str, StatementCounts]) -> dict[str, StatementCounts]:
    """Per keyspace, what was sent since ``before`` (a copy taken with :func:`counts_now`)."""
    return {
        keyspace: counts.since(before.get(keyspace, StatementCounts()))
        for keyspace, counts in STATEMENT_COUNTS.items()
    }


def counts_now() -> dict[str, StatementCounts]:
    """A copy of :data:`STATEMENT_COUNTS`."""
    return {keyspace: counts.snapshot() for keyspace, counts in STATEMENT_COUNTS.items()}


def _is_plain_read(cql: str) -> bool:
    return cql.lstrip()[:6].upper() == "SELECT"


@functools.lru_cache(maxsize=1024)
def is_conditional(cql: str) -> bool:
    """Whether ``cql`` is a lightweight transaction (``INSERT ... IF NOT EXISTS``, ``... IF``)."""
    return _CONDITIONAL.match(cql) is not None


@functools.lru_cache(maxsize=1024)
def _row_class(column_names: tuple[str, ...]) -> Any:
    # "[applied]" of a conditional write is read as ``row.applied``, as the driver names it.
    return namedtuple("Row", [re.sub(r"\W", "", name) for name in column_names], rename=True)


def _row_factory(column_names: list[str], rows: list[Any]) -> list[Any]:
    """Rows as named tuples whose class is built once per column list, not per result set
    (the driver's default builds a namedtuple class for every result: ~10% of a service)."""
    make = _row_class(tuple(column_names))._make
    return [make(row) for row in rows]


_QUORUM_LEVELS = frozenset(
    {
        ConsistencyLevel.QUORUM,
        ConsistencyLevel.LOCAL_QUORUM,
        ConsistencyLevel.EACH_QUORUM,
        ConsistencyLevel.SERIAL,
        ConsistencyLevel.LOCAL_SERIAL,
    }
)
_COUNTED_LEVELS = {ConsistencyLevel.TWO: 2, ConsistencyLevel.THREE: 3}


def replicas_needed(level: int, replication_factor: int) -> int:
    """How many replicas must answer a statement at consistency ``level``."""
    if level in _QUORUM_LEVELS:
        return replication_factor // 2 + 1
    if level == ConsistencyLevel.ALL:
        return replication_factor
    return _COUNTED_LEVELS.get(level, 1)


def _raise_storage_error(keyspace: str, error: Exception) -> NoReturn:
    """Re-raise a driver error as the storage error it stands for (others unchanged)."""
    mapped = storage_error(keyspace, error)
    if mapped is None:
        raise error
    raise mapped from error


class CassandraDatabase:
    """One keyspace with ordered migrations, shared by one service's stores."""

    def __init__(
        self,
        *,
        hosts: Sequence[str],
        port: int,
        keyspace: str,
        migrations: Sequence[str],
        consistency: str = "LOCAL_QUORUM",
        replication_factor: int = 1,
        connect_timeout: float = 10.0,
    ) -> None:
        """Describe the keyspace; open() connects (``healthbank migrate`` creates it)."""
        self.keyspace = keyspace
        self._hosts = list(hosts)
        self._port = port
        self._migrations = list(migrations)
        self._consistency = ConsistencyLevel.name_to_value[consistency]
        self._replication_factor = replication_factor
        self._connect_timeout = connect_timeout
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        # Preparations under way, so callers arriving meanwhile wait for the same one.
        self._preparing: dict[str, asyncio.Future[PreparedStatement]] = {}
        self._schema_ready = False
        self._schema_pending: SchemaPending | None = None
        self._schema_checked = 0.0

    async def open(self) -> None:
        """Connect; the keyspace's schema is ``healthbank migrate``'s job (ADR 35).

        Until the keyspace holds the version these migrations need, every statement and
        :meth:`check` raise :class:`SchemaPending` (the service reports NOT_SERVING).
        """
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        cluster = Cluster(
            contact_points=self._hosts,
            port=self._port,
            protocol_version=PROTOCOL_VERSION,
            connect_timeout=self._connect_timeout,
            # Reading a large schema on connect can take seconds; the 2 s default gives up.
            control_connection_timeout=self._connect_timeout,
            # Keep retrying every second so a restarted node is picked up without a restart here.
            reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
            sockopts=NO_DELAY,
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    consistency_level=self._consistency,
                    # Serial (LWT) consistency follows the locality of the regular one.
                    serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
                    request_timeout=10.0,
                    # Statements go to a replica of their partition (prepared statements
                    # carry the routing key), not to a coordinator that forwards them.
                    load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                    # A read (marked idempotent in prepare) unanswered after 0.5 s goes to a
                    # second replica as well: a replica that just died does not stall it
                    # until the ring marks it down. Writes are never sent twice here.
                    speculative_execution_policy=ConstantSpeculativeExecutionPolicy(
                        _SPECULATION_DELAY, max_attempts=1
                    ),
                    row_factory=_row_factory,
                )
            },
        )
        try:
            session = cluster.connect()
        except NoHostAvailable as error:
            cluster.shutdown()
            raise StorageUnavailable("cassandra is not reachable") from error
        self._cluster, self._session = cluster, session
        with contextlib.suppress(SchemaPending, StorageUnavailable):
            self._await_schema_sync()

    async def _await_schema(self) -> None:
        """Return once the keyspace is at the version needed; raise SchemaPending if not."""
        if self._schema_ready:
            return
        now = time.monotonic()
        if self._schema_pending is not None and now - self._schema_checked < _SCHEMA_RECHECK:
            raise self._schema_pending
        self._schema_checked = now
        await asyncio.to_thread(self._await_schema_sync)

    def _await_schema_sync(self) -> None:
        try:
            found = schema_version(self.session, self.keyspace)
        except Exception as error:
            _raise_storage_error(self.keyspace, error)
        needed = required_version(self._migrations)
        if found < needed:
            pending = SchemaPending(
                f"cassandra keyspace {self.keyspace} is at schema version {found}, this code"
                f" needs {needed}: waiting for `healthbank migrate`"
            )
            if self._schema_pending is None:
                _log.warning("%s", pending)
            self._schema_pending = pending
            raise pending
        try:
            self.session.set_keyspace(self.keyspace)
        except Exception as error:
            # A node that has not yet heard of the new keyspace: ask again next time.
            raise SchemaPending(
                f"cassandra keyspace {self.keyspace}: not yet on every node"
            ) from error
        self._schema_ready, self._schema_pending = True, None

    @property
    def session(self) -> Session:
        """The connected session (after open())."""
        if self._session is None:
            raise RuntimeError(f"keyspace {self.keyspace} is not open")
        return self._session

    def prepare(self, cql: str) -> PreparedStatement:
        """A prepared statement, prepared once per process."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self.session.prepare(cql)
            # Plain reads may be sent to a second replica (speculative execution); a write,
            # a counter or a lightweight transaction is never (sent twice, it could apply twice).
            statement.is_idempotent = _is_plain_read(cql)
            self._prepared[cql] = statement
        return statement

    async def _statement(self, cql: str) -> Any:
        """The prepared statement for ``cql``; preparing is a blocking round trip, once:
        callers that need it while it is being prepared wait for that preparation (32
        requests in flight on a new process would otherwise prepare it 32 times)."""
        statement = self._prepared.get(cql)
        if statement is not None:
            return statement
        preparing = self._preparing.get(cql)
        if preparing is None:
            preparing = asyncio.ensure_future(asyncio.to_thread(self.prepare, cql))
            self._preparing[cql] = preparing
            preparing.add_done_callback(lambda done: self._prepared_or_failed(cql, done))
        # Shielded: one waiter cancelled (its request's deadline) leaves the others' wait.
        return await asyncio.shield(preparing)

    def _prepared_or_failed(self, cql: str, done: asyncio.Future[PreparedStatement]) -> None:
        # Forgotten once done: a failed preparation is tried afresh by the next caller. Its
        # error is taken here, as every waiter may have been cancelled before it came.
        self._preparing.pop(cql, None)
        if not done.cancelled():
            done.exception()

    def _refuse_without_quorum(self, level: int | None) -> None:
        """Raise StorageUnavailable at once when fewer nodes are up, as the driver sees them
        (it marks a node down when its connections drop), than a statement at ``level``
        (None: the session's) needs. Sent anyway, it would wait out the coordinator's
        timeout: the coordinator believes its peers alive for seconds after they died
        (issue 15, done-means 2: two of three nodes killed)."""
        needed = replicas_needed(
            self._consistency if level is None else level, self._replication_factor
        )
        if needed <= 1 or self._cluster is None:
            return
        hosts = self._cluster.metadata.all_hosts()
        # is_up is None for a node the driver has not tried yet: counted as up.
        up = sum(host.is_up is not False for host in hosts)
        if up < needed:
            raise StorageUnavailable(
                f"cassandra keyspace {self.keyspace}: {up} of {len(hosts)} nodes up,"
                f" {needed} needed"
            )

    async def execute(
        self, cql: str, params: Sequence[Any] = (), *, consistency: str | None = None
    ) -> list[Any]:
        """Run a prepared statement and return all rows (every page)."""
        return await self._execute(cql, params, consistency=consistency, counted=True)

    async def _execute(
        self, cql: str, params: Sequence[Any], *, consistency: str | None, counted: bool
    ) -> list[Any]:
        await self._await_schema()
        try:
            bound = (await self._statement(cql)).bind(params)
            if consistency is not None:
                bound.consistency_level = ConsistencyLevel.name_to_value[consistency]
            self._refuse_without_quorum(bound.consistency_level)
            if counted:
                _count(self.keyspace, [cql], serial=bound.consistency_level in _SERIAL_LEVELS)
            with _statement_span(self.keyspace, [cql], bound.consistency_level) as span:
                rows = await _all_pages(self.session.execute_async(bound))
                if span is not None:
                    span.set_attribute("db.response.returned_rows", len(rows))
                return rows
        except Exception as error:
            _raise_storage_error(self.keyspace, error)

    async def execute_logged_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Apply statements as one LOGGED batch: all of them eventually, or none.

        Writing the batchlog waits for two other nodes, so on a ring it stalls (until the
        write timeout) while a dead node is not yet known to be down; the hot paths use
        :meth:`execute_batch` instead (ADR 36)."""
        await self._apply_batch(statements, BatchType.LOGGED)

    async def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Apply statements as one UNLOGGED batch, one round trip: when it returns, every
        statement is applied at the session's consistency; after an error, any subset may
        be (each partition's part whole or not at all). The caller orders what depends on
        what across batches, and writes the batch again after an error."""
        await self._apply_batch(statements, BatchType.UNLOGGED)

    async def execute_counter_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Apply counter updates as one COUNTER batch (one round trip; counters are not
        idempotent, so a timed-out batch may or may not have counted)."""
        await self._apply_batch(statements, BatchType.COUNTER)

    async def _apply_batch(
        self, statements: Sequence[tuple[str, Sequence[Any]]], batch_type: Any
    ) -> None:
        if not statements:
            return
        await self._await_schema()
        try:
            batch = BatchStatement(batch_type=batch_type)
            for cql, params in statements:
                batch.add(await self._statement(cql), params)
            self._refuse_without_quorum(None)
            cqls = [cql for cql, _ in statements]
            _count(self.keyspace, cqls, serial=False)
            with _statement_span(self.keyspace, cqls, batch.consistency_level):
                await _all_pages(self.session.execute_async(batch))
        except Exception as error:
            _raise_storage_error(self.keyspace, error)

    async def execute_unlogged(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        max_statements: int = 50,
        concurrency: int = 32,
    ) -> None:
        """Apply idempotent statements in UNLOGGED batches of up to ``max_statements``,
        several at once: one round trip per batch instead of per statement, no atomicity
        (the caller must be able to write them all again after a failure).

        32 at once, not 8: with the commit log synced in batch mode, concurrent batches share
        one fsync, and the audit log's 4,000-statement appends ran ~30 % faster for ~25 % less
        node CPU per event (tools/bench/audit_store.py, alternated three times)."""
        limit = asyncio.Semaphore(concurrency)

        async def one(chunk: Sequence[tuple[str, Sequence[Any]]]) -> None:
            async with limit:
                await self._apply_batch(chunk, BatchType.UNLOGGED)

        await asyncio.gather(
            *(
                one(statements[start : start + max_statements])
                for start in range(0, len(statements), max_statements)
            )
        )

    async def execute_many(
        self, cql: str, rows: Iterable[Sequence[Any]], *, concurrency: int = 32
    ) -> None:
        """Run a statement for many parameter rows with bounded concurrency."""
        limit = asyncio.Semaphore(concurrency)

        async def one(params: Sequence[Any]) -> None:
            async with limit:
                await self.execute(cql, params)

        await asyncio.gather(*(one(params) for params in rows))

    async def check(self) -> None:
        """Raise StorageUnavailable unless a query on this node answers now (SchemaPending
        until the keyspace is at the version needed)."""
        # At ONE: a node-local table, answered whether or not a quorum is up.
        await self._execute(
            "SELECT release_version FROM system.local", (), consistency="ONE", counted=False
        )

    async def close(self) -> None:
        """Shut the driver down."""
        if self._cluster is not None:
            cluster, self._cluster, self._session = self._cluster, None, None
            await asyncio.to_thread(cluster.shutdown)


# A statement's operation and table, for its span: SELECT ... FROM t, INSERT INTO t,
# UPDATE t, DELETE ... FROM t.
_STATEMENT_SHAPE = re.compile(
    r"^\s*(?:(SELECT)\b.*?\bFROM|(INSERT)\s+INTO|(UPDATE)|(DELETE)\b.*?\bFROM)\s+([\w.]+)",
    re.I | re.S,
)


@functools.lru_cache(maxsize=1024)
def operation_and_table(cql: str) -> tuple[str, str]:
    """The operation (SELECT, INSERT, UPDATE, DELETE) and table a statement names; the
    statement's first word and "" for any other."""
    match = _STATEMENT_SHAPE.match(cql)
    if match is None:
        words = cql.split(None, 1)
        return (words[0].upper() if words else ""), ""
    operation = next(group for group in match.groups()[:4] if group)
    return operation.upper(), match.group(5)


def _statement_span(
    keyspace: str, cqls: Sequence[str], consistency: int | None
) -> AbstractContextManager[trace.Span | None]:
    """A span of one request to the node, named and described by OpenTelemetry's database
    conventions ("SELECT records", "BATCH records", ...), inside a recorded trace
    only: under a call whose span is not recorded (sampled out, or nothing exports: ADR 50)
    it would not be either, and making it would cost ~5 µs a request. Attributes name the
    keyspace, table, operation and size, never a bound value."""
    if not trace.get_current_span().is_recording():
        return contextlib.nullcontext()
    shapes = {operation_and_table(cql) for cql in cqls}
    tables = sorted({table for _, table in shapes if table})
    attributes: dict[str, str | int | bool] = {
        "db.system": "cassandra",
        "db.namespace": keyspace,
        "healthbank.lwt": any(is_conditional(cql) for cql in cqls),
    }
    if len(cqls) > 1:
        operation = "BATCH"
        attributes["db.operation.batch.size"] = len(cqls)
    else:
        ((operation, _),) = shapes
    attributes["db.operation.name"] = operation
    if len(tables) == 1:
        attributes["db.collection.name"] = tables[0]
    if consistency is not None:
        attributes["db.cassandra.consistency_level"] = ConsistencyLevel.value_to_name.get(
            consistency, str(consistency)
        )
    return traced(f"{operation} {tables[0]}" if len(tables) == 1 else operation, attributes)


def _count(keyspace: str, cqls: Sequence[str], *, serial: bool) -> None:
    counts = STATEMENT_COUNTS.setdefault(keyspace, StatementCounts())
    counts.requests += 1
    counts.statements += len(cqls)
    counts.lwts += sum(1 for cql in cqls if is_conditional(cql))
    counts.serial_reads += int(serial)


async def _all_pages(response: ResponseFuture) -> list[Any]:
    """Await every page of a driver ResponseFuture on the running loop."""
    loop = asyncio.get_running_loop()
    rows: list[Any] = []
    while True:
        page: asyncio.Future[list[Any]] = loop.create_future()

        def done(result: list[Any], page: asyncio.Future[list[Any]] = page) -> None:
            loop.call_soon_threadsafe(_resolve, page, list(result or []), None)

        def failed(error: BaseException, page: asyncio.Future[list[Any]] = page) -> None:
            loop.call_soon_threadsafe(_resolve, page, None, error)

        response.add_callbacks(done, failed)
        rows.extend(await page)
        if not response.has_more_pages:
            return rows
        response.start_fetching_next_page()


def _resolve(
    page: asyncio.Future[list[Any]], result: list[Any] | None, error: BaseException | None
) -> None:
    if page.done():
        return
    if error is not None:
        page.set_exception(error)
    else:
        page.set_result(result or [])


def keyspace_for(settings: Settings, concern: str, migrations: Sequence[str]) -> CassandraDatabase:
    """The (unopened) keyspace ``<prefix>_<concern>`` configured by ``settings``."""
    return CassandraDatabase(
        hosts=settings.cassandra_hosts,
        port=settings.cassandra_port,
        keyspace=f"{settings.cassandra_keyspace_prefix}_{concern}",
        migrations=migrations,
        consistency=settings.cassandra_consistency,
        replication_factor=settings.cassandra_replication_factor,
    )


@contextlib.contextmanager
def coordinated_by(
    host: str,
    port: int,
    consistency: int = ConsistencyLevel.ONE,
    *,
    request_timeout: float = 60.0,
    metadata: bool = True,
) -> Iterator[Session]:
    """A plain driver session whose every request is coordinated by ``host`` alone, closed on
    exit: what one node of a ring holds or answers (ring tests, the chaos run's replica
    check), or a tool's own statements. Without ``metadata`` it reads neither the schema
    nor the ring's tokens on connect: quick however many keyspaces there are."""
    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([host]),
        consistency_level=consistency,
        request_timeout=request_timeout,
    )
    cluster = Cluster(
        [host],
        port=port,
        protocol_version=PROTOCOL_VERSION,
        sockopts=NO_DELAY,
        schema_metadata_enabled=metadata,
        token_metadata_enabled=metadata,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def drop_keyspaces(hosts: Sequence[str], port: int, prefix: str) -> list[str]:
    """Drop every keyspace named ``<prefix>_*`` (a test's or a benchmark's own); their names.

    Leftover keyspaces are not free: every new connection reads the whole schema and every
    schema change waits on it, so whoever creates keyspaces per run drops them after. Every
    statement goes through the first of ``hosts``: a node that has just restarted may still
    disagree on the schema and let a DROP time out, so a caller on a ring puts a settled
    node first (or tries again with another first).
    """
    dropped: list[str] = []
    with coordinated_by(hosts[0], port, metadata=False) as session:
        for row in session.execute("SELECT keyspace_name FROM system_schema.keyspaces"):
            if row.keyspace_name.startswith(f"{prefix}_"):
                session.execute(f"DROP KEYSPACE IF EXISTS {row.keyspace_name}", timeout=60)
                dropped.append(row.keyspace_name)
    return dropped
