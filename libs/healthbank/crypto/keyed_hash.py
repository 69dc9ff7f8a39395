"""Keyed hashes computed in process, under keys derived once from the provider's pseudonym key.

:meth:`KeyProvider.pseudonym` is one Vault round trip per call. Values hashed on every
message (a hospital's record numbers) use a :class:`KeyedHasher` instead: for each domain it
asks the provider once for ``pseudonym("derived-key", domain)`` and keeps that 32-byte
result as the domain's HMAC key, so the hash is

    HMAC-SHA256(pseudonym(DERIVED_KEY_DOMAIN, domain), pseudonym_message(domain, value))

Because the provider's pseudonyms never change (the HMAC key is pinned to version 1), the
derived keys and every hash made with them are stable across restarts and processes. The
derived keys live only in process memory, like the cached data keys of the Sealer; the
provider's own key never leaves it.
"""

from __future__ import annotations

import hashlib
import hmac

from healthbank.crypto.keys import KeyProvider, pseudonym_message

__all__ = ["DERIVED_KEY_DOMAIN", "KeyedHasher"]

DERIVED_KEY_DOMAIN = "derived-key"
"""The pseudonym domain whose values are the names of domains with a derived key."""


class KeyedHasher:
    """Domain-separated HMAC-SHA256 under per-domain keys derived from ``keys`` once."""

    def __init__(self, keys: KeyProvider) -> None:
        """Derive keys from ``keys`` on first use of each domain."""
        self._keys = keys
        self._derived: dict[str, bytes] = {}

    async def keyed_hash(self, domain: str, value: str) -> str:
        """The keyed hash of ``value`` in ``domain`` as 64 lowercase hex digits.

        Only the first call for a domain reaches the key provider (and may raise
        KeyProviderUnavailable); later calls are local.
        """
        key = self._derived.get(domain)
        if key is None:
            # Two first calls racing both derive the same key: harmless.
            key = bytes.fromhex(await self._keys.pseudonym(DERIVED_KEY_DOMAIN, domain))
            self._derived[domain] = key
        return hmac.new(key, pseudonym_message(domain, value), hashlib.sha256).hexdigest()
