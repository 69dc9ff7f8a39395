"""Keys and envelope encryption: the KeyProvider interface, its two backends, and the Sealer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from healthbank.crypto.envelope import SealedParts, Sealer, TamperedPayload, parse_blob
from healthbank.crypto.keyed_hash import KeyedHasher
from healthbank.crypto.keys import (
    DataKey,
    InvalidWrappedKey,
    KeyProvider,
    KeyProviderError,
    KeyProviderUnavailable,
    signing_key_id,
    verify_signature,
    wrapped_key_version,
)
from healthbank.crypto.local_keyring import LocalKeyring

if TYPE_CHECKING:
    from healthbank.core.config import Settings
    from healthbank.crypto.vault import VaultKeyProvider, vault_policy

__all__ = [
    "DataKey",
    "InvalidWrappedKey",
    "KeyProvider",
    "KeyProviderError",
    "KeyProviderUnavailable",
    "KeyedHasher",
    "LocalKeyring",
    "SealedParts",
    "Sealer",
    "TamperedPayload",
    "VaultKeyProvider",
    "build_key_provider",
    "build_sealer",
    "parse_blob",
    "signing_key_id",
    "vault_policy",
    "verify_signature",
    "wrapped_key_version",
]


def __getattr__(name: str) -> object:
    # The Vault provider pulls in hvac and requests: load it only when someone asks for it,
    # so domain modules that need a Sealer or KeyProviderUnavailable stay light.
    if name in ("VaultKeyProvider", "vault_policy"):
        from healthbank.crypto import vault

        return getattr(vault, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_key_provider(settings: Settings) -> KeyProvider:
    """Build the key provider ``settings.key_provider`` names; contacts nothing yet."""
    if settings.key_provider == "vault":
        from healthbank.crypto.vault import VaultKeyProvider

        return VaultKeyProvider(
            settings.vault_addr,
            token=_reveal(settings.vault_token),
            auth_method=settings.vault_auth_method,
            role_id=_reveal(settings.vault_role_id),
            secret_id=_reveal(settings.vault_secret_id),
            k8s_role=settings.vault_k8s_role,
            transit_mount=settings.vault_transit_mount,
        )
    return LocalKeyring(settings.keyring_file, settings.keyring_passphrase.get_secret_value())


def build_sealer(settings: Settings, provider: KeyProvider) -> Sealer:
    """Build the envelope Sealer with the data-key cache limits from ``settings``."""
    return Sealer(provider, settings.data_key_cache_seconds, settings.data_key_cache_uses)


def _reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
