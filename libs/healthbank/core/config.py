"""Process configuration: one frozen, typed :class:`Settings`, parsed once from the environment.

Every variable is ``HEALTHBANK_`` + the upper-cased field name (``HEALTHBANK_DATA_DIR``,
``HEALTHBANK_VAULT_TOKEN`` ...). :func:`load_settings` reads them, validates everything and
raises :class:`ConfigError` listing every bad variable, one line each, so a misconfigured pod
fails at start with a message an operator can act on. Secrets are never echoed back.

``Settings(...)`` with keyword arguments does not read the environment; tests use it to build a
configuration without picking up whatever the shell has set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "HEALTHBANK_"

# Service names in port order (DESIGN.md: 50051-50057, ingest first).
SERVICE_NAMES: tuple[str, ...] = (
    "ingest",
    "identity",
    "consent",
    "record-lookup",
    "archive",
    "audit",
    "ai-alert",
)
DEFAULT_PORTS: dict[str, int] = {name: 50051 + index for index, name in enumerate(SERVICE_NAMES)}

# The development defaults, public in this repository: never acceptable on real engines.
DEV_AUTH_SECRET = "healthbank-dev-auth-secret"
DEV_KEYRING_PASSPHRASE = "healthbank-dev-only"
# Shortest secret or passphrase production_problems accepts (an HMAC-SHA256 key's size).
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` pairs each env variable with the reason."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        lines = "\n".join(f"  {variable}: {reason}" for variable, reason in problems)
        super().__init__(f"invalid healthbank configuration:\n{lines}")
        self.problems = problems


def env_name(field: str) -> str:
    """Return the environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def _default_address(service: str) -> str:
    return f"127.0.0.1:{DEFAULT_PORTS[service]}"


