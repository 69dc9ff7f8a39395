"""Envelope encryption of PHI payloads: AES-256-GCM under data keys wrapped by a KeyProvider.

A sealed blob is self-describing, so it can be stored as one column and opened years later::

    b"HBE" | format version (1 byte, = 1) | wrapped key length (2 bytes, big-endian)
          | wrapped data key | 96-bit nonce | ciphertext with 128-bit GCM tag

The associated data authenticated with the ciphertext is ``b"HBE" + format version + aad``, where
``aad`` binds the payload to its record (callers pass e.g. the record's resource name), so a
ciphertext moved to another record fails to open. The wrapped key is deliberately not part of
the associated data: :meth:`Sealer.rewrap` replaces it without touching the ciphertext.

Data keys are cached so the key provider (Vault) is not called per record: a sealing key is used
for at most ``cache_seconds`` and ``cache_uses`` encryptions; unwrapped keys for opening are kept
in a bounded LRU with the same limits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from healthbank.core.telemetry import traced
from healthbank.crypto.keys import InvalidWrappedKey, KeyProvider, wrapped_key_version

BLOB_MAGIC = b"HBE"
BLOB_FORMAT_VERSION = 1
NONCE_BYTES = 12

_HEADER = BLOB_MAGIC + bytes([BLOB_FORMAT_VERSION])
_LENGTH_BYTES = 2
_TAG_BYTES = 16
# 2**32 random 96-bit nonces per key is the NIST SP 800-38D limit.
_MAX_USES_PER_KEY = 2**32

OFF_LOOP_BYTES = 256 * 1024
"""From this many plaintext (or ciphertext) bytes per call, AES-GCM runs in a worker thread:
50 MB take tens of milliseconds that the event loop would not answer anyone (cryptography
releases the GIL while it encrypts, so the thread really runs beside the loop)."""


class TamperedPayload(ValueError):
    """A sealed blob failed authentication, is malformed, or was opened with the wrong aad."""


@dataclass(frozen=True, slots=True)
class SealedParts:
    """The fields of a sealed blob."""

    format_version: int
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    @property
    def key_version(self) -> int:
        """The KEK version the data key is wrapped under (what a rewrap job looks at)."""
        return wrapped_key_version(self.wrapped_key)


@dataclass(slots=True)
class _CachedKey:
    aead: AESGCM = field(repr=False)
    wrapped: bytes
    created: float
    uses: int = 0


def parse_blob(blob: bytes) -> SealedParts:
    """Split a sealed blob into its fields; TamperedPayload if it is not well-formed."""
    wrapped, nonce, ciphertext = _split(blob)
    return SealedParts(BLOB_FORMAT_VERSION, wrapped, nonce, ciphertext)


def _split(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(wrapped key, nonce, ciphertext) of a sealed blob, as :func:`parse_blob` checks them.

    A tuple, not :class:`SealedParts`: a history opens a thousand blobs, and building the
    frozen dataclass was half of the ~1 us each took."""
    if len(blob) < len(_HEADER) + _LENGTH_BYTES or not blob.startswith(BLOB_MAGIC):
        raise TamperedPayload("not a sealed healthbank payload")
    if blob[len(BLOB_MAGIC)] != BLOB_FORMAT_VERSION:
        raise TamperedPayload(f"unsupported sealed payload format {blob[len(BLOB_MAGIC)]}")
    key_start = len(_HEADER) + _LENGTH_BYTES
    nonce_start = key_start + int.from_bytes(blob[len(_HEADER) : key_start], "big")
    ciphertext_start = nonce_start + NONCE_BYTES
    if len(blob) < ciphertext_start + _TAG_BYTES:
        raise TamperedPayload("sealed payload is truncated")
    return blob[key_start:nonce_start], blob[nonce_start:ciphertext_start], blob[ciphertext_start:]


