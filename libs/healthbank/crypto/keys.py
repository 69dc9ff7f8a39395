"""The key provider interface: data keys, pseudonyms and signatures without exposing master keys.

A :class:`KeyProvider` holds three long-lived secrets and never hands them out:

- a versioned key-encryption key (KEK) that wraps the per-batch AES-256 data keys,
- an HMAC key for pseudonyms (person tokens); it must never change, because storage is keyed
  by the pseudonyms it produces,
- an ed25519 signing key (audit tree heads).

Implementations: :class:`~healthbank.crypto.local_keyring.LocalKeyring` (a file, development
only) and :class:`~healthbank.crypto.vault.VaultKeyProvider` (Vault / OpenBao Transit). Methods
are async because the Vault implementation talks HTTP.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DATA_KEY_BYTES = 32

# A pseudonym is the HMAC-SHA256 of this framing, so different domains never collide:
# b"healthbank-pseudonym-v1\0" + domain + b"\0" + value. Domains may not contain NUL.
PSEUDONYM_LABEL = b"healthbank-pseudonym-v1\x00"

# Wrapped-key prefix of the local keyring: prefix + 4-byte KEK version + nonce + ciphertext.
LOCAL_WRAPPED_PREFIX = b"hbk1:"
_VAULT_WRAPPED = re.compile(rb"^vault:v([0-9]+):")


class KeyProviderError(Exception):
    """A key operation failed for a reason that retrying will not fix."""


class KeyProviderUnavailable(KeyProviderError):
    """The key backend cannot be reached or is not ready; retry later (health: NOT_SERVING)."""


class InvalidWrappedKey(KeyProviderError):
    """A wrapped data key is malformed, was tampered with, or was wrapped by another provider."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """A fresh data key: the plaintext to encrypt with, and the wrapped form to store."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes
    key_version: int


@runtime_checkable
class KeyProvider(Protocol):
    """Master-key operations used by envelope encryption, identity and audit."""

    async def generate_data_key(self) -> DataKey:
        """Return a new random 32-byte data key, wrapped under the newest KEK version."""
        ...

    async def unwrap_data_key(self, wrapped: bytes) -> bytes:
        """Return the plaintext of a wrapped data key; InvalidWrappedKey if not authentic."""
        ...

    async def pseudonym(self, domain: str, value: str) -> str:
        """Return the stable pseudonym (64 lowercase hex digits) of ``value`` in ``domain``.

        The same inputs give the same pseudonym forever, across restarts and rotations.
        """
        ...

    async def sign(self, message: bytes) -> bytes:
        """Return the 64-byte ed25519 signature of ``message``."""
        ...

    async def public_key(self) -> bytes:
        """Return the raw 32-byte ed25519 public key that verifies :meth:`sign`."""
        ...

    async def key_id(self) -> str:
        """Return the id of the signing key (see :func:`signing_key_id`)."""
        ...

    async def rotate(self) -> int:
        """Create a new KEK version, used for all data keys from now on; return its number."""
        ...

    async def rewrap(self, wrapped: bytes) -> bytes:
        """Re-wrap a wrapped data key under the newest KEK version; the data key is unchanged."""
        ...

    async def check(self) -> None:
        """Return if the backend is usable; raise KeyProviderUnavailable if it is not."""
        ...


def pseudonym_message(domain: str, value: str) -> bytes:
    """The bytes a provider HMACs for :meth:`KeyProvider.pseudonym` (domain-separated)."""
    if not domain or "\x00" in domain:
        raise ValueError("a pseudonym domain must be non-empty and contain no NUL")
    return PSEUDONYM_LABEL + domain.encode() + b"\x00" + value.encode()


def signing_key_id(public_key: bytes) -> str:
    """Derive a key id from an ed25519 public key: ``ed25519:`` + 16 hex digits of its SHA-256.

    Derived rather than named so that any verifier holding the public key computes the same id.
    """
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Tell whether ``signature`` is a valid ed25519 signature of ``message`` under the key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def wrapped_key_version(wrapped: bytes) -> int:
    """Return the KEK version a wrapped data key was wrapped under, for either provider.

    Local keyring keys start with ``hbk1:`` and a 4-byte big-endian version; Vault ciphertexts
    look like ``vault:v3:...``. Raises InvalidWrappedKey for anything else.
    """
    if wrapped.startswith(LOCAL_WRAPPED_PREFIX):
        version_bytes = wrapped[len(LOCAL_WRAPPED_PREFIX) : len(LOCAL_WRAPPED_PREFIX) + 4]
        if len(version_bytes) == 4:
            return int.from_bytes(version_bytes, "big")
    match = _VAULT_WRAPPED.match(wrapped)
    if match:
        return int(match.group(1))
    raise InvalidWrappedKey("not a wrapped data key")
