"""KeyedHasher: in-process keyed hashes under keys derived once from the pseudonym key."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from healthbank.crypto import KeyedHasher, LocalKeyring
from healthbank.crypto.keyed_hash import DERIVED_KEY_DOMAIN
from healthbank.crypto.keys import pseudonym_message


@dataclass
class CountingPseudonyms:
    """The real keyring, counting the pseudonym calls that reach it."""

    keyring: LocalKeyring
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def pseudonym(self, domain: str, value: str) -> str:
        self.calls.append((domain, value))
        return await self.keyring.pseudonym(domain, value)


def keyring(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring(tmp_path / "keyring.json", "unit-test", scrypt_n=2**10)


async def test_the_provider_is_asked_once_per_domain(tmp_path: Path) -> None:
    counting = CountingPseudonyms(keyring(tmp_path))
    hasher = KeyedHasher(counting)  # type: ignore[arg-type]
    first = await hasher.keyed_hash("hospital-mrn", "h1\x00MRN-1")
    for _ in range(3):
        assert await hasher.keyed_hash("hospital-mrn", "h1\x00MRN-1") == first
    await hasher.keyed_hash("hospital-mrn", "h1\x00MRN-2")
    assert counting.calls == [(DERIVED_KEY_DOMAIN, "hospital-mrn")]


async def test_hashes_are_stable_and_domain_separated(tmp_path: Path) -> None:
    provider = keyring(tmp_path)
    value = "h1\x00MRN-1"
    one = await KeyedHasher(provider).keyed_hash("hospital-mrn", value)
    # Another process (another hasher, the keyring reopened) computes the same hash.
    again = await KeyedHasher(keyring(tmp_path)).keyed_hash("hospital-mrn", value)
    assert one == again
    assert len(one) == 64 and one == one.lower()
    assert await KeyedHasher(provider).keyed_hash("other-domain", value) != one
    assert await provider.pseudonym("hospital-mrn", value) != one
    # The documented formula: HMAC under the provider's pseudonym of the domain name.
    derived = bytes.fromhex(await provider.pseudonym(DERIVED_KEY_DOMAIN, "hospital-mrn"))
    message = pseudonym_message("hospital-mrn", value)
    assert one == hmac.new(derived, message, hashlib.sha256).hexdigest()
