"""Errors every store backend raises the same way."""


class StorageUnavailable(Exception):
    """The storage engine cannot be reached now; the call may succeed on retry.

    The RPC layer answers UNAVAILABLE with RetryInfo. The message names the engine
    and the error type only, never a query's parameters.
    """


class StorageRefused(Exception):
    """The storage engine refused a request as invalid (for one, over its size cap).

    Permanent: the same request fails the same way, so it is never answered as "retry"
    (the RPC layer treats it as an internal failure). The message names the engine and the
    error type only.
    """