class Settings(BaseSettings):
    """Everything a healthbank process reads from its environment. Immutable once built."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # Embedded storage: SQLite files, the local keyring, the local archive all live here.
    data_dir: Path = Path(".healthbank-data")

    # Where this process listens; port 0 means the service's default from DEFAULT_PORTS.
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)

    # Where the other services are, as host:port.
    ingest_addr: str = _default_address("ingest")
    identity_addr: str = _default_address("identity")
    consent_addr: str = _default_address("consent")
    record_lookup_addr: str = _default_address("record-lookup")
    archive_addr: str = _default_address("archive")
    audit_addr: str = _default_address("audit")
    ai_alert_addr: str = _default_address("ai-alert")

    storage_backend: Literal["sqlite", "cassandra"] = "sqlite"
    cassandra_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    cassandra_port: int = Field(default=9042, ge=1, le=65535)
    cassandra_keyspace_prefix: str = Field(default="healthbank", pattern=r"^[a-z][a-z0-9_]{0,30}$")
    cassandra_consistency: Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"] = (
        "LOCAL_QUORUM"
    )
    cassandra_replication_factor: int = Field(default=1, ge=1)

    key_provider: Literal["local", "vault"] = "local"
    keyring_path: Path | None = None
    keyring_passphrase: SecretStr = SecretStr(DEV_KEYRING_PASSPHRASE)
    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    vault_auth_method: Literal["token", "approle", "kubernetes"] = "token"
    vault_role_id: SecretStr | None = None
    vault_secret_id: SecretStr | None = None
    vault_k8s_role: str | None = None
    vault_transit_mount: str = "transit"
    data_key_cache_seconds: float = Field(default=60.0, ge=0)
    # Payloads sealed under one data key (opening counts none: ADR 61). AES-GCM with random
    # nonces stays safe far beyond this; 2**32 is the NIST limit per key.
    data_key_cache_uses: int = Field(default=10000, ge=1, le=2**32)

    # The archive's objects (segments, blobs): <data_dir>/archive, or a bucket of any
    # S3-compatible store (ADR 31); object lock keeps each object this many days (0: off).
    archive_backend: Literal["local", "s3"] = "local"
    archive_s3_endpoint: str | None = None
    archive_s3_bucket: str = "healthbank-archive"
    archive_s3_prefix: str = "archive/"
    archive_s3_region: str = "us-east-1"
    archive_s3_access_key_id: SecretStr | None = None
    archive_s3_secret_access_key: SecretStr | None = None
    archive_s3_object_lock_days: int = Field(default=0, ge=0)
    # How long one S3 request may wait to connect, and for the next bytes of an answer, and
    # how many times a transient failure is tried in all: a slow or gone store is answered
    # UNAVAILABLE in seconds rather than after botocore's 60 s defaults.
    archive_s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    archive_s3_read_timeout_seconds: float = Field(default=30.0, gt=0)
    archive_s3_max_attempts: int = Field(default=3, ge=1)

    cache_backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_ttl_seconds: float = Field(default=30.0, ge=0)

    # HMAC key for development principal tokens (hb1), accepted and minted while dev_tokens.
    auth_secret: SecretStr = SecretStr(DEV_AUTH_SECRET)
    dev_tokens: bool = True
    # EdDSA user-token issuers: a JSON file of issuer id -> public key (contracts/tokens.py).
    token_issuers_file: Path | None = None

    # mTLS (rpc/tls.py): the CA every peer's certificate must chain to, and this process's
    # own certificate and key. All three or none; none serves and dials plaintext.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    # Run development credentials against real engines anyway (the project's own tests and
    # `healthbank up --engines real`); a deployment never sets it. See production_problems.
    allow_dev_security: bool = False

    # Telemetry export is off when no endpoint is set; host:port (plaintext) and
    # http(s)://host:port are accepted and kept as a URL (see otlp_endpoint_url).
    otlp_endpoint: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The event loop `healthbank serve` runs a service on (ADR 44): uvloop's, where it is
    # installed, spends less CPU per call than asyncio's own.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    # Per-caller rate limits (rpc/rate_limit.py): calls a second on average and at once, per
    # hospital engine and per clinician, in each service replica; 0 (the default: off for
    # development and tests) turns a limit off; the chart sets them.
    rate_limit_hospital_engine_per_second: float = Field(default=0.0, ge=0)
    rate_limit_hospital_engine_burst: float = Field(default=0.0, ge=0)
    rate_limit_clinician_per_second: float = Field(default=0.0, ge=0)
    rate_limit_clinician_burst: float = Field(default=0.0, ge=0)

    # Identity's probabilistic matching (ADR 25): posterior probabilities at or above which
    # a registration without a national ID is linked / queued for review; newborns (born at
    # most this many days ago) are always new persons.
    identity_match_link_threshold: float = Field(default=0.97, gt=0, le=1)
    identity_match_review_threshold: float = Field(default=0.5, gt=0, le=1)
    identity_newborn_days: int = Field(default=28, ge=0)
    # How often each identity replica looks for merges made by another one (ADR 33): its
    # cache of known patients is dropped when one happened, so a merged person's record
    # numbers reach the survivor on every replica within about this long.
    identity_merge_poll_seconds: float = Field(default=1.0, gt=0)

    # Ingest parses messages in worker processes (ADRs 18, 20): how many (0: min(2, CPUs)),
    # and from what size a message gets a worker of its own that exits after it (so a huge
    # message's memory is returned).
    ingest_parse_workers: int = Field(default=0, ge=0, le=64)
    ingest_parse_large_message_bytes: int = Field(default=1024 * 1024, ge=1)

    # Research (ADR 26): the data security committee decides once this many members have
    # voted; a veto rejects at once when allowed. A request's privacy budget is at most
    # research_max_epsilon; the black room suppresses result cells of fewer persons than
    # research_min_cell_size and spends research_query_epsilon per query unless asked.
    research_committee_quorum: int = Field(default=3, ge=1, le=50)
    research_committee_veto: bool = True
    research_max_epsilon: float = Field(default=10.0, gt=0, le=100)
    research_min_cell_size: int = Field(default=10, ge=1)
    research_query_epsilon: float = Field(default=0.1, gt=0, le=10)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read only constructor arguments; load_settings is the single environment reader."""
        return (init_settings,)

    @field_validator("cassandra_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @field_validator("log_level", "cassandra_consistency", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "ingest_addr",
        "identity_addr",
        "consent_addr",
        "record_lookup_addr",
        "archive_addr",
        "audit_addr",
        "ai_alert_addr",
    )
    @classmethod
    def _check_address(cls, value: str) -> str:
        _validate_address(value)
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else otlp_endpoint_url(value)

    @field_validator("vault_addr", "redis_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a URL with a scheme, e.g. http://host:port")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        problems = _combination_problems(self)
        if problems:
            # One line per variable; load_settings splits them back into ConfigError problems.
            raise ValueError("\n".join(f"{variable}: {reason}" for variable, reason in problems))
        return self

    @property
    def tls_enabled(self) -> bool:
        """Whether this process serves and dials with mutual TLS."""
        return self.tls_ca_file is not None

    @property
    def real_engines(self) -> list[str]:
        """The real engines configured (the env variables that choose them); [] if embedded."""
        chosen = {
            "storage_backend": self.storage_backend == "cassandra",
            "key_provider": self.key_provider == "vault",
            "cache_backend": self.cache_backend == "redis",
        }
        return [env_name(field) for field, real in chosen.items() if real]

    @property
    def keyring_file(self) -> Path:
        """The local keyring file: keyring_path, or keyring.json inside data_dir."""
        return self.keyring_path or self.data_dir / "keyring.json"

    def address_of(self, service: str) -> str:
        """Return the configured host:port of ``service`` (one of :data:`SERVICE_NAMES`)."""
        if service not in DEFAULT_PORTS:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICE_NAMES}")
        address: str = getattr(self, service.replace("-", "_") + "_addr")
        return address

    def listen_port(self, service: str) -> int:
        """Return the port ``service`` should listen on: ``port``, or its default when 0."""
        if service not in DEFAULT_PORTS:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICE_NAMES}")
        return self.port or DEFAULT_PORTS[service]


