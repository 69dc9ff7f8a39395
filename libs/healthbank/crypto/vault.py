"""A :class:`~healthbank.crypto.keys.KeyProvider` on HashiCorp Vault / OpenBao Transit.

Three Transit keys, created on first use if missing (creation is idempotent, so several
processes may race to do it):

- ``healthbank-data`` (aes256-gcm96): wraps data keys (``datakey/plaintext``), rotated by
  :meth:`VaultKeyProvider.rotate`, old wrapped keys re-wrapped with ``rewrap``;
- ``healthbank-pseudonym`` (hmac, 32 bytes): pseudonyms via ``hmac`` pinned to key version 1, so
  they never change even if someone rotates this key. Never raise its ``min_encryption_version``
  above 1: Transit would then refuse version 1 and every person token would become unreachable.
  An existing key of type aes256-gcm96 is accepted too (Transit HMACs with any key type);
- ``healthbank-audit`` (ed25519): signs audit tree heads; the provider pins the version it read
  at start so that :meth:`public_key` always matches :meth:`sign`.

Pseudonyms asked for at the same time share one Transit request (``batch_input``): while
one is in flight the next ones gather, up to :data:`PSEUDONYM_BATCH` a request. A request
costs ~1.2 ms of client CPU whether it carries one HMAC or 32 (measured on OpenBao 2.7
here: 0.15 ms an HMAC at 8 a request, 0.03 ms at 32), and a service under load asks for
many at once (identity: a national ID per registration and per emergency lookup).

hvac is synchronous; every call runs in a worker thread. Connection failures, timeouts and
5xx / 429 answers become :class:`KeyProviderUnavailable`. With AppRole or Kubernetes auth an
expired token (403) triggers one fresh login and a retry.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import hvac
import hvac.exceptions
import requests

from healthbank.core.group_commit import GroupCommit
from healthbank.core.telemetry import traced
from healthbank.crypto.keys import (
    DATA_KEY_BYTES,
    DataKey,
    InvalidWrappedKey,
    KeyProviderError,
    KeyProviderUnavailable,
    pseudonym_message,
    signing_key_id,
    wrapped_key_version,
)

DATA_KEY_NAME = "healthbank-data"
PSEUDONYM_KEY_NAME = "healthbank-pseudonym"
SIGNING_KEY_NAME = "healthbank-audit"
# Pseudonyms are always computed with this version of the HMAC key (see the module docstring).
PSEUDONYM_KEY_VERSION = 1
# The most HMACs one Transit request carries.
PSEUDONYM_BATCH = 128
KUBERNETES_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

AuthMethod = Literal["token", "approle", "kubernetes"]

# name -> (type to create, types accepted when the key already exists, extra creation fields)
_KEYS: dict[str, tuple[str, frozenset[str], dict[str, Any]]] = {
    DATA_KEY_NAME: ("aes256-gcm96", frozenset({"aes256-gcm96"}), {}),
    PSEUDONYM_KEY_NAME: ("hmac", frozenset({"hmac", "aes256-gcm96"}), {"key_size": 32}),
    SIGNING_KEY_NAME: ("ed25519", frozenset({"ed25519"}), {}),
}

_UNAVAILABLE_ERRORS = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.UnexpectedError,
)

_T = TypeVar("_T")


def vault_policy(transit_mount: str = "transit") -> str:
    """The Vault policy (HCL) a healthbank service needs for this provider."""
    m = transit_mount
    return f"""\
