"""Each Cassandra driver error class, mapped to what the caller should do: retry later
(StorageUnavailable: UNAVAILABLE with RetryInfo) or never (StorageRefused with its cause)."""

from __future__ import annotations

import pytest
from cassandra import (
    AlreadyExists,
    AuthenticationFailed,
    ConfigurationException,
    ConsistencyLevel,
    FunctionFailure,
    InvalidRequest,
    OperationTimedOut,
    ReadFailure,
    ReadTimeout,
    Unauthorized,
    Unavailable,
    UnresolvableContactPoints,
    WriteFailure,
    WriteTimeout,
    WriteType,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException, ConnectionShutdown
from cassandra.protocol import ConfigurationException as ConfigurationErrorMessage
from cassandra.protocol import (
    IsBootstrappingErrorMessage,
    OverloadedErrorMessage,
    ServerError,
    SyntaxException,
    TruncateError,
)

from healthbank.storage.cassandra_errors import storage_error
from healthbank.storage.errors import StorageRefused, StorageUnavailable

QUORUM = ConsistencyLevel.LOCAL_QUORUM

TRANSIENT = [
    Unavailable("down", consistency=QUORUM, required_replicas=2, alive_replicas=1),
    ReadTimeout("slow", consistency=QUORUM, required_responses=2, received_responses=1),
    WriteTimeout(
        "slow",
        consistency=QUORUM,
        required_responses=2,
        received_responses=1,
        write_type=WriteType.BATCH,
    ),
    ReadFailure("failed", consistency=QUORUM, required_responses=2, received_responses=1),
    WriteFailure(
        "failed",
        consistency=QUORUM,
        required_responses=2,
        received_responses=1,
        write_type=WriteType.BATCH,
    ),
    OperationTimedOut("client timeout"),
    NoHostAvailable("none", {"127.0.0.1:9042": ConnectionRefusedError()}),
    ConnectionException("reset"),
    ConnectionShutdown("closed"),
    ConnectionRefusedError(),
    OverloadedErrorMessage(code=0x1001, message="overloaded", info=None),
    IsBootstrappingErrorMessage(code=0x1002, message="bootstrapping", info=None),
    TruncateError(code=0x1003, message="truncate", info=None),
    ServerError(code=0x0000, message="server error", info=None),
    UnresolvableContactPoints("no address"),
]

REFUSED = [
    (
        InvalidRequest('Error from server: code=2200 [Invalid query] message="Batch too large"'),
        "REQUEST_TOO_LARGE",
    ),
    (
        InvalidRequest("Rejected an oversized mutation (17 bytes) for keyspace hb_records"),
        "REQUEST_TOO_LARGE",
    ),
    (InvalidRequest("unconfigured table schema_migrations"), "SCHEMA_MISSING"),
    (InvalidRequest("Keyspace hb_records does not exist"), "SCHEMA_MISSING"),
    (InvalidRequest("Undefined column name person_tokn"), "SCHEMA_MISSING"),
    (InvalidRequest("Invalid STRING constant for id of type int"), "INVALID_QUERY"),
    (
        SyntaxException(code=0x2000, message="line 1:7 no viable alternative", info=None),
        "INVALID_QUERY",
    ),
    (FunctionFailure("udf", keyspace="k", function="f", arg_types=[]), "INVALID_QUERY"),
    (ConfigurationException("replication"), "CONFIGURATION"),
    (ConfigurationErrorMessage(code=0x2300, message="bad option", info=None), "CONFIGURATION"),
    (AlreadyExists(keyspace="hb_records", table="records"), "CONFIGURATION"),
    (Unauthorized("no SELECT permission"), "UNAUTHORIZED"),
    (AuthenticationFailed("bad password"), "UNAUTHORIZED"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda error: type(error).__name__)
def test_transient_driver_errors_are_retryable(error: BaseException) -> None:
    mapped = storage_error("hb_records", error)
    assert type(mapped) is StorageUnavailable
    assert str(mapped) == f"cassandra keyspace hb_records: {type(error).__name__}"


@pytest.mark.parametrize(
    ("error", "cause"), REFUSED, ids=lambda item: getattr(item, "__name__", type(item).__name__)
)
def test_refused_queries_are_permanent_and_name_the_cause(error: BaseException, cause: str) -> None:
    mapped = storage_error("hb_records", error)
    assert isinstance(mapped, StorageRefused)
    assert mapped.cause == cause
    assert str(mapped) == f"cassandra keyspace hb_records: {type(error).__name__} ({cause})"


def test_an_error_text_never_reaches_the_message() -> None:
    # A server message can quote the statement's values; only the class and cause travel.
    error = InvalidRequest("Invalid STRING constant (110101199003074514) for nid of type int")
    mapped = storage_error("hb_identity", error)
    assert mapped is not None and "110101199003074514" not in str(mapped)


def test_errors_that_are_not_the_drivers_are_left_alone() -> None:
    assert storage_error("hb_records", ValueError("a bug")) is None
    assert storage_error("hb_records", TypeError("wrong bind")) is None


def test_an_unknown_refusal_cause_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown refusal cause"):
        StorageRefused("cassandra keyspace hb_records: X", cause="SOMETHING")
