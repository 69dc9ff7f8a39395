"""Unit tests for settings parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from healthbank.core.config import (
    DEFAULT_PORTS,
    MIN_SECRET_BYTES,
    SERVICE_NAMES,
    ConfigError,
    Settings,
    UnsafeForProduction,
    check_production_safe,
    load_settings,
    production_problems,
)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.data_dir == Path(".healthbank-data")
    assert settings.keyring_file == Path(".healthbank-data/keyring.json")
    assert settings.storage_backend == "sqlite"
    assert settings.key_provider == "local"
    assert settings.otlp_endpoint is None
    assert settings.cassandra_hosts == ["127.0.0.1"]
    assert settings.keyring_passphrase.get_secret_value() == "healthbank-dev-only"


def test_ports_and_addresses_follow_the_service_order() -> None:
    assert list(DEFAULT_PORTS.items()) == [
        ("ingest", 50051),
        ("identity", 50052),
        ("consent", 50053),
        ("record-lookup", 50054),
        ("archive", 50055),
        ("audit", 50056),
        ("ai-alert", 50057),
    ]
    settings = load_settings({"HEALTHBANK_AUDIT_ADDR": "audit.healthbank.svc:6000"})
    assert settings.address_of("record-lookup") == "127.0.0.1:50054"
    assert settings.address_of("audit") == "audit.healthbank.svc:6000"
    assert [settings.listen_port(name) for name in SERVICE_NAMES] == list(DEFAULT_PORTS.values())
    assert load_settings({"HEALTHBANK_PORT": "7000"}).listen_port("audit") == 7000
    with pytest.raises(ValueError):
        settings.address_of("billing")


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "HEALTHBANK_DATA_DIR": "/var/lib/healthbank",
            "HEALTHBANK_STORAGE_BACKEND": "cassandra",
            "HEALTHBANK_CASSANDRA_HOSTS": "cass-0, cass-1,,cass-2",
            "HEALTHBANK_CASSANDRA_CONSISTENCY": "quorum",
            "HEALTHBANK_LOG_LEVEL": "debug",
            "HEALTHBANK_OTLP_ENDPOINT": "",
            "HEALTHBANK_DATA_KEY_CACHE_SECONDS": "2.5",
            "HEALTHBANK_IDENTITY_ADDR": "[::1]:50052",
            "PATH": "/usr/bin",
            "HEALTHBANK_SOMETHING_ELSE": "ignored",
        }
    )
    assert settings.data_dir == Path("/var/lib/healthbank")
    assert settings.keyring_file == Path("/var/lib/healthbank/keyring.json")
    assert settings.cassandra_hosts == ["cass-0", "cass-1", "cass-2"]
    assert settings.cassandra_consistency == "QUORUM"
    assert settings.log_level == "DEBUG"
    assert settings.otlp_endpoint is None
    assert settings.data_key_cache_seconds == 2.5


def test_every_problem_is_listed_by_variable_without_values() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {
                "HEALTHBANK_PORT": "70000",
                "HEALTHBANK_CONSENT_ADDR": "consent",
                "HEALTHBANK_ARCHIVE_ADDR": "archive:http",
                "HEALTHBANK_STORAGE_BACKEND": "postgres",
                "HEALTHBANK_DATA_KEY_CACHE_USES": "many",
                "HEALTHBANK_KEYRING_PASSPHRASE": "p@ss-secret",
            }
        )
    variables = [variable for variable, _ in raised.value.problems]
    assert variables == [
        "HEALTHBANK_PORT",
        "HEALTHBANK_CONSENT_ADDR",
        "HEALTHBANK_ARCHIVE_ADDR",
        "HEALTHBANK_STORAGE_BACKEND",
        "HEALTHBANK_DATA_KEY_CACHE_USES",
    ]
    message = str(raised.value)
    assert len(message.splitlines()) == 1 + len(variables)
    assert "70000" not in message and "postgres" not in message and "p@ss" not in message
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"HEALTHBANK_VAULT_AUTH_METHOD": "token"}, ["HEALTHBANK_VAULT_TOKEN"]),
        (
            {"HEALTHBANK_VAULT_AUTH_METHOD": "approle", "HEALTHBANK_VAULT_ROLE_ID": "r"},
            ["HEALTHBANK_VAULT_SECRET_ID"],
        ),
        (
            {"HEALTHBANK_VAULT_AUTH_METHOD": "approle", "HEALTHBANK_VAULT_SECRET_ID": ""},
            ["HEALTHBANK_VAULT_ROLE_ID", "HEALTHBANK_VAULT_SECRET_ID"],
        ),
        ({"HEALTHBANK_VAULT_AUTH_METHOD": "kubernetes"}, ["HEALTHBANK_VAULT_K8S_ROLE"]),
    ],
)
def test_vault_requires_credentials_for_its_auth_method(
    env: dict[str, str], missing: list[str]
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"HEALTHBANK_KEY_PROVIDER": "vault", **env})
    assert [variable for variable, _ in raised.value.problems] == missing


def test_vault_with_credentials_is_accepted() -> None:
    settings = load_settings(
        {"HEALTHBANK_KEY_PROVIDER": "vault", "HEALTHBANK_VAULT_TOKEN": "s.abc"}
    )
    assert settings.vault_token is not None
    assert "s.abc" not in repr(settings)


def test_cassandra_needs_hosts() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {"HEALTHBANK_STORAGE_BACKEND": "cassandra", "HEALTHBANK_CASSANDRA_HOSTS": " , "}
        )
    assert raised.value.problems[0][0] == "HEALTHBANK_CASSANDRA_HOSTS"


def test_settings_are_frozen_and_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEALTHBANK_PORT", "1234")
    settings = Settings(data_dir=tmp_path)
    assert settings.port == 0
    assert load_settings().port == 1234
    with pytest.raises(ValidationError):
        settings.port = 5


def test_tls_files_come_all_three_or_none() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"HEALTHBANK_TLS_CA_FILE": "/pki/ca.pem"})
    assert [variable for variable, _ in raised.value.problems] == [
        "HEALTHBANK_TLS_CERT_FILE",
        "HEALTHBANK_TLS_KEY_FILE",
    ]
    assert load_settings({}).tls_enabled is False


STRONG = "x" * MIN_SECRET_BYTES
SAFE_ON_REAL_ENGINES = {
    "HEALTHBANK_STORAGE_BACKEND": "cassandra",
    "HEALTHBANK_AUTH_SECRET": STRONG,
    "HEALTHBANK_KEYRING_PASSPHRASE": STRONG,
    "HEALTHBANK_DEV_TOKENS": "false",
    "HEALTHBANK_TLS_CA_FILE": "/pki/ca.pem",
    "HEALTHBANK_TLS_CERT_FILE": "/pki/identity.pem",
    "HEALTHBANK_TLS_KEY_FILE": "/pki/identity-key.pem",
}


def test_embedded_defaults_pass_the_production_guard() -> None:
    assert production_problems(load_settings({})) == []
    check_production_safe(load_settings({}))


@pytest.mark.parametrize(
    "engine",
    [
        {"HEALTHBANK_STORAGE_BACKEND": "cassandra"},
        {"HEALTHBANK_KEY_PROVIDER": "vault", "HEALTHBANK_VAULT_TOKEN": "t"},
        {"HEALTHBANK_CACHE_BACKEND": "redis"},
    ],
)
def test_any_real_engine_turns_the_guard_on(engine: dict[str, str]) -> None:
    problems = production_problems(load_settings(engine))
    assert [variable for variable, _ in problems] == [
        "HEALTHBANK_AUTH_SECRET",
        *(["HEALTHBANK_KEYRING_PASSPHRASE"] if "HEALTHBANK_KEY_PROVIDER" not in engine else []),
        "HEALTHBANK_TLS_CA_FILE",
        "HEALTHBANK_DEV_TOKENS",
    ]
    assert (
        production_problems(load_settings({**engine, "HEALTHBANK_ALLOW_DEV_SECURITY": "1"})) == []
    )


def test_a_safe_production_configuration_passes_and_values_are_never_echoed() -> None:
    assert production_problems(load_settings(SAFE_ON_REAL_ENGINES)) == []
    short = "s3cr3t-but-short"
    with pytest.raises(UnsafeForProduction) as raised:
        check_production_safe(
            load_settings({**SAFE_ON_REAL_ENGINES, "HEALTHBANK_AUTH_SECRET": short})
        )
    assert str(raised.value) == "HEALTHBANK_AUTH_SECRET is shorter than 32 bytes"
    assert short not in str(raised.value)
