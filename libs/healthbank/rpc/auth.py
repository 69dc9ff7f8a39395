"""The caller of the RPC being served, as the server interceptors verified it.

The principal itself and its token, proto and log forms are a cross-service contract and
live in :mod:`healthbank.contracts.principal`; this module holds only the per-call state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from healthbank.contracts.principal import (
    TOKEN_VERSION,
    InvalidToken,
    Principal,
    VerifiedToken,
    verify_dev_token,
)
from healthbank.contracts.tokens import IssuerRegistry, check_user_token, load_issuer_registry
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


# How many verified tokens a service remembers (far more than the callers active at once),
# and the longest it remembers (ours are 0.3-0.6 KB): at most ~20 MB of tokens.
VERIFIED_TOKENS_KEPT = 10_000
LONGEST_TOKEN_KEPT = 2048


def token_verifier(
    settings: TokenSettings, service: str, clock: Callable[[], float] = time.time
) -> Callable[[str], Principal]:
    """The one verifier of ``service``'s inbound tokens: EdDSA JWTs from the registered
    issuers with ``aud`` = ``service``, and development hb1 tokens only while
    ``dev_tokens`` is on. Raises InvalidToken for anything else.

    A caller sends one token on every call until it expires, so a token that verified is
    remembered with the times it is valid in, and a later call with it only checks the
    clock (ADR 66): verifying again (an HMAC and a JSON parse, or an EdDSA signature) cost
    a third of a small call's handling. A refused token is never remembered.
    """
    registry = (
        load_issuer_registry(settings.token_issuers_file)
        if settings.token_issuers_file is not None
        else IssuerRegistry()
    )
    secret = settings.auth_secret.get_secret_value().encode("utf-8")
    verified: dict[str, VerifiedToken] = {}

    def check(token: str, moment: float) -> VerifiedToken:
        now = datetime.fromtimestamp(moment, UTC)
        if token.startswith(TOKEN_VERSION + "."):
            if not settings.dev_tokens:
                raise InvalidToken("INVALID_TOKEN", "invalid credentials")
            return verify_dev_token(token, secret, now)
        return check_user_token(token, registry, service, now)

    def verify(token: str) -> Principal:
        moment = clock()
        known = verified.get(token)
        if known is not None and known.valid_at(moment):
            return known.principal
        verified.pop(token, None)
        fresh = check(token, moment)
        if len(token) > LONGEST_TOKEN_KEPT:
            return fresh.principal
        if len(verified) >= VERIFIED_TOKENS_KEPT:
            del verified[next(iter(verified))]  # the one remembered longest ago
        verified[token] = fresh
        return fresh.principal

    return verify
