"""Unit tests for envelope encryption and the local keyring (no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from repo_paths import REPO

from healthbank.crypto import (
    DataKey,
    InvalidWrappedKey,
    KeyProviderError,
    KeyProviderUnavailable,
    LocalKeyring,
    Sealer,
    TamperedPayload,
    parse_blob,
    verify_signature,
    wrapped_key_version,
)
from healthbank.crypto.envelope import OFF_LOOP_BYTES
from healthbank.crypto.local_keyring import _Secrets

T = TypeVar("T")

# Low scrypt cost keeps the tests fast; the format is the same as with the default.
FAST_SCRYPT = 2**10
PASSPHRASE = "correct horse battery staple"
NATIONAL_ID = "11010519491231002X"


def open_keyring(path: Path, passphrase: str = PASSPHRASE) -> LocalKeyring:
    return LocalKeyring(path, passphrase, scrypt_n=FAST_SCRYPT)


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keyring.json"


@pytest.fixture
def keyring(keyring_path: Path) -> LocalKeyring:
    return open_keyring(keyring_path)


class CountingProvider:
    """Wraps a provider and counts the calls the Sealer's caches should avoid."""

    def __init__(self, inner: LocalKeyring) -> None:
        self.inner = inner
        self.generated = 0
        self.unwrapped = 0

    async def generate_data_key(self) -> DataKey:
        self.generated += 1
        return await self.inner.generate_data_key()

    async def unwrap_data_key(self, wrapped: bytes) -> bytes:
        self.unwrapped += 1
        return await self.inner.unwrap_data_key(wrapped)

    async def pseudonym(self, domain: str, value: str) -> str:
        return await self.inner.pseudonym(domain, value)

    async def sign(self, message: bytes) -> bytes:
        return await self.inner.sign(message)

    async def public_key(self) -> bytes:
        return await self.inner.public_key()

    async def key_id(self) -> str:
        return await self.inner.key_id()

    async def rotate(self) -> int:
        return await self.inner.rotate()

    async def rewrap(self, wrapped: bytes) -> bytes:
        return await self.inner.rewrap(wrapped)

    async def check(self) -> None:
        await self.inner.check()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- envelope -------------------------------------------------------------------------------


async def test_seal_open_round_trip(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, cache_seconds=60, cache_uses=100)
    payload = json.dumps({"resourceType": "Observation", "valueQuantity": 5.4}).encode()
    blob = await sealer.seal(payload, b"patients/p1/records/r1")
    assert payload not in blob
    assert await sealer.open(blob, b"patients/p1/records/r1") == payload
    # A second Sealer (another process) opens it through the provider.
    assert await Sealer(keyring, 60, 100).open(blob, b"patients/p1/records/r1") == payload


async def test_empty_payload_round_trips(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, 60, 100)
    assert await sealer.open(await sealer.seal(b"", b"r"), b"r") == b""


async def test_wrong_aad_fails(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, 60, 100)
    blob = await sealer.seal(b"secret", b"patients/p1/records/r1")
    with pytest.raises(TamperedPayload):
        await sealer.open(blob, b"patients/p2/records/r1")


async def _loop_turns_during(work: Coroutine[Any, Any, T]) -> tuple[int, T]:
    """How often another task ran on the event loop while ``work`` ran, and its result."""
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    result = await work
    ticking.cancel()
    return turns - before, result


async def test_large_payloads_are_sealed_and_opened_off_the_event_loop(
    keyring: LocalKeyring,
) -> None:
    sealer = Sealer(keyring, 60, 100)
    await sealer.seal(b"warm", b"r")  # the data key is cached: no provider call below
    large = os.urandom(OFF_LOOP_BYTES)
    turns, blob = await _loop_turns_during(sealer.seal(large, b"r"))
    assert turns > 0
    turns, opened = await _loop_turns_during(sealer.open(blob, b"r"))
    assert turns > 0
    assert opened == large
    # Small payloads stay on the loop: a thread hop would cost more than the encryption.
    turns, blob = await _loop_turns_during(sealer.seal(b"small", b"r"))
    assert turns == 0
    assert await sealer.open(blob, b"r") == b"small"


