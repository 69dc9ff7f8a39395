"""Errors every store backend raises the same way."""


class StorageUnavailable(Exception):
    """The storage engine cannot be reached now; the call may succeed on retry.

    The RPC layer answers UNAVAILABLE with RetryInfo. The message names the engine
    and the error type only, never a query's parameters.
    """
