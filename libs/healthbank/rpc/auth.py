"""The caller of the RPC being served, as the server interceptors verified it.

The principal itself and its token, proto and log forms are a cross-service contract and
live in :mod:`healthbank.contracts.principal`; this module holds only the per-call state.
"""

from __future__ import annotations

from contextvars import ContextVar

from healthbank.contracts.principal import Principal
from healthbank.rpc.errors import ServiceError

__all__ = [
    "AUTHORIZATION_KEY",
    "BEARER_PREFIX",
    "current_principal",
    "inbound_token",
    "require_principal",
]

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
"""The verified principal of the RPC being served (None when the call carried no token)."""

inbound_token: ContextVar[str | None] = ContextVar("inbound_token", default=None)
"""The raw token of the RPC being served, forwarded on outgoing calls made on its behalf."""


def require_principal() -> Principal:
    """Return the current call's principal, for what the servicer records about the caller.

    Who may call which method is decided before the servicer runs, by the authorization
    table (:mod:`healthbank.rpc.authz`) in the server's principal interceptor.

    Raises:
        ServiceError: UNAUTHENTICATED when the call carried no credentials.
    """
    principal = current_principal.get()
    if principal is None:
        raise ServiceError.unauthenticated("credentials required", reason="CREDENTIALS_REQUIRED")
    return principal
