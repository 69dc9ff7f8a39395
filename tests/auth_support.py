"""Development credentials for tests in every folder: the one place a test builds them."""

from __future__ import annotations

from healthbank.contracts.principal import Principal, encode_token
from healthbank.core.config import Settings

Metadata = tuple[tuple[str, str], ...]


def bearer_token(settings: Settings, principal: Principal) -> str:
    """A token for ``principal`` signed with the services' secret (checked against the wall
    clock, not a service's injected clock)."""
    return encode_token(principal, settings.auth_secret.get_secret_value().encode())


def auth_metadata(settings: Settings, principal: Principal) -> Metadata:
    """``authorization: Bearer <token>`` call metadata for ``principal``."""
    return (("authorization", f"Bearer {bearer_token(settings, principal)}"),)


class BearerAuth:
    """``token(principal)`` and ``auth(principal)`` for a test's client classes that hold the
    services' ``settings``."""

    settings: Settings

    def token(self, principal: Principal) -> str:
        return bearer_token(self.settings, principal)

    def auth(self, principal: Principal) -> Metadata:
        return auth_metadata(self.settings, principal)
