"""Smoke tests of the real engines provisioned by tools/engines/engines.py.

A module-scoped fixture calls ``engines.up()`` (idempotent: a no-op when they already run) and
leaves them running at the end; whoever runs the tests stops them with
``python tools/engines/engines.py down``. Each test talks to one engine with the client the
project uses: cassandra-driver, hvac and redis-py.

The restart tests stop and start OpenBao and Redis of whatever state directory the
environment names (HEALTHBANK_ENGINES_DIR, default <repo>/.engines): run this module against
a private one (and other ports) while others use the shared engines.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import hvac
import pytest
import redis
import requests
from cassandra import InvalidRequest
from cassandra.query import BatchStatement, BatchType

from healthbank.storage.cassandra import coordinated_by

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def engines(engines_tool: ModuleType) -> ModuleType:
    """Here ``engines`` is tools/engines/engines.py itself (loaded once, by tests/conftest.py)."""
    return engines_tool


@pytest.fixture(scope="module")
def engines_env(engines: ModuleType) -> Iterator[dict[str, str]]:
    # No teardown on purpose: the engines outlive the test session (the test command stops them).
    yield engines.up()


@pytest.fixture
def cassandra_session(engines_env: dict[str, str]) -> Iterator[Any]:
    with coordinated_by(
        engines_env["HEALTHBANK_CASSANDRA_HOSTS"].split(",")[0],
        int(engines_env["HEALTHBANK_CASSANDRA_PORT"]),
    ) as session:
        yield session


@pytest.fixture
def vault(engines_env: dict[str, str]) -> hvac.Client:
    client = hvac.Client(
        url=engines_env["HEALTHBANK_VAULT_ADDR"], token=engines_env["HEALTHBANK_VAULT_TOKEN"]
    )
    assert client.is_authenticated()
    return client


@pytest.fixture
def redis_client(engines_env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(engines_env["HEALTHBANK_REDIS_URL"])
    yield client
    client.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_env_file_and_status(engines: ModuleType, engines_env: dict[str, str]) -> None:
    assert set(engines_env) == {
        "HEALTHBANK_CASSANDRA_HOSTS",
        "HEALTHBANK_CASSANDRA_PORT",
        "HEALTHBANK_VAULT_ADDR",
        "HEALTHBANK_VAULT_TOKEN",
        "HEALTHBANK_REDIS_URL",
    }
    env_file = engines.Config.load().state / "engines.env"
    lines = env_file.read_text().splitlines()
    assert lines == [f"{k}={v}" for k, v in engines_env.items()]
    for engine, st in engines.status().items():
        assert st["running"] and st["healthy"], (engine, st)


def create_smoke_keyspace(session: Any) -> None:
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS healthbank_smoke WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )


def test_cassandra_keyspace_table_roundtrip(cassandra_session: Any) -> None:
    session = cassandra_session
    (version,) = session.execute("SELECT release_version FROM system.local").one()
    assert version.startswith("5.0.")
    create_smoke_keyspace(session)
    session.execute(
        "CREATE TABLE IF NOT EXISTS healthbank_smoke.notes "
        "(id uuid PRIMARY KEY, body text, created timestamp)"
    )
    note_id, body = uuid.uuid4(), f"smoke {time.time()}"
    insert = session.prepare(
        "INSERT INTO healthbank_smoke.notes (id, body, created) VALUES (?, ?, toTimestamp(now()))"
    )
    session.execute(insert, (note_id, body))
    row = session.execute(
        "SELECT id, body, created FROM healthbank_smoke.notes WHERE id = %s", (note_id,)
    ).one()
    assert row is not None
    assert (row.id, row.body) == (note_id, body)
    assert row.created is not None


def test_cassandra_durable_commitlog_and_large_logged_batches(cassandra_session: Any) -> None:
    session = cassandra_session
    # What the node actually runs with (cassandra.yaml.template), read back from the node.
    settings = {
        row.name: row.value
        for row in session.execute("SELECT name, value FROM system_views.settings")
    }
    assert settings["commitlog_sync"] == "batch"  # an acknowledged write is fsynced
    assert settings["batch_size_warn_threshold"] == "256KiB"
    assert settings["batch_size_fail_threshold"] == "4MiB"

    # A hospital message is one LOGGED batch; with sealed payloads it exceeds the 50KiB
    # default fail threshold. 1MiB over two partitions is accepted; over 4MiB is refused.
    create_smoke_keyspace(session)
    session.execute(
        "CREATE TABLE IF NOT EXISTS healthbank_smoke.sealed (p text, c int, payload blob, "
        "PRIMARY KEY (p, c))"
    )
    insert = session.prepare("INSERT INTO healthbank_smoke.sealed (p, c, payload) VALUES (?, ?, ?)")

    def batch(total: int, rows: int) -> tuple[BatchStatement, str]:
        statement, message = BatchStatement(batch_type=BatchType.LOGGED), uuid.uuid4().hex
        for c in range(rows):
            statement.add(insert, (f"{message}-{c % 2}", c, os.urandom(total // rows)))
        return statement, message

    accepted, message = batch(1 << 20, 16)
    session.execute(accepted)
    (count,) = session.execute(
        "SELECT count(*) FROM healthbank_smoke.sealed WHERE p IN (%s, %s)",
        (f"{message}-0", f"{message}-1"),
    ).one()
    assert count == 16
    refused, _ = batch(4 * (1 << 20) + (64 << 10), 64)
    with pytest.raises(InvalidRequest, match="Batch too large"):
        session.execute(refused)


def test_openbao_transit(vault: hvac.Client) -> None:
    transit = vault.secrets.transit
    suffix = uuid.uuid4().hex[:8]

    # A symmetric key: a data key (plaintext + wrapped), wrapped copy unwraps to the same bytes.
    key = f"smoke-aes-{suffix}"
    transit.create_key(name=key, key_type="aes256-gcm96")
    data_key = transit.generate_data_key(name=key, key_type="plaintext")["data"]
    plaintext = base64.b64decode(data_key["plaintext"])
    assert len(plaintext) == 32
    assert data_key["ciphertext"].startswith("vault:v1:")
    unwrapped = transit.decrypt_data(name=key, ciphertext=data_key["ciphertext"])["data"]
    assert base64.b64decode(unwrapped["plaintext"]) == plaintext

    # HMAC with the same key: deterministic for the same input, different for another.
    mac = transit.generate_hmac(name=key, hash_input=b64(b"patient-42"), algorithm="sha2-256")
    again = transit.generate_hmac(name=key, hash_input=b64(b"patient-42"), algorithm="sha2-256")
    other = transit.generate_hmac(name=key, hash_input=b64(b"patient-43"), algorithm="sha2-256")
    assert mac["data"]["hmac"].startswith("vault:v1:")
    assert mac["data"]["hmac"] == again["data"]["hmac"] != other["data"]["hmac"]

    # An ed25519 key: sign, verify, and a tampered message does not verify.
    signer = f"smoke-ed25519-{suffix}"
    transit.create_key(name=signer, key_type="ed25519")
    message = b64(b"audit record 1")
    signature = transit.sign_data(name=signer, hash_input=message)["data"]["signature"]
    assert signature.startswith("vault:v1:")
    verified = transit.verify_signed_data(name=signer, hash_input=message, signature=signature)
    assert verified["data"]["valid"] is True
    tampered = transit.verify_signed_data(
        name=signer, hash_input=b64(b"audit record 2"), signature=signature
    )
    assert tampered["data"]["valid"] is False


def test_redis_set_get_and_pubsub(redis_client: redis.Redis) -> None:
    key = f"smoke:{uuid.uuid4().hex}"
    assert redis_client.set(key, b"value", ex=60)
    assert redis_client.get(key) == b"value"

    channel = f"smoke-channel-{uuid.uuid4().hex[:8]}"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel)
        # The subscription is live once the server confirmed it (first message, ignored here).
        deadline = time.monotonic() + 5
        while redis_client.pubsub_numsub(channel)[0][1] < 1:
            pubsub.get_message(timeout=0.1)
            assert time.monotonic() < deadline, "subscription never confirmed"
        assert redis_client.publish(channel, b"hello") == 1
        received = None
        while received is None and time.monotonic() < deadline:
            received = pubsub.get_message(timeout=0.5)
        assert received is not None, "published message never arrived"
        assert received["type"] == "message"
        assert received["channel"].decode() == channel
        assert received["data"] == b"hello"
    finally:
        pubsub.close()


@pytest.mark.parametrize("engine", ["redis", "vault"])
def test_restart_one_engine_leaves_the_others_alone(
    engines: ModuleType, engines_env: dict[str, str], engine: str
) -> None:
    before = engines.status()
    others = {e: st["pid"] for e, st in before.items() if e != engine}

    engines.down(only=engine)
    after_down = engines.status()
    assert not after_down[engine]["running"]
    assert {e: st["pid"] for e, st in after_down.items() if e != engine} == others

    assert engines.up(only=engine) == engines_env
    after_up = engines.status()
    assert after_up[engine]["running"] and after_up[engine]["healthy"]
    assert after_up[engine]["pid"] != before[engine]["pid"]
    assert {e: st["pid"] for e, st in after_up.items() if e != engine} == others
    for st in after_up.values():
        assert st["healthy"]


def test_openbao_keeps_keys_and_token_across_restart(
    engines: ModuleType, engines_env: dict[str, str], vault: hvac.Client
) -> None:
    """The outage tests stop OpenBao under running services and expect them to work again once
    it is back: its keys (so sealed data stays readable) and its token must survive."""
    transit = vault.secrets.transit
    key = f"smoke-persist-{uuid.uuid4().hex[:8]}"
    transit.create_key(name=key, key_type="aes256-gcm96")
    secret = os.urandom(64)
    sealed = transit.encrypt_data(name=key, plaintext=b64(secret))["data"]["ciphertext"]
    data_key = transit.generate_data_key(name=key, key_type="plaintext")["data"]
    mac = transit.generate_hmac(name=key, hash_input=b64(b"patient-42"), algorithm="sha2-256")
    token = vault.auth.token.lookup_self()["data"]
    assert token["id"] == engines_env["HEALTHBANK_VAULT_TOKEN"]
    assert token["expire_time"] is None and token["ttl"] == 0  # never expires
    assert "root" in token["policies"]
    init_file = engines.Config.load().vault_dir / "init.json"
    assert init_file.stat().st_mode & 0o777 == 0o600  # the unseal key and the root token
    pid = engines.status()["vault"]["pid"]

    engines.down(only="vault")
    with pytest.raises(requests.exceptions.ConnectionError):
        vault.sys.read_health_status(method="GET")  # really gone
    assert engines.up(only="vault") == engines_env
    assert engines.status()["vault"]["pid"] != pid

    # The same client object and token, as a service that kept running would use them.
    again = vault.auth.token.lookup_self()["data"]
    assert (again["id"], again["accessor"]) == (token["id"], token["accessor"])  # not re-created
    opened = transit.decrypt_data(name=key, ciphertext=sealed)["data"]["plaintext"]
    assert base64.b64decode(opened) == secret
    unwrapped = transit.decrypt_data(name=key, ciphertext=data_key["ciphertext"])["data"]
    assert unwrapped["plaintext"] == data_key["plaintext"]
    mac_after = transit.generate_hmac(name=key, hash_input=b64(b"patient-42"), algorithm="sha2-256")
    assert mac_after["data"]["hmac"] == mac["data"]["hmac"]
    assert transit.read_key(name=key)["data"]["latest_version"] == 1
