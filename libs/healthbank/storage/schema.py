"""Cassandra schema rollout as one step, before any service starts (ADR 35).

``healthbank migrate`` (:func:`migrate`) creates and upgrades every keyspace of
:data:`KEYSPACES`: it sends every schema change to one coordinator (the lowest address of
the ring), waits for the whole ring to agree on the schema after each migration, and only
then records the migration's version in the keyspace's ``schema_migrations`` table. Every
statement is idempotent (``IF NOT EXISTS``), so a crash half-way re-runs safely, and two
runs at once send their changes to the same node, which applies them one at a time.

Services never change schema on Cassandra: a :class:`CassandraDatabase` waits until its
keyspace has recorded the version its code needs (:func:`schema_version`) and reports
:class:`SchemaPending` (NOT_SERVING, UNAVAILABLE) until then. Embedded SQLite files are
still created and migrated by the process that owns them.
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy
from cassandra.pool import Host

from healthbank.core.config import Settings
from healthbank.storage.cassandra_errors import storage_error
from healthbank.storage.errors import SchemaPending, StorageRefused, StorageUnavailable

# Every connection of this project speaks native protocol v4, not v5 (ADR 41): the
# driver's v5 reader (cassandra-driver 3.30.1) drops a segment header that arrives in
# pieces, and the connection dies with "CRC mismatch on header" (a test holds it:
# tests/contract/test_cassandra_connection.py).
PROTOCOL_VERSION = 4
# Socket options of a connection that carries the services' requests: without
# TCP_NODELAY any request past ~4 KB waits for the peer's delayed ACK (~40 ms a batch).
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

__all__ = [
    "KEYSPACES",
    "SERVICE_KEYSPACES",
    "KeyspaceMigration",
    "MigrationReport",
    "concerns_of",
    "keyspace_migrations",
    "migrate",
    "migrate_keyspace",
    "migrate_keyspaces",
    "required_version",
    "schema_version",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

KEYSPACES: dict[str, str] = {
    "records": "healthbank.records.cassandra",
    "ingest": "services.ingest.store_cassandra",
    "identity": "services.identity.store_cassandra",
    "consent": "services.consent.store_cassandra",
    "research": "services.consent.store_research_cassandra",
    "audit": "services.audit.store_cassandra",
    "archive": "services.archive.store_cassandra",
}
"""Every Cassandra keyspace (``<prefix>_<concern>``) and the module whose ``MIGRATIONS``
define it. Named, not imported: the library imports no service."""

SERVICE_KEYSPACES: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "records"),
    "identity": ("identity",),
    "consent": ("consent", "research"),
    "record-lookup": ("records",),
    "archive": ("archive", "records"),
    "audit": ("audit",),
    "ai-alert": ("records",),
}
"""The keyspaces (concerns of :data:`KEYSPACES`) each service opens: what must be migrated
before it serves on Cassandra (a test that starts two services migrates only theirs)."""


def concerns_of(services: Sequence[str]) -> list[str]:
    """The keyspaces ``services`` open, each once, in :data:`KEYSPACES` order."""
    wanted = {concern for service in services for concern in SERVICE_KEYSPACES[service]}
    return [concern for concern in KEYSPACES if concern in wanted]


# Schema changes flush and wait for agreement: on a busy node they outlast a query's timeout.
SCHEMA_TIMEOUT = 60.0
# How long the ring gets to agree on a schema change before migrate gives up.
AGREEMENT_TIMEOUT = 60.0
# How often one idempotent step is tried when it fails transiently.
ATTEMPTS = 8

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied boolean)"
)

READ_SPECULATION = "100ms"
"""Every table's ``speculative_retry`` (as Cassandra spells it back): a QUORUM read waiting
on a replica longer than this, or than the table's 99th percentile if that is less, asks
the third replica too. Cassandra's default, ``99p``, starts at half the read timeout
(2.5 s) until a table has a history of reads, and a coordinator keeps picking a node that
just died until gossip marks it down (~10 s): on a ring, a read after a kill waited
2.5-5 s (issue 15, done-means 2). Set by migrate on every table, old or new (ADR 36)."""


@dataclass(frozen=True)
class KeyspaceMigration:
    """What one keyspace went through: its version before and after."""

    keyspace: str
    before: int
    after: int


@dataclass(frozen=True)
class MigrationReport:
    """What one ``migrate`` run did, keyspace by keyspace."""

    keyspaces: tuple[KeyspaceMigration, ...]


def keyspace_migrations(concern: str) -> Sequence[str]:
    """The ordered migrations of ``concern``'s keyspace (its module's ``MIGRATIONS``)."""
    module = importlib.import_module(KEYSPACES[concern])
    migrations: Sequence[str] = module.MIGRATIONS
    return migrations


def required_version(migrations: Sequence[str]) -> int:
    """The schema version code with these migrations needs: all of them applied."""
    return len(migrations)


def schema_version(session: Session, keyspace: str, host: Host | None = None) -> int:
    """The highest version ``migrate`` has completed in ``keyspace`` (0: none, no keyspace).

    Versions are recorded only after the ring agreed, in order, so the highest one says
    every earlier one is in place too. A node that has not yet heard of the keyspace or its
    version table (a migration under way) also says 0.
    """
    # Asked of the cluster, not of the driver's schema metadata: that follows schema change
    # events, and a process that missed one (a busy ring) would wait forever.
    try:
        rows = session.execute(f"SELECT version FROM {keyspace}.schema_migrations", host=host)
    except InvalidRequest as error:
        refused = storage_error(keyspace, error)
        if isinstance(refused, StorageRefused) and refused.cause == "SCHEMA_MISSING":
            return 0
        raise
    return max((row.version for row in rows), default=0)


def migrate_keyspace(
    session: Session, keyspace: str, migrations: Sequence[str], replication_factor: int
) -> KeyspaceMigration:
    """Create ``keyspace`` if absent and apply its pending ``migrations`` (see the module).

    Every step is idempotent, so a step that failed transiently (a timeout on a busy ring,
    a node that has not yet heard of a change) is tried again, a few times.
    """
    coordinator = _schema_coordinator(session)
    before = _retrying(keyspace, lambda: schema_version(session, keyspace, coordinator))
    _change(
        session,
        coordinator,
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}",
    )
    _await_agreement(session, keyspace)
    # The migrations name their tables unqualified: they run in the keyspace.
    _retrying(keyspace, lambda: session.set_keyspace(keyspace))
    _change(session, coordinator, _VERSION_TABLE)
    for version, migration in enumerate(migrations, start=1):
        if version <= before:
            continue
        for statement in _split_statements(migration):
            _change(session, coordinator, statement)
        _await_agreement(session, keyspace)
        _retrying(
            keyspace,
            lambda version=version: session.execute(  # type: ignore[misc]
                f"INSERT INTO {keyspace}.schema_migrations (version, applied) VALUES (%s, true)",
                (version,),
            ),
        )
    _speculate_reads(session, coordinator, keyspace)
    return KeyspaceMigration(keyspace, before, max(before, len(migrations)))


def _speculate_reads(session: Session, coordinator: Host | None, keyspace: str) -> None:
    """Give every table of ``keyspace`` :data:`READ_SPECULATION` (tables already set are
    left alone, so a run with nothing to change changes nothing)."""
    tables = _retrying(
        keyspace,
        lambda: session.execute(
            "SELECT table_name, speculative_retry FROM system_schema.tables"
            " WHERE keyspace_name = %s",
            (keyspace,),
            host=coordinator,
        ),
    )
    behind = [row.table_name for row in tables if row.speculative_retry != READ_SPECULATION]
    for table in behind:
        _change(
            session,
            coordinator,
            f"ALTER TABLE {keyspace}.{table} WITH speculative_retry = '{READ_SPECULATION}'",
        )
    if behind:
        _await_agreement(session, keyspace)


def _retrying(keyspace: str, step: Callable[[], T]) -> T:
    """``step()``, again after a transient driver error or a schema element not yet seen
    (up to :data:`ATTEMPTS` times); any other refusal raises at once (StorageRefused)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return step()
        except Exception as error:
            mapped = storage_error(keyspace, error)
            if mapped is None:
                raise
            # A node the ring's agreement check saw as current may still lack a keyspace or
            # table just created (gossip lags): during a migration that is transient too.
            lagging = isinstance(mapped, StorageRefused) and mapped.cause == "SCHEMA_MISSING"
            if (isinstance(mapped, StorageRefused) and not lagging) or attempt == ATTEMPTS:
                raise mapped from error
            _log.warning("keyspace %s: %s; trying again", keyspace, mapped)
            time.sleep(attempt)
    raise AssertionError("unreachable")