def _assemble(wrapped: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return _HEADER + len(wrapped).to_bytes(_LENGTH_BYTES, "big") + wrapped + nonce + ciphertext


class Sealer:
    """Seals and opens payloads with cached data keys from a :class:`KeyProvider`.

    One instance per process (per key provider); safe for concurrent use on one event loop.
    ``clock`` is injectable so tests can expire cached keys without waiting.
    """

    def __init__(
        self,
        provider: KeyProvider,
        cache_seconds: float,
        cache_uses: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_cached_keys: int = 1024,
    ) -> None:
        """Cache each data key for ``cache_seconds`` and ``cache_uses`` operations at most."""
        if cache_seconds < 0:
            raise ValueError("cache_seconds must not be negative")
        if not 1 <= cache_uses <= _MAX_USES_PER_KEY:
            raise ValueError(f"cache_uses must be between 1 and {_MAX_USES_PER_KEY}")
        if max_cached_keys < 1:
            raise ValueError("max_cached_keys must be at least 1")
        self._provider = provider
        self._cache_seconds = cache_seconds
        self._cache_uses = cache_uses
        self._clock = clock
        self._max_cached_keys = max_cached_keys
        self._sealing_key: _CachedKey | None = None
        # Only one coroutine fetches a new sealing key; the others wait and use it.
        self._sealing_lock = asyncio.Lock()
        self._opening_keys: OrderedDict[bytes, _CachedKey] = OrderedDict()

    async def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad`` and return the sealed blob."""
        (sealed,) = await self.seal_many([(plaintext, aad)])
        return sealed

    async def seal_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Seal each ``(plaintext, aad)``, in order; off the event loop when they are large
        together (:data:`OFF_LOOP_BYTES`), in one thread hop for all of them."""
        size = sum(len(plaintext) for plaintext, _ in items)
        with traced("seal", {"healthbank.payloads": len(items), "healthbank.payload_bytes": size}):
            return await self._seal_many(items, size)

    async def _seal_many(self, items: Sequence[tuple[bytes, bytes]], size: int) -> list[bytes]:
        keys = [await self._take_sealing_key() for _ in items]

        def encrypt_all() -> list[bytes]:
            sealed = []
            for key, (plaintext, aad) in zip(keys, items, strict=True):
                nonce = os.urandom(NONCE_BYTES)
                ciphertext = key.aead.encrypt(nonce, plaintext, _HEADER + aad)
                sealed.append(_assemble(key.wrapped, nonce, ciphertext))
            return sealed

        if size < OFF_LOOP_BYTES:
            return encrypt_all()
        return await asyncio.to_thread(encrypt_all)

    async def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a sealed blob; TamperedPayload if it, its key or ``aad`` does not match."""
        (plaintext,) = await self.open_many([(blob, aad)])
        return plaintext

    async def open_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """:meth:`open` each ``(blob, aad)``, in order (TamperedPayload if any fails): each
        data key looked up once, and off the event loop when they are large together
        (:data:`OFF_LOOP_BYTES`), in one thread hop for all of them."""
        size = sum(len(blob) for blob, _ in items)
        if size < OFF_LOOP_BYTES:
            # A span costs ~20 us, more than opening a small payload does. The caller's span
            # covers it (a key unwrap it needs has its own span, in the key provider).
            return await self._open_many(items, size)
        with traced(
            "open sealed", {"healthbank.payloads": len(items), "healthbank.payload_bytes": size}
        ):
            return await self._open_many(items, size)

    async def _open_many(self, items: Sequence[tuple[bytes, bytes]], size: int) -> list[bytes]:
        parsed = [_split(blob) for blob, _ in items]
        wrapped_keys = dict.fromkeys(wrapped for wrapped, _, _ in parsed)  # each looked up once
        aeads = {wrapped: await self._take_opening_key(wrapped) for wrapped in wrapped_keys}

        def decrypt_all() -> list[bytes]:
            try:
                return [
                    aeads[wrapped].decrypt(nonce, ciphertext, _HEADER + aad)
                    for (wrapped, nonce, ciphertext), (_, aad) in zip(parsed, items, strict=True)
                ]
            except InvalidTag:
                raise TamperedPayload("sealed payload failed authentication") from None

        if size < OFF_LOOP_BYTES:
            return decrypt_all()
        return await asyncio.to_thread(decrypt_all)

    async def rewrap(self, blob: bytes) -> bytes:
        """Re-wrap the blob's data key under the newest KEK; the ciphertext is unchanged.

        This does not authenticate the ciphertext; :meth:`open` still does.
        """
        parts = parse_blob(blob)
        try:
            wrapped = await self._provider.rewrap(parts.wrapped_key)
        except InvalidWrappedKey as error:
            raise TamperedPayload(f"sealed payload has an invalid data key: {error}") from None
        return _assemble(wrapped, parts.nonce, parts.ciphertext)

    def _expired(self, key: _CachedKey) -> bool:
        """Whether a sealing key is spent: by age, or by the encryptions it made."""
        return self._aged(key) or key.uses >= self._cache_uses

    def _aged(self, key: _CachedKey) -> bool:
        return self._clock() - key.created >= self._cache_seconds

    async def _take_sealing_key(self) -> _CachedKey:
        """The current sealing key with one use counted, fetching a fresh one when spent."""
        async with self._sealing_lock:
            key = self._sealing_key
            if key is None or self._expired(key):
                data_key = await self._provider.generate_data_key()
                key = _CachedKey(AESGCM(data_key.plaintext), data_key.wrapped, self._clock())
                self._sealing_key = key
                # What we seal now is often read back soon: spare the provider an unwrap.
                self._remember(_CachedKey(key.aead, key.wrapped, key.created))
            key.uses += 1
            return key

    async def _take_opening_key(self, wrapped: bytes) -> AESGCM:
        """The data key for ``wrapped``, from the LRU or unwrapped by the provider.

        Kept for the cache's time only, however often it opens: the use limit bounds the
        encryptions under one key (random nonces), and opening encrypts nothing. Counted,
        a thousand-record history spent a tenth of a key's uses and every tenth one
        unwrapped its key at the provider again (ADR 61)."""
        key = self._opening_keys.get(wrapped)
        if key is not None and self._aged(key):
            del self._opening_keys[wrapped]
            key = None
        if key is None:
            try:
                plaintext = await self._provider.unwrap_data_key(wrapped)
            except InvalidWrappedKey as error:
                raise TamperedPayload(f"sealed payload has an invalid data key: {error}") from None
            key = _CachedKey(AESGCM(plaintext), wrapped, self._clock())
            self._remember(key)
        else:
            self._opening_keys.move_to_end(wrapped)
        return key.aead

    def _remember(self, key: _CachedKey) -> None:
        if self._cache_seconds == 0:
            return
        self._opening_keys[key.wrapped] = key
        self._opening_keys.move_to_end(key.wrapped)
        while len(self._opening_keys) > self._max_cached_keys:
            self._opening_keys.popitem(last=False)