def _validate_address(address: str) -> None:
    """Accept host:port or [ipv6]:port with a port in 1..65535."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError("an IPv6 host must be in brackets, e.g. [::1]:50051")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("port must be a number from 1 to 65535")


def otlp_endpoint_url(endpoint: str) -> str:
    """Return an OTLP/gRPC endpoint as ``http(s)://host:port``, or raise ValueError.

    ``host:port`` means plaintext (an in-cluster collector), ``http://`` plaintext and
    ``https://`` TLS; a path, another scheme or a missing port is refused, because the
    exporter would otherwise start and silently export nothing.
    """
    scheme, sep, rest = endpoint.strip().partition("://")
    if not sep:
        scheme, rest = "http", endpoint.strip()
    if scheme not in ("http", "https"):
        raise ValueError("must be host:port, http://host:port or https://host:port")
    rest = rest.removesuffix("/")
    if "/" in rest:
        raise ValueError("must not have a path: OTLP/gRPC takes host:port only")
    _validate_address(rest)
    return f"{scheme}://{rest}"


def _combination_problems(settings: Settings) -> list[tuple[str, str]]:
    """Problems that involve more than one field, as (env variable, reason)."""
    problems: list[tuple[str, str]] = []
    if settings.storage_backend == "cassandra" and not settings.cassandra_hosts:
        problems.append((env_name("cassandra_hosts"), "required when storage_backend=cassandra"))
    if settings.key_provider == "vault":
        method = settings.vault_auth_method
        required: dict[str, tuple[str, ...]] = {
            "token": ("vault_token",),
            "approle": ("vault_role_id", "vault_secret_id"),
            "kubernetes": ("vault_k8s_role",),
        }
        for field in required[method]:
            value = getattr(settings, field)
            if value is None or _secret_text(value) == "":
                problems.append(
                    (env_name(field), f"required when key_provider=vault with auth {method}")
                )
    tls_files = ("tls_ca_file", "tls_cert_file", "tls_key_file")
    if any(getattr(settings, field) is not None for field in tls_files):
        problems += [
            (env_name(field), "required when any HEALTHBANK_TLS_* file is set")
            for field in tls_files
            if getattr(settings, field) is None
        ]
    return problems


class UnsafeForProduction(Exception):
    """Development credentials on real engines; ``problems`` pairs each variable with why."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{variable} {reason}" for variable, reason in problems))
        self.problems = problems