def migrate(settings: Settings, concerns: Sequence[str] | None = None) -> MigrationReport:
    """Create and upgrade every keyspace of :data:`KEYSPACES` (or ``concerns``) on the
    Cassandra ``settings`` name; safe to run again and from several processes at once."""
    prefix = settings.cassandra_keyspace_prefix
    return migrate_keyspaces(
        settings.cassandra_hosts,
        settings.cassandra_port,
        {
            f"{prefix}_{concern}": keyspace_migrations(concern)
            for concern in (concerns if concerns is not None else list(KEYSPACES))
        },
        replication_factor=settings.cassandra_replication_factor,
        consistency=settings.cassandra_consistency,
    )


def migrate_keyspaces(
    hosts: Sequence[str],
    port: int,
    keyspaces: Mapping[str, Sequence[str]],
    *,
    replication_factor: int,
    consistency: str = "LOCAL_QUORUM",
) -> MigrationReport:
    """Create and upgrade each keyspace named in ``keyspaces`` with its migrations."""
    cluster = Cluster(
        contact_points=list(hosts),
        port=port,
        protocol_version=PROTOCOL_VERSION,
        connect_timeout=10.0,
        control_connection_timeout=10.0,
        # Not after every statement: they all go to one coordinator, which sees its own
        # changes; the ring's agreement is awaited once per migration, before its version.
        max_schema_agreement_wait=0,
        execution_profiles={
            # Version rows are read by services at their own consistency: write them so.
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                consistency_level=ConsistencyLevel.name_to_value[consistency],
                load_balancing_policy=DCAwareRoundRobinPolicy(),
            )
        },
    )
    try:
        try:
            session = cluster.connect()
        except NoHostAvailable as error:
            raise StorageUnavailable("cassandra is not reachable") from error
        done = []
        for keyspace, migrations in keyspaces.items():
            step = migrate_keyspace(session, keyspace, migrations, replication_factor)
            _log.info("keyspace %s: schema version %d -> %d", keyspace, step.before, step.after)
            done.append(step)
        return MigrationReport(tuple(done))
    finally:
        cluster.shutdown()


def _schema_coordinator(session: Session) -> Host | None:
    """The node every schema change goes to: the lowest address among the live ones, the
    same for every concurrent run, so that node orders the changes."""
    live = [host for host in session.cluster.metadata.all_hosts() if host.is_up]
    return min(live, key=lambda host: str(host.address), default=None)


def _change(session: Session, coordinator: Host | None, statement: str) -> None:
    _retrying(
        session.keyspace or "-",
        lambda: session.execute(statement, timeout=SCHEMA_TIMEOUT, host=coordinator),
    )


def _await_agreement(session: Session, what: str) -> None:
    agreed = session.cluster.control_connection.wait_for_schema_agreement(
        wait_time=AGREEMENT_TIMEOUT
    )
    if not agreed:
        raise SchemaPending(f"the ring did not agree on the schema of {what} in time")


def _split_statements(migration: str) -> list[str]:
    return [part.strip() for part in migration.split(";") if part.strip()]
