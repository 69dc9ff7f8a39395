"""Helpers for the end-to-end tests: start/stop the stack, search for leaked identifiers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from engine_support import cassandra_env, cassandra_session

from healthbank.dev import synthetic
from healthbank.dev.devstack import LocalStack

AUTH_SECRET = "e2e-auth-secret"


def real_engine_settings(engines: dict[str, str], keyspace_prefix: str) -> dict[str, str]:
    """Settings that put every service on Cassandra (in keyspaces ``<keyspace_prefix>_*``),
    OpenBao and Redis, still with the tests' development tokens (so the production guard
    is told this is a development stack)."""
    return {
        **engines,
        **cassandra_env(engines, keyspace_prefix),
        "HEALTHBANK_KEY_PROVIDER": "vault",
        "HEALTHBANK_CACHE_BACKEND": "redis",
        "HEALTHBANK_ALLOW_DEV_SECURITY": "true",
    }


def start_stack(data_dir: Path, env: dict[str, str], *, tls: bool = False) -> LocalStack:
    """Start the seven services; they share ``data_dir`` and ``env``. With ``tls`` they use
    mutual TLS with certificates from a local CA (``stack.client_files`` for the test's
    own client)."""
    stack = LocalStack(data_dir, env={"HEALTHBANK_AUTH_SECRET": AUTH_SECRET, **env}, tls=tls)
    stack.start(timeout=120)
    return stack


def stop_stack(stack: LocalStack) -> None:
    """SIGTERM every service and assert each drained and exited cleanly."""
    codes = stack.stop()
    assert codes == dict.fromkeys(codes, 0), codes


def identifiers(people: Sequence[synthetic.Patient]) -> list[bytes]:
    """Every name, ID number and phone number of ``people``, as bytes to search for."""
    return [
        value.encode()
        for person in people
        for value in (person.family_name, person.given_name, person.national_id, person.phone)
    ]


def files_containing(root: Path, needles: Sequence[bytes], skip: Sequence[str] = ()) -> list[str]:
    """Files under ``root`` (not under a ``skip`` folder) that contain any needle."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or any(part in skip for part in path.relative_to(root).parts):
            continue
        content = path.read_bytes()
        found += [f"{path.relative_to(root)}: {n.decode()}" for n in needles if n in content]
    return found


def cassandra_rows_containing(
    engines: dict[str, str], keyspace_prefix: str, needles: Sequence[bytes]
) -> tuple[int, list[str]]:
    """(tables read, hits): every row of every table of the stack's keyspaces, searched."""
    hosts, port = engines["HEALTHBANK_CASSANDRA_HOSTS"], engines["HEALTHBANK_CASSANDRA_PORT"]
    with cassandra_session(hosts, port) as session:
        tables = [
            (row.keyspace_name, row.table_name)
            for row in session.execute("SELECT keyspace_name, table_name FROM system_schema.tables")
            if row.keyspace_name.startswith(f"{keyspace_prefix}_")
        ]
        hits = []
        for keyspace, table in tables:
            for row in session.execute(f"SELECT * FROM {keyspace}.{table}"):
                text = repr(tuple(row)).encode() + b"".join(
                    value for value in row if isinstance(value, bytes)
                )
                hits += [f"{keyspace}.{table}: {n.decode()}" for n in needles if n in text]
        return len(tables), hits


def engine_data_dir(engines_tool: ModuleType) -> Path:
    """Where the real engines keep their files (SSTables, commit log, raft data)."""
    return Path(engines_tool.Config.load().state)
