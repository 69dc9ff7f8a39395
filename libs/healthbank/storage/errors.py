"""Errors every store backend raises the same way."""

from __future__ import annotations

__all__ = ["REFUSAL_CAUSES", "SchemaPending", "StorageRefused", "StorageUnavailable"]

REFUSAL_CAUSES = frozenset(
    {"REQUEST_TOO_LARGE", "SCHEMA_MISSING", "INVALID_QUERY", "CONFIGURATION", "UNAUTHORIZED"}
)
"""Why an engine refused a request (:attr:`StorageRefused.cause`)."""


class StorageUnavailable(Exception):
    """The storage engine cannot be reached now; the call may succeed on retry.

    The RPC layer answers UNAVAILABLE with RetryInfo. The message names the engine
    and the error type only, never a query's parameters.
    """


class SchemaPending(StorageUnavailable):
    """The keyspace is not (yet) at the schema version this process needs.

    ``healthbank migrate`` creates and upgrades schema; until it has, the service reports
    NOT_SERVING and answers UNAVAILABLE (ADR 32). The message names the keyspace and the
    versions only.
    """


class StorageRefused(Exception):
    """The storage engine refused a request as invalid (too large, unknown table, bad query).

    Permanent: the same request fails the same way, so it is never answered as "retry".
    ``cause`` is one of :data:`REFUSAL_CAUSES`; the message names the engine, the keyspace
    and the error type only.
    """

    def __init__(self, message: str, *, cause: str) -> None:
        if cause not in REFUSAL_CAUSES:
            raise ValueError(f"unknown refusal cause: {cause!r}")
        super().__init__(message)
        self.cause = cause