path "{m}/keys/{DATA_KEY_NAME}" {{ capabilities = ["create", "read", "update"] }}
path "{m}/keys/{PSEUDONYM_KEY_NAME}" {{ capabilities = ["create", "read", "update"] }}
path "{m}/keys/{SIGNING_KEY_NAME}" {{ capabilities = ["create", "read", "update"] }}
path "{m}/keys/{DATA_KEY_NAME}/rotate" {{ capabilities = ["update"] }}
path "{m}/datakey/plaintext/{DATA_KEY_NAME}" {{ capabilities = ["update"] }}
path "{m}/decrypt/{DATA_KEY_NAME}" {{ capabilities = ["update"] }}
path "{m}/rewrap/{DATA_KEY_NAME}" {{ capabilities = ["update"] }}
path "{m}/hmac/{PSEUDONYM_KEY_NAME}" {{ capabilities = ["update"] }}
path "{m}/hmac/{PSEUDONYM_KEY_NAME}/*" {{ capabilities = ["update"] }}
path "{m}/sign/{SIGNING_KEY_NAME}" {{ capabilities = ["update"] }}
path "{m}/sign/{SIGNING_KEY_NAME}/*" {{ capabilities = ["update"] }}
"""


# How long after an operation Vault answered a readiness check passes without asking Vault
# (ADR 52).
ANSWERED_READY_SECONDS = 5.0


class VaultKeyProvider:
    """Key provider backed by a Vault or OpenBao Transit secrets engine.

    Nothing is contacted until the first operation (or :meth:`check`), so building one at
    process start does not fail while Vault is still coming up.
    """

    def __init__(
        self,
        addr: str,
        *,
        token: str | None = None,
        auth_method: AuthMethod = "token",
        role_id: str | None = None,
        secret_id: str | None = None,
        k8s_role: str | None = None,
        transit_mount: str = "transit",
        approle_mount: str = "approle",
        kubernetes_mount: str = "kubernetes",
        kubernetes_token_path: Path = KUBERNETES_TOKEN_PATH,
        namespace: str | None = None,
        verify: bool | str = True,
        timeout: float = 5.0,
        answered_ready_seconds: float = ANSWERED_READY_SECONDS,
    ) -> None:
        """Describe how to reach and log in to Vault; see the module docstring for the keys.

        :meth:`check` passes without a request within ``answered_ready_seconds`` of an
        operation Vault answered."""
        required = {"token": (token,), "approle": (role_id, secret_id), "kubernetes": (k8s_role,)}
        if not all(required[auth_method]):
            raise ValueError(f"Vault auth method {auth_method} is missing its credentials")
        self._addr = addr
        self._token = token
        self._auth_method = auth_method
        self._role_id = role_id
        self._secret_id = secret_id
        self._k8s_role = k8s_role
        self._mount = transit_mount
        self._approle_mount = approle_mount
        self._kubernetes_mount = kubernetes_mount
        self._kubernetes_token_path = kubernetes_token_path
        self._namespace = namespace
        self._verify = verify
        self._timeout = timeout
        self._answered_ready_seconds = answered_ready_seconds
        # When Vault last answered an operation (monotonic), None after one it did not.
        self._answered_at: float | None = None
        # Serialises login and key set-up; hvac calls themselves may run concurrently.
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._signing_version = 0
        self._public_key = b""
        self._pseudonyms = GroupCommit(self._hmac_batch, max_batch=PSEUDONYM_BATCH)

    async def generate_data_key(self) -> DataKey:
        """Ask Transit for a new 256-bit data key (plaintext and wrapped)."""

        def operation(client: hvac.Client) -> DataKey:
            response = client.secrets.transit.generate_data_key(
                DATA_KEY_NAME, key_type="plaintext", bits=256, mount_point=self._mount
            )
            wrapped = response["data"]["ciphertext"].encode()
            plaintext = base64.b64decode(response["data"]["plaintext"])
            if len(plaintext) != DATA_KEY_BYTES:
                raise KeyProviderError("Transit returned a data key of the wrong size")
            return DataKey(plaintext, wrapped, wrapped_key_version(wrapped))

        return await self._run(operation)

    async def unwrap_data_key(self, wrapped: bytes) -> bytes:
        """Decrypt a wrapped data key with Transit; InvalidWrappedKey if Transit rejects it."""
        ciphertext = _vault_ciphertext(wrapped)

        def operation(client: hvac.Client) -> bytes:
            try:
                response = client.secrets.transit.decrypt_data(
                    DATA_KEY_NAME, ciphertext=ciphertext, mount_point=self._mount
                )
            except hvac.exceptions.InvalidRequest as error:
                raise InvalidWrappedKey(f"Transit rejected the wrapped data key: {error}") from None
            plaintext = base64.b64decode(response["data"]["plaintext"])
            if len(plaintext) != DATA_KEY_BYTES:
                raise InvalidWrappedKey("wrapped value is not a data key")
            return plaintext

        return await self._run(operation)

    async def pseudonym(self, domain: str, value: str) -> str:
        """Transit HMAC-SHA256 with key version 1, as 64 lowercase hex digits (in one request
        with the other pseudonyms asked for meanwhile)."""
        (token,) = await self._pseudonyms.append([pseudonym_message(domain, value)])
        return token

    async def _hmac_batch(self, messages: list[bytes]) -> list[str | BaseException]:
        """One Transit ``hmac`` request for ``messages``: each one's pseudonym, in order, or
        the error Transit gave that item alone."""
        batch_input = [{"input": base64.b64encode(message).decode()} for message in messages]

        def operation(client: hvac.Client) -> list[str | BaseException]:
            # hvac's generate_hmac has no batch_input; the endpoint and fields are Transit's.
            response = client.adapter.post(
                f"/v1/{self._mount}/hmac/{PSEUDONYM_KEY_NAME}",
                json={
                    "batch_input": batch_input,
                    "key_version": PSEUDONYM_KEY_VERSION,
                    "algorithm": "sha2-256",
                },
            )
            results = response["data"]["batch_results"]
            if len(results) != len(messages):
                raise KeyProviderError("Transit answered an HMAC batch with a wrong count")
            # An item's error text is not passed on: it could quote the input.
            return [
                KeyProviderError("Transit refused to HMAC a pseudonym input")
                if result.get("error")
                else _strip_vault_prefix(result["hmac"]).hex()
                for result in results
            ]

        return await self._run(operation)

    async def sign(self, message: bytes) -> bytes:
        """Sign with the ed25519 key version whose public key :meth:`public_key` returns."""
        hash_input = base64.b64encode(message).decode()

        def operation(client: hvac.Client) -> bytes:
            response = client.secrets.transit.sign_data(
                SIGNING_KEY_NAME,
                hash_input=hash_input,
                key_version=self._signing_version,
                mount_point=self._mount,
            )
            return _strip_vault_prefix(response["data"]["signature"])

        return await self._run(operation)

    async def public_key(self) -> bytes:
        """The raw ed25519 public key of the pinned signing key version."""
        if not self._public_key:
            await self._run(lambda client: None)
        return self._public_key

    async def key_id(self) -> str:
        """The id of the signing key."""
        return signing_key_id(await self.public_key())

    async def rotate(self) -> int:
        """Rotate the data-wrapping key in Transit; return its new latest version."""

        def operation(client: hvac.Client) -> int:
            client.secrets.transit.rotate_key(DATA_KEY_NAME, mount_point=self._mount)
            return self._latest_version(client, DATA_KEY_NAME)

        return await self._run(operation)

    async def rewrap(self, wrapped: bytes) -> bytes:
        """Transit ``rewrap``: the same data key, wrapped under the latest key version."""
        ciphertext = _vault_ciphertext(wrapped)

        def operation(client: hvac.Client) -> bytes:
            try:
                response = client.secrets.transit.rewrap_data(
                    DATA_KEY_NAME, ciphertext=ciphertext, mount_point=self._mount
                )
            except hvac.exceptions.InvalidRequest as error:
                raise InvalidWrappedKey(f"Transit rejected the wrapped data key: {error}") from None
            rewrapped: str = response["data"]["ciphertext"]
            return rewrapped.encode()

        return await self._run(operation)

    async def check(self) -> None:
        """Log in if needed and read the data key; KeyProviderUnavailable if Vault is not ok.

        Vault that answered an operation in the last ``answered_ready_seconds`` is not asked
        again: every service's readiness checks once a second, and under load it is already
        calling Vault. An operation Vault did not answer (or refused) ends that at once."""
        answered_at = self._answered_at
        fresh_since = time.monotonic() - self._answered_ready_seconds
        if answered_at is not None and answered_at > fresh_since:
            return
        await self._run(lambda client: self._latest_version(client, DATA_KEY_NAME))

    async def _run(self, operation: Callable[[hvac.Client], _T]) -> _T:
        # Named after the provider method it serves (rotate, wrap_data_key ...).
        method = operation.__qualname__.split(".<locals>")[0].rsplit(".", 1)[-1]
        with traced(f"vault {method}", {"healthbank.key_provider": "vault"}):
            try:
                result = await asyncio.to_thread(self._call, operation)
            except InvalidWrappedKey:
                # Vault answered: the blob was bad, not Vault.
                self._answered_at = time.monotonic()
                raise
            except Exception:
                self._answered_at = None
                raise
            self._answered_at = time.monotonic()
            return result

    def _call(self, operation: Callable[[hvac.Client], _T]) -> _T:
        """Run ``operation`` with a ready client, translating hvac and network errors."""
        try:
            client = self._ready_client()
            try:
                return operation(client)
            except hvac.exceptions.Forbidden:
                if self._auth_method == "token":
                    raise
                # The login token may have expired: log in once more and retry.
                return operation(self._ready_client(relogin=True))
        except KeyProviderError:
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise KeyProviderUnavailable(f"cannot reach Vault at {self._addr}") from error
        except _UNAVAILABLE_ERRORS as error:
            raise KeyProviderUnavailable(f"Vault is not available: {error}") from error
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as error:
            raise KeyProviderError(f"Vault denied the request: {error}") from error
        except hvac.exceptions.VaultError as error:
            raise KeyProviderError(f"Vault request failed: {error}") from error

    def _ready_client(self, *, relogin: bool = False) -> hvac.Client:
        """A logged-in client with the Transit keys in place (set up once, under a lock)."""
        with self._lock:
            if self._client is not None and not relogin:
                return self._client
            client = hvac.Client(
                url=self._addr,
                token=self._token,
                verify=self._verify,
                timeout=self._timeout,
                namespace=self._namespace,
            )
            self._login(client)
            if self._client is None:
                self._ensure_keys(client)
                self._pin_signing_key(client)
            self._client = client
            return client

    def _login(self, client: hvac.Client) -> None:
        if self._auth_method == "approle":
            client.auth.approle.login(
                role_id=self._role_id, secret_id=self._secret_id, mount_point=self._approle_mount
            )
        elif self._auth_method == "kubernetes":
            try:
                # Re-read on every login: projected service-account tokens are rotated.
                jwt = self._kubernetes_token_path.read_text().strip()
            except OSError as error:
                raise KeyProviderError(
                    f"cannot read the service-account token {self._kubernetes_token_path}"
                ) from error
            client.auth.kubernetes.login(self._k8s_role, jwt, mount_point=self._kubernetes_mount)

    def _ensure_keys(self, client: hvac.Client) -> None:
        """Create missing Transit keys and check that existing ones have a usable type."""
        for name, (key_type, accepted, extra) in _KEYS.items():
            try:
                info = self._read_key(client, name)
            except hvac.exceptions.InvalidPath:
                # Posting to keys/<name> is an upsert in Transit: racing processes are fine.
                # hvac's create_key does not accept key_size, which hmac keys need.
                client.adapter.post(
                    f"/v1/{self._mount}/keys/{name}", json={"type": key_type, **extra}
                )
                info = self._read_key(client, name)
            # Transit answers "create" on an existing key with success and keeps its type.
            if info["type"] not in accepted:
                raise KeyProviderError(
                    f"Transit key {name} has type {info['type']}, expected {key_type}"
                )

    def _pin_signing_key(self, client: hvac.Client) -> None:
        info = self._read_key(client, SIGNING_KEY_NAME)
        version = int(info["latest_version"])
        self._public_key = base64.b64decode(info["keys"][str(version)]["public_key"])
        self._signing_version = version

    def _read_key(self, client: hvac.Client, name: str) -> dict[str, Any]:
        response = client.secrets.transit.read_key(name, mount_point=self._mount)
        data: dict[str, Any] = response["data"]
        return data

    def _latest_version(self, client: hvac.Client, name: str) -> int:
        return int(self._read_key(client, name)["latest_version"])


def _vault_ciphertext(wrapped: bytes) -> str:
    """The Transit ciphertext string of a wrapped key; InvalidWrappedKey if it is not one."""
    if not wrapped.startswith(b"vault:"):
        raise InvalidWrappedKey("not a data key wrapped by Vault Transit")
    wrapped_key_version(wrapped)
    try:
        return wrapped.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidWrappedKey("not a data key wrapped by Vault Transit") from None


def _strip_vault_prefix(value: str) -> bytes:
    """Decode ``vault:vN:<base64>`` (HMACs, signatures) into raw bytes."""
    _, _, encoded = value.rpartition(":")
    return base64.b64decode(encoded)
