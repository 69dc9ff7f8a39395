"""The caller of the RPC being served, as the server interceptors verified it.

The principal itself and its token, proto and log forms are a cross-service contract and
live in :mod:`healthbank.contracts.principal`; this module holds only the per-call state.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Protocol

from healthbank.contracts.principal import (
    TOKEN_VERSION,
    InvalidToken,
    Principal,
    decode_token,
)
from healthbank.contracts.tokens import IssuerRegistry, load_issuer_registry, verify_user_token
from healthbank.rpc.errors import ServiceError

__all__ = [
    "AUTHORIZATION_KEY",
    "BEARER_PREFIX",
    "current_principal",
    "inbound_token",
    "require_principal",
    "token_verifier",
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


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class TokenSettings(Protocol):
    """The token part of ``healthbank.core.config.Settings``."""

    @property
    def auth_secret(self) -> _Secret:
        """HMAC key of development tokens."""
        ...

    @property
    def dev_tokens(self) -> bool:
        """Whether development (hb1) tokens are accepted."""
        ...

    @property
    def token_issuers_file(self) -> Path | None:
        """The registered JWT issuers (None: no JWT is accepted)."""
        ...


def token_verifier(settings: TokenSettings, service: str) -> Callable[[str], Principal]:
    """The one verifier of ``service``'s inbound tokens: EdDSA JWTs from the registered
    issuers with ``aud`` = ``service``, and development hb1 tokens only while
    ``dev_tokens`` is on. Raises InvalidToken for anything else."""
    registry = (
        load_issuer_registry(settings.token_issuers_file)
        if settings.token_issuers_file is not None
        else IssuerRegistry()
    )
    secret = settings.auth_secret.get_secret_value().encode("utf-8")
    development = partial(decode_token, secret=secret) if settings.dev_tokens else None

    def verify(token: str) -> Principal:
        if token.startswith(TOKEN_VERSION + "."):
            if development is None:
                raise InvalidToken("INVALID_TOKEN", "invalid credentials")
            return development(token)
        return verify_user_token(token, registry, service)

    return verify