def production_problems(settings: Settings) -> list[tuple[str, str]]:
    """Why ``settings`` must not serve real data, as (env variable, reason); [] when safe.

    Only a configuration with a real engine (Cassandra, Vault/OpenBao, Redis) is checked,
    so embedded development keeps working with zero configuration; ``allow_dev_security``
    opts a development stack on real engines out. Reasons never contain the values.
    """
    if not settings.real_engines or settings.allow_dev_security:
        return []
    problems: list[tuple[str, str]] = []
    secrets = {"auth_secret": DEV_AUTH_SECRET}
    if settings.key_provider == "local":
        # The passphrase only protects anything while the local keyring holds the keys.
        secrets["keyring_passphrase"] = DEV_KEYRING_PASSPHRASE
    for field, development_value in secrets.items():
        text = _secret_text(getattr(settings, field))
        if text == development_value:
            problems.append((env_name(field), "is the development value from the repository"))
        elif len(text.encode("utf-8")) < MIN_SECRET_BYTES:
            problems.append((env_name(field), f"is shorter than {MIN_SECRET_BYTES} bytes"))
    if not settings.tls_enabled:
        problems.append((env_name("tls_ca_file"), "is not set: gRPC would be plaintext"))
    if settings.dev_tokens:
        problems.append((env_name("dev_tokens"), "is on: HMAC development tokens accepted"))
    return problems


def check_production_safe(settings: Settings) -> None:
    """Raise :class:`UnsafeForProduction` when :func:`production_problems` finds any."""
    problems = production_problems(settings)
    if problems:
        raise UnsafeForProduction(problems)


def _secret_text(value: SecretStr | str) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# Fields where an empty variable means "not set" (Kubernetes manifests often render "").
_OPTIONAL_FIELDS = frozenset(
    name
    for name, field in Settings.model_fields.items()
    if field.default is None and not field.is_required()
)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse ``env`` (default: ``os.environ``) into :class:`Settings`, or raise ConfigError.

    Variables without the ``HEALTHBANK_`` prefix and unknown ``HEALTHBANK_*`` names are ignored
    (other tools share the prefix). Error messages name the variable and never its value.
    """
    source = os.environ if env is None else env
    values: dict[str, str | None] = {}
    for field in Settings.model_fields:
        raw = source.get(env_name(field))
        if raw is None:
            continue
        if raw.strip() == "" and field in _OPTIONAL_FIELDS:
            values[field] = None
            continue
        values[field] = raw.strip()
    try:
        return Settings(**values)  # type: ignore[arg-type]  # pydantic coerces the strings
    except ValidationError as error:
        raise ConfigError(_problems_from(error)) from None


def _problems_from(error: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (env variable, reason) pairs without the input values."""
    problems: list[tuple[str, str]] = []
    for detail in error.errors(include_input=False, include_url=False):
        location = detail["loc"]
        if location:
            problems.append((env_name(str(location[0])), _reason(detail)))
            continue
        # A model-level check: its message already is "VARIABLE: reason" lines.
        for line in str(detail.get("ctx", {}).get("error", detail["msg"])).splitlines():
            variable, _, reason = line.partition(": ")
            problems.append((variable, reason))
    return problems


def _reason(detail: Mapping[str, Any]) -> str:
    """pydantic's message, minus the "Value error, " prefix custom validators get."""
    message = str(detail["msg"])
    return message.removeprefix("Value error, ")