async def test_seal_many_seals_each_item_with_its_own_aad(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, 60, cache_uses=2)
    items = [(os.urandom(OFF_LOOP_BYTES // 2), f"r{n}".encode()) for n in range(5)]
    sealed = await sealer.seal_many(items)
    assert [await sealer.open(blob, aad) for blob, (_, aad) in zip(sealed, items, strict=True)] == [
        plaintext for plaintext, _ in items
    ]
    # Each item counts one use of a data key: 5 items at 2 uses per key take 3 keys.
    assert len({parse_blob(blob).wrapped_key for blob in sealed}) == 3
    with pytest.raises(TamperedPayload):
        await sealer.open(sealed[0], b"r1")


async def test_open_many_unwraps_each_data_key_once_and_opens_in_order(
    keyring: LocalKeyring,
) -> None:
    # Three data keys (2 uses each) over five payloads, opened by a sealer with none cached.
    items = [(f"payload {n}".encode(), f"r{n}".encode()) for n in range(5)]
    sealed = await Sealer(keyring, 60, cache_uses=2).seal_many(items)
    provider = CountingProvider(keyring)
    sealer = Sealer(provider, 60, 1000, clock=FakeClock())
    pairs = [(blob, aad) for blob, (_, aad) in zip(sealed, items, strict=True)]
    assert await sealer.open_many(pairs) == [plaintext for plaintext, _ in items]
    assert provider.unwrapped == 3
    # One wrong aad fails the whole call: nothing is handed out half-checked.
    with pytest.raises(TamperedPayload):
        await sealer.open_many([*pairs[:2], (sealed[2], b"r9")])
    # Large together: opened off the event loop, in one thread hop.
    large = [(os.urandom(OFF_LOOP_BYTES // 4), f"l{n}".encode()) for n in range(5)]
    blobs = await sealer.seal_many(large)
    turns, opened = await _loop_turns_during(
        sealer.open_many([(blob, aad) for blob, (_, aad) in zip(blobs, large, strict=True)])
    )
    assert turns > 0 and opened == [plaintext for plaintext, _ in large]


@pytest.mark.parametrize("where", ["ciphertext", "nonce", "wrapped key", "format version"])
async def test_tampering_fails(keyring: LocalKeyring, where: str) -> None:
    sealer = Sealer(keyring, 60, 100)
    blob = bytearray(await sealer.seal(b"secret payload", b"r1"))
    parts = parse_blob(bytes(blob))
    offsets = {
        "ciphertext": len(blob) - 1,
        "nonce": len(blob) - len(parts.ciphertext) - 1,
        "wrapped key": 6 + len(parts.wrapped_key) - 1,
        "format version": 3,
    }
    blob[offsets[where]] ^= 0x01
    with pytest.raises(TamperedPayload):
        await Sealer(keyring, 60, 100).open(bytes(blob), b"r1")


@pytest.mark.parametrize(
    "blob", [b"", b"HBE", b"XYZ\x01\x00\x05abcde", b"HBE\x01\xff\xff" + b"x" * 40]
)
async def test_malformed_blob_fails(keyring: LocalKeyring, blob: bytes) -> None:
    with pytest.raises(TamperedPayload):
        await Sealer(keyring, 60, 100).open(blob, b"r1")


async def test_sealing_key_is_reused_until_uses_run_out(keyring: LocalKeyring) -> None:
    provider = CountingProvider(keyring)
    sealer = Sealer(provider, cache_seconds=60, cache_uses=3, clock=FakeClock())
    blobs = [await sealer.seal(b"x", b"r") for _ in range(7)]
    assert provider.generated == 3  # uses 1-3, 4-6, 7
    wrapped = [parse_blob(blob).wrapped_key for blob in blobs]
    assert wrapped[0] == wrapped[1] == wrapped[2] != wrapped[3]


async def test_sealing_key_expires_with_the_clock(keyring: LocalKeyring) -> None:
    provider = CountingProvider(keyring)
    clock = FakeClock()
    sealer = Sealer(provider, cache_seconds=60, cache_uses=1000, clock=clock)
    first = await sealer.seal(b"x", b"r")
    clock.now += 59.9
    second = await sealer.seal(b"x", b"r")
    clock.now += 0.1
    third = await sealer.seal(b"x", b"r")
    assert provider.generated == 2
    assert parse_blob(first).wrapped_key == parse_blob(second).wrapped_key
    assert parse_blob(third).wrapped_key != parse_blob(second).wrapped_key


async def test_an_opening_key_is_kept_for_its_time_however_often_it_opens(
    keyring: LocalKeyring,
) -> None:
    # The use limit bounds encryptions under one key; opening encrypts nothing (ADR 61).
    blob = await Sealer(keyring, 60, 100).seal(b"payload", b"r")
    provider = CountingProvider(keyring)
    clock = FakeClock()
    sealer = Sealer(provider, cache_seconds=60, cache_uses=10, clock=clock)
    assert await sealer.open_many([(blob, b"r")] * 25) == [b"payload"] * 25
    for _ in range(25):
        assert await sealer.open(blob, b"r") == b"payload"
    assert provider.unwrapped == 1
    clock.now += 60
    await sealer.open(blob, b"r")
    assert provider.unwrapped == 2
    # Sealing still spends keys by their uses: 25 seals at 10 uses a key take 3 keys.
    sealed = await sealer.seal_many([(b"p", b"r")] * 25)
    assert len({parse_blob(blob).wrapped_key for blob in sealed}) == 3


async def test_opening_cache_is_bounded(keyring: LocalKeyring) -> None:
    blobs = [await Sealer(keyring, 0, 1).seal(b"p", b"r") for _ in range(3)]
    provider = CountingProvider(keyring)
    sealer = Sealer(provider, 60, 1000, clock=FakeClock(), max_cached_keys=2)
    for blob in blobs:
        await sealer.open(blob, b"r")
    await sealer.open(blobs[0], b"r")  # evicted as least recently used
    await sealer.open(blobs[2], b"r")  # still cached
    assert provider.unwrapped == 4


async def test_what_a_sealer_sealed_it_opens_without_unwrapping(keyring: LocalKeyring) -> None:
    provider = CountingProvider(keyring)
    sealer = Sealer(provider, 60, 100)
    await sealer.open(await sealer.seal(b"p", b"r"), b"r")
    assert provider.unwrapped == 0


async def test_zero_cache_seconds_means_a_key_per_seal(keyring: LocalKeyring) -> None:
    provider = CountingProvider(keyring)
    sealer = Sealer(provider, cache_seconds=0, cache_uses=1000)
    blob = await sealer.seal(b"p", b"r")
    await sealer.seal(b"p", b"r")
    await sealer.open(blob, b"r")
    assert (provider.generated, provider.unwrapped) == (2, 1)


def test_sealer_rejects_unsafe_limits(keyring: LocalKeyring) -> None:
    with pytest.raises(ValueError):
        Sealer(keyring, 60, 2**32 + 1)
    with pytest.raises(ValueError):
        Sealer(keyring, -1, 10)


async def test_rotate_and_rewrap_blob(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, 60, 100)
    blob = await sealer.seal(b"old payload", b"r")
    assert parse_blob(blob).key_version == 1
    assert await keyring.rotate() == 2
    rewrapped = await sealer.rewrap(blob)
    assert parse_blob(rewrapped).key_version == 2
    assert parse_blob(rewrapped).ciphertext == parse_blob(blob).ciphertext
    assert await Sealer(keyring, 60, 100).open(rewrapped, b"r") == b"old payload"
    assert await Sealer(keyring, 60, 100).open(blob, b"r") == b"old payload"


# --- local keyring --------------------------------------------------------------------------


async def test_data_key_round_trip(keyring: LocalKeyring) -> None:
    data_key = await keyring.generate_data_key()
    assert len(data_key.plaintext) == 32
    assert data_key.key_version == wrapped_key_version(data_key.wrapped) == 1
    assert await keyring.unwrap_data_key(data_key.wrapped) == data_key.plaintext
    assert data_key.plaintext not in data_key.wrapped
    assert "plaintext" not in repr(data_key)


async def test_tampered_wrapped_key_is_rejected(keyring: LocalKeyring) -> None:
    wrapped = bytearray((await keyring.generate_data_key()).wrapped)
    wrapped[-1] ^= 0x01
    with pytest.raises(InvalidWrappedKey):
        await keyring.unwrap_data_key(bytes(wrapped))
    with pytest.raises(InvalidWrappedKey):
        await keyring.unwrap_data_key(b"vault:v1:abc")


async def test_pseudonym_is_stable_across_rotation_and_reopen(keyring_path: Path) -> None:
    first = open_keyring(keyring_path)
    token = await first.pseudonym("person", NATIONAL_ID)
    assert len(token) == 64 and token == token.lower()
    int(token, 16)
    await first.rotate()
    assert await first.pseudonym("person", NATIONAL_ID) == token
    reopened = open_keyring(keyring_path)
    assert await reopened.pseudonym("person", NATIONAL_ID) == token
    assert await reopened.pseudonym("mrn", NATIONAL_ID) != token
    assert await reopened.pseudonym("person", "11010519491231003X") != token


async def test_signing_key_survives_reopen(keyring_path: Path) -> None:
    first = open_keyring(keyring_path)
    signature = await first.sign(b"tree head")
    reopened = open_keyring(keyring_path)
    public_key = await reopened.public_key()
    assert len(public_key) == 32
    assert verify_signature(public_key, b"tree head", signature)
    assert not verify_signature(public_key, b"other head", signature)
    assert await reopened.key_id() == await first.key_id()


async def test_other_process_rotation_is_picked_up(keyring_path: Path) -> None:
    ours, theirs = open_keyring(keyring_path), open_keyring(keyring_path)
    assert (await ours.generate_data_key()).key_version == 1
    assert await theirs.rotate() == 2
    wrapped_by_them = (await theirs.generate_data_key()).wrapped
    # We learn about version 2 both when unwrapping and when making new keys.
    assert len(await ours.unwrap_data_key(wrapped_by_them)) == 32
    assert (await ours.generate_data_key()).key_version == 2
    assert await ours.rotate() == 3


async def test_rewrap_moves_a_data_key_to_the_newest_version(keyring: LocalKeyring) -> None:
    data_key = await keyring.generate_data_key()
    await keyring.rotate()
    await keyring.rotate()
    rewrapped = await keyring.rewrap(data_key.wrapped)
    assert wrapped_key_version(rewrapped) == 3
    assert await keyring.unwrap_data_key(rewrapped) == data_key.plaintext


async def test_keyring_file_holds_no_raw_key_material(keyring: LocalKeyring) -> None:
    await keyring.rotate()
    await keyring.check()
    content = keyring.path.read_bytes()
    secrets = keyring._secrets  # the decrypted keys, to search the file for
    assert isinstance(secrets, _Secrets)
    seed = secrets.signing_key.private_bytes_raw()
    for secret in [*secrets.keks.values(), secrets.pseudonym_key, seed]:
        for encoding in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert encoding not in content
    assert PASSPHRASE.encode() not in content
    assert keyring.path.stat().st_mode & 0o777 == 0o600
    assert not list(keyring.path.parent.glob("*.tmp"))


async def test_wrong_passphrase_cannot_open_the_keyring(keyring: LocalKeyring) -> None:
    await keyring.check()
    with pytest.raises(KeyProviderError, match="wrong passphrase"):
        await open_keyring(keyring.path, "guess").check()


async def test_edited_header_is_detected(keyring: LocalKeyring) -> None:
    await keyring.check()
    document = json.loads(keyring.path.read_text())
    document["revision"] = 99
    keyring.path.write_text(json.dumps(document))
    with pytest.raises(KeyProviderError):
        await open_keyring(keyring.path).check()


async def test_replaced_keyring_is_refused(keyring: LocalKeyring) -> None:
    await keyring.check()
    keyring.path.unlink()
    await open_keyring(keyring.path).check()  # a new, different keyring
    with pytest.raises(KeyProviderError, match="replaced"):
        await keyring.check()


async def test_unusable_location_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(KeyProviderUnavailable):
        await open_keyring(blocker / "keyring.json").check()


def test_processes_racing_to_create_share_one_keyring(keyring_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from healthbank.crypto import LocalKeyring\n"
        f"keyring = LocalKeyring(Path(sys.argv[1]), {PASSPHRASE!r}, scrypt_n={FAST_SCRYPT})\n"
        f"print(asyncio.run(keyring.pseudonym('person', {NATIONAL_ID!r})))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO / "libs")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(keyring_path)],
            stdout=subprocess.PIPE,
            env=environment,
        )
        for _ in range(4)
    ]
    outputs = {process.communicate(timeout=60)[0] for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(outputs) == 1
