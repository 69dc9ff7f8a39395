"""What `healthbank migrate` (healthbank.storage.schema, ADR 35) rolls out, without a
cluster: every keyspace with its module's migrations, and each service's keyspaces."""

from __future__ import annotations

from healthbank.core.config import SERVICE_NAMES
from healthbank.storage.schema import (
    KEYSPACES,
    SERVICE_KEYSPACES,
    _split_statements,
    concerns_of,
    keyspace_migrations,
    required_version,
)


def test_every_service_names_the_keyspaces_it_opens_and_each_keyspace_is_someones() -> None:
    assert set(SERVICE_KEYSPACES) == set(SERVICE_NAMES)
    opened = {concern for concerns in SERVICE_KEYSPACES.values() for concern in concerns}
    assert opened == set(KEYSPACES)


def test_each_keyspace_has_ordered_migrations_of_idempotent_statements() -> None:
    for concern in KEYSPACES:
        migrations = keyspace_migrations(concern)
        assert required_version(migrations) == len(migrations) >= 1, concern
        for migration in migrations:
            for statement in _split_statements(migration):
                # Safe to re-run after a crash and from two migrate runs at once.
                guarded = " IF NOT EXISTS" in statement.upper() or " IF EXISTS" in statement.upper()
                assert guarded, (concern, statement[:60])


def test_the_keyspaces_of_some_services_each_once_in_rollout_order() -> None:
    assert concerns_of(["archive", "ingest", "record-lookup"]) == ["records", "ingest", "archive"]
    assert concerns_of(["consent"]) == ["consent", "research"]
    assert concerns_of([]) == []
