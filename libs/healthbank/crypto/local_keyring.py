"""A file-based :class:`~healthbank.crypto.keys.KeyProvider` for development. Not for production.

The keyring is one JSON file (``data_dir/keyring.json`` by default) holding, encrypted:

- versioned AES-256 key-encryption keys (KEKs) that wrap data keys,
- the HMAC-SHA256 pseudonym key (never rotated: person tokens are derived from it),
- the ed25519 signing key.

Those secrets are sealed with AES-256-GCM under a key derived from a passphrase with scrypt, so
a copy of the data directory alone does not reveal them. The plaintext header (format, keyring
id, KDF parameters, revision) is authenticated as associated data.

Several service processes share one file. Writers (first creation, rotation) take an exclusive
``flock`` on ``<file>.lock``, write a temporary file (mode 0600) and ``os.replace`` it into
place, so readers always see a whole keyring. A process notices that another one rotated by the
file's identity (inode, mtime, size) changing, and reloads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from healthbank.core.files import write_durably
from healthbank.crypto.keys import (
    DATA_KEY_BYTES,
    LOCAL_WRAPPED_PREFIX,
    DataKey,
    InvalidWrappedKey,
    KeyProviderError,
    KeyProviderUnavailable,
    pseudonym_message,
    signing_key_id,
)

logger = logging.getLogger(__name__)

KEYRING_FORMAT = "healthbank-keyring/1"
DEFAULT_SCRYPT_N = 2**15

_NONCE_BYTES = 12
_VERSION_BYTES = 4
_WRAPPED_LENGTH = len(LOCAL_WRAPPED_PREFIX) + _VERSION_BYTES + _NONCE_BYTES + DATA_KEY_BYTES + 16
# Bounds on KDF parameters read from the file, so a damaged file cannot demand gigabytes.
_SCRYPT_N_RANGE = (2**10, 2**20)


@dataclass(frozen=True)
class _Secrets:
    """The decrypted content of a keyring file."""

    keyring_id: str
    revision: int
    keks: dict[int, bytes]
    current_kek: int
    pseudonym_key: bytes
    signing_key: Ed25519PrivateKey


# (inode, mtime in ns, size): changes whenever another process replaces the file.
_FileStamp = tuple[int, int, int]


class LocalKeyring:
    """Development key provider backed by a passphrase-protected keyring file.

    The file is created on first use. Blocking work (file I/O, scrypt) runs in a worker thread;
    key operations on an already loaded keyring run inline.
    """

    def __init__(self, path: Path, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        """Use the keyring at ``path``; ``scrypt_n`` only applies when the file is created."""
        if not passphrase:
            raise ValueError("the keyring passphrase must not be empty")
        self._path = Path(path)
        self._passphrase = passphrase.encode()
        self._scrypt_n = scrypt_n
        # Guards _secrets/_stamp/_derived: several to_thread calls may load concurrently.
        self._lock = threading.Lock()
        self._secrets: _Secrets | None = None
        self._stamp: _FileStamp | None = None
        self._derived: dict[tuple[bytes, int, int, int], bytes] = {}

    @property
    def path(self) -> Path:
        """The keyring file."""
        return self._path

    async def generate_data_key(self) -> DataKey:
        """Return a new data key wrapped under the newest KEK (reloading if another rotated)."""
        keyring = await self._keyring(fresh=True)
        plaintext = secrets.token_bytes(DATA_KEY_BYTES)
        wrapped = _wrap(keyring, keyring.current_kek, plaintext)
        return DataKey(plaintext=plaintext, wrapped=wrapped, key_version=keyring.current_kek)

    async def unwrap_data_key(self, wrapped: bytes) -> bytes:
        """Return the data key inside ``wrapped``; InvalidWrappedKey if it is not authentic."""
        version = _wrapped_version(wrapped)
        keyring = await self._keyring(fresh=False)
        if version not in keyring.keks:
            # Wrapped by a KEK another process created after we loaded the file.
            keyring = await self._keyring(fresh=True)
        return _unwrap(keyring, version, wrapped)

    async def pseudonym(self, domain: str, value: str) -> str:
        """Return HMAC-SHA256(pseudonym key, domain-separated value) as 64 lowercase hex."""
        keyring = await self._keyring(fresh=False)
        message = pseudonym_message(domain, value)
        return hmac.new(keyring.pseudonym_key, message, hashlib.sha256).hexdigest()

    async def sign(self, message: bytes) -> bytes:
        """Return the ed25519 signature of ``message``."""
        keyring = await self._keyring(fresh=False)
        return keyring.signing_key.sign(message)

    async def public_key(self) -> bytes:
        """Return the raw 32-byte ed25519 public key."""
        keyring = await self._keyring(fresh=False)
        return keyring.signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    async def key_id(self) -> str:
        """Return the id of the signing key."""
        return signing_key_id(await self.public_key())

    async def rotate(self) -> int:
        """Add a KEK version to the file and make it current; return the new version."""
        return await asyncio.to_thread(self._rotate)

    async def rewrap(self, wrapped: bytes) -> bytes:
        """Re-wrap a data key under the newest KEK; the data key itself is unchanged."""
        plaintext = await self.unwrap_data_key(wrapped)
        keyring = await self._keyring(fresh=True)
        return _wrap(keyring, keyring.current_kek, plaintext)

    async def check(self) -> None:
        """Load (or create) the keyring; KeyProviderUnavailable if the file is unusable."""
        await self._keyring(fresh=True)

    async def _keyring(self, *, fresh: bool) -> _Secrets:
        """The loaded keyring; with ``fresh``, first reload it if the file changed on disk."""
        keyring = self._secrets
        if keyring is not None and not fresh:
            return keyring
        return await asyncio.to_thread(self._load)

    def _load(self) -> _Secrets:
        """Load the file if it is new or changed, creating it first if it does not exist."""
        try:
            with self._lock:
                stamp = self._stat()
                if stamp is None:
                    with self._exclusive():
                        stamp = self._stat()
                        if stamp is None:
                            self._write(_new_secrets(), created=True)
                            stamp = self._stat()
                if self._secrets is None or stamp != self._stamp:
                    self._adopt(self._read(), stamp)
                assert self._secrets is not None
                return self._secrets
        except OSError as error:
            raise KeyProviderUnavailable(
                f"keyring file {self._path} is not usable: {error.strerror}"
            ) from error

    def _rotate(self) -> int:
        """Add a KEK under the file lock, reading the newest file first."""
        try:
            with self._lock, self._exclusive():
                if self._stat() is None:
                    self._write(_new_secrets(), created=True)
                current = self._read()
                version = max(current.keks) + 1
                rotated = _Secrets(
                    keyring_id=current.keyring_id,
                    revision=current.revision + 1,
                    keks={**current.keks, version: secrets.token_bytes(32)},
                    current_kek=version,
                    pseudonym_key=current.pseudonym_key,
                    signing_key=current.signing_key,
                )
                self._write(rotated, created=False)
                self._adopt(rotated, self._stat())
        except OSError as error:
            raise KeyProviderUnavailable(
                f"keyring file {self._path} is not usable: {error.strerror}"
            ) from error
        logger.info("keyring rotated", extra={"kek_version": version})
        return version

    def _adopt(self, loaded: _Secrets, stamp: _FileStamp | None) -> None:
        """Switch to a freshly read keyring, refusing one that is not a successor of ours."""
        previous = self._secrets
        if previous is not None:
            if loaded.keyring_id != previous.keyring_id:
                raise KeyProviderError(
                    "keyring file was replaced by a different keyring; refusing to use it"
                )
            if not previous.keks.keys() <= loaded.keks.keys():
                raise KeyProviderError("keyring file lost KEK versions; refusing to use it")
        self._secrets = loaded
        self._stamp = stamp

    def _stat(self) -> _FileStamp | None:
        try:
            info = self._path.stat()
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold an exclusive flock on the sidecar lock file (serialises writers)."""
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def _read(self) -> _Secrets:
        raw = self._path.read_bytes()
        mode = stat.S_IMODE(self._path.stat().st_mode)
        if mode & 0o077:
            logger.warning("keyring file is readable by other users", extra={"mode": oct(mode)})
        try:
            document = json.loads(raw)
            if document.get("format") != KEYRING_FORMAT:
                raise KeyProviderError(f"keyring file {self._path} has an unknown format")
            kdf = document["kdf"]
            key = self._derive(
                base64.b64decode(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            )
            sealed = document["sealed"]
            content = AESGCM(key).decrypt(
                base64.b64decode(sealed["nonce"]),
                base64.b64decode(sealed["ciphertext"]),
                _header_aad(document),
            )
            return _secrets_from(document, json.loads(content))
        except InvalidTag:
            raise KeyProviderError(
                f"cannot open keyring file {self._path}: wrong passphrase or damaged file"
            ) from None
        except (ValueError, KeyError, TypeError) as error:
            raise KeyProviderError(f"keyring file {self._path} is damaged") from error

    def _write(self, keyring: _Secrets, *, created: bool) -> None:
        """Write ``keyring`` to a private temporary file and rename it over the keyring."""
        document = self._existing_kdf_document() if not created else self._new_kdf_document()
        document["keyring_id"] = keyring.keyring_id
        document["revision"] = keyring.revision
        kdf = document["kdf"]
        key = self._derive(base64.b64decode(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"])
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, _secrets_json(keyring), _header_aad(document))
        document["sealed"] = {
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode(),
        }
        # Only this process's user may read it, even sealed; a crash keeps the old one whole.
        data = json.dumps(document, indent=2).encode() + b"\n"
        write_durably(self._path, data, mode=0o600, directory_mode=0o700)

    def _new_kdf_document(self) -> dict[str, Any]:
        return {
            "format": KEYRING_FORMAT,
            "kdf": {
                "algorithm": "scrypt",
                "salt": base64.b64encode(secrets.token_bytes(16)).decode(),
                "n": self._scrypt_n,
                "r": 8,
                "p": 1,
            },
        }

    def _existing_kdf_document(self) -> dict[str, Any]:
        """The current file's header, so a rotation keeps its salt and KDF parameters."""
        document = json.loads(self._path.read_bytes())
        return {"format": document["format"], "kdf": document["kdf"]}

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> bytes:
        """scrypt(passphrase), cached per parameter set: it is deliberately slow."""
        if not _SCRYPT_N_RANGE[0] <= n <= _SCRYPT_N_RANGE[1] or not 1 <= r <= 32 or p != 1:
            raise KeyProviderError(f"keyring file {self._path} has unsupported KDF parameters")
        parameters = (salt, n, r, p)
        if parameters not in self._derived:
            self._derived[parameters] = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(
                self._passphrase
            )
        return self._derived[parameters]


def _new_secrets() -> _Secrets:
    return _Secrets(
        keyring_id=secrets.token_hex(16),
        revision=1,
        keks={1: secrets.token_bytes(32)},
        current_kek=1,
        pseudonym_key=secrets.token_bytes(32),
        signing_key=Ed25519PrivateKey.generate(),
    )


def _header_aad(document: dict[str, Any]) -> bytes:
    """Authenticate the plaintext header, so it cannot be swapped or rolled back unnoticed."""
    header = {key: document[key] for key in ("format", "keyring_id", "revision", "kdf")}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _secrets_json(keyring: _Secrets) -> bytes:
    def encode(value: bytes) -> str:
        return base64.b64encode(value).decode()

    seed = keyring.signing_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return json.dumps(
        {
            "keks": {str(version): encode(kek) for version, kek in keyring.keks.items()},
            "current_kek": keyring.current_kek,
            "pseudonym_key": encode(keyring.pseudonym_key),
            "signing_key": encode(seed),
        }
    ).encode()


def _secrets_from(document: dict[str, Any], content: dict[str, Any]) -> _Secrets:
    keks = {int(version): base64.b64decode(kek) for version, kek in content["keks"].items()}
    current = int(content["current_kek"])
    if current not in keks or any(len(kek) != 32 for kek in keks.values()):
        raise ValueError("inconsistent KEKs")
    return _Secrets(
        keyring_id=str(document["keyring_id"]),
        revision=int(document["revision"]),
        keks=keks,
        current_kek=current,
        pseudonym_key=base64.b64decode(content["pseudonym_key"]),
        signing_key=Ed25519PrivateKey.from_private_bytes(base64.b64decode(content["signing_key"])),
    )


def _wrap(keyring: _Secrets, version: int, plaintext: bytes) -> bytes:
    """prefix + version + nonce + AES-GCM(KEK, data key), the header bytes as associated data."""
    header = LOCAL_WRAPPED_PREFIX + version.to_bytes(_VERSION_BYTES, "big")
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + AESGCM(keyring.keks[version]).encrypt(nonce, plaintext, header)


def _wrapped_version(wrapped: bytes) -> int:
    if len(wrapped) != _WRAPPED_LENGTH or not wrapped.startswith(LOCAL_WRAPPED_PREFIX):
        raise InvalidWrappedKey("not a data key wrapped by the local keyring")
    start = len(LOCAL_WRAPPED_PREFIX)
    return int.from_bytes(wrapped[start : start + _VERSION_BYTES], "big")


def _unwrap(keyring: _Secrets, version: int, wrapped: bytes) -> bytes:
    kek = keyring.keks.get(version)
    if kek is None:
        raise InvalidWrappedKey(f"data key was wrapped by unknown KEK version {version}")
    header_length = len(LOCAL_WRAPPED_PREFIX) + _VERSION_BYTES
    header = wrapped[:header_length]
    nonce = wrapped[header_length : header_length + _NONCE_BYTES]
    try:
        return AESGCM(kek).decrypt(nonce, wrapped[header_length + _NONCE_BYTES :], header)
    except InvalidTag:
        raise InvalidWrappedKey("wrapped data key failed authentication") from None
