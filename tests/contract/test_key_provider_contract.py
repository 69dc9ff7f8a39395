"""The KeyProvider contract, run against every backend (local keyring and a real OpenBao).

The tests at the end exercise what only the Vault backend has: login methods, its policy,
and how it reports an unreachable server.
"""

from __future__ import annotations

import asyncio

import hvac
import pytest
from engine_support import OpenBao, openbao_relay
from port_support import closed_port

from healthbank.crypto import (
    InvalidWrappedKey,
    KeyProvider,
    KeyProviderError,
    KeyProviderUnavailable,
    Sealer,
    VaultKeyProvider,
    parse_blob,
    signing_key_id,
    vault_policy,
    verify_signature,
    wrapped_key_version,
)

NATIONAL_ID = "11010519491231002X"


async def test_check_passes(key_provider: KeyProvider) -> None:
    await key_provider.check()


async def test_data_key_round_trip(key_provider: KeyProvider) -> None:
    data_key = await key_provider.generate_data_key()
    assert len(data_key.plaintext) == 32
    assert data_key.key_version == wrapped_key_version(data_key.wrapped) == 1
    assert await key_provider.unwrap_data_key(data_key.wrapped) == data_key.plaintext
    other = await key_provider.generate_data_key()
    assert other.plaintext != data_key.plaintext
    assert other.wrapped != data_key.wrapped


async def test_tampered_or_foreign_wrapped_key_is_rejected(key_provider: KeyProvider) -> None:
    wrapped = (await key_provider.generate_data_key()).wrapped
    tampered = wrapped[:-6] + (b"AAAA==" if not wrapped.endswith(b"AAAA==") else b"BBBB==")
    for bad in (tampered, b"hbk1:" + b"\x00" * 64, b"vault:v1:bm9wZQ==", b"garbage"):
        with pytest.raises(InvalidWrappedKey):
            await key_provider.unwrap_data_key(bad)


async def test_pseudonym_is_deterministic_hex_and_domain_separated(
    key_provider: KeyProvider,
) -> None:
    token = await key_provider.pseudonym("person", NATIONAL_ID)
    assert len(token) == 64
    assert token == token.lower()
    int(token, 16)
    assert await key_provider.pseudonym("person", NATIONAL_ID) == token
    assert await key_provider.pseudonym("mrn", NATIONAL_ID) != token
    assert await key_provider.pseudonym("person", "110105194912310021") != token
    # The separator keeps ("a", "b\0c")-style inputs from colliding across domains.
    assert await key_provider.pseudonym("ab", "c") != await key_provider.pseudonym("a", "bc")
    with pytest.raises(ValueError):
        await key_provider.pseudonym("bad\x00domain", "x")


async def test_pseudonym_is_stable_across_rotation(key_provider: KeyProvider) -> None:
    token = await key_provider.pseudonym("person", NATIONAL_ID)
    await key_provider.rotate()
    await key_provider.rotate()
    assert await key_provider.pseudonym("person", NATIONAL_ID) == token


async def test_signatures_verify_with_the_public_key(key_provider: KeyProvider) -> None:
    public_key = await key_provider.public_key()
    assert len(public_key) == 32
    signature = await key_provider.sign(b"tree head 42")
    assert len(signature) == 64
    assert verify_signature(public_key, b"tree head 42", signature)
    assert not verify_signature(public_key, b"tree head 43", signature)
    assert await key_provider.key_id() == signing_key_id(public_key)


async def test_rotation_and_rewrap(key_provider: KeyProvider) -> None:
    old = await key_provider.generate_data_key()
    assert await key_provider.rotate() == 2
    new = await key_provider.generate_data_key()
    assert new.key_version == 2
    # Old wrapped keys still open; rewrap moves them to the new version, same data key.
    assert await key_provider.unwrap_data_key(old.wrapped) == old.plaintext
    rewrapped = await key_provider.rewrap(old.wrapped)
    assert wrapped_key_version(rewrapped) == 2
    assert await key_provider.unwrap_data_key(rewrapped) == old.plaintext
    assert await key_provider.rotate() == 3


async def test_sealer_over_the_provider(key_provider: KeyProvider) -> None:
    sealer = Sealer(key_provider, cache_seconds=60, cache_uses=100)
    blob = await sealer.seal(b'{"resourceType":"Patient"}', b"persons/t/records/r")
    await key_provider.rotate()
    rewrapped = await sealer.rewrap(blob)
    assert parse_blob(rewrapped).key_version == 2
    fresh = Sealer(key_provider, cache_seconds=60, cache_uses=100)
    assert await fresh.open(rewrapped, b"persons/t/records/r") == b'{"resourceType":"Patient"}'


async def test_concurrent_use(key_provider: KeyProvider) -> None:
    tokens = await asyncio.gather(
        *(key_provider.pseudonym("person", f"value-{n % 3}") for n in range(12))
    )
    assert len(set(tokens)) == 3
    keys = await asyncio.gather(*(key_provider.generate_data_key() for _ in range(6)))
    assert len({key.plaintext for key in keys}) == 6


# --- Vault only -----------------------------------------------------------------------------


async def test_vault_unreachable_is_unavailable() -> None:
    provider = VaultKeyProvider(f"http://127.0.0.1:{closed_port()}", token="x", timeout=2)
    with pytest.raises(KeyProviderUnavailable):
        await provider.check()
    with pytest.raises(KeyProviderUnavailable):
        await provider.pseudonym("person", NATIONAL_ID)


async def test_vault_bad_token_is_an_error_not_unavailable(vault_root: hvac.Client) -> None:
    provider = VaultKeyProvider(vault_root.url, token="not-a-token")
    with pytest.raises(KeyProviderError) as raised:
        await provider.check()
    assert not isinstance(raised.value, KeyProviderUnavailable)


async def test_vault_approle_login_with_the_documented_policy(
    vault_root: hvac.Client, transit_mount: str
) -> None:
    root, mount = vault_root, transit_mount
    # Keys are created by the provider itself, under the least-privilege policy.
    root.sys.create_or_update_policy(name=f"healthbank-{mount}", policy=vault_policy(mount))
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    role = f"healthbank-{mount}"
    # Tokens that expire quickly, to see the provider log in again.
    root.auth.approle.create_or_update_approle(
        role, token_policies=[f"healthbank-{mount}"], token_ttl="2s", token_max_ttl="2s"
    )
    role_id = root.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role)["data"]["secret_id"]

    provider = VaultKeyProvider(
        root.url,
        auth_method="approle",
        role_id=role_id,
        secret_id=secret_id,
        transit_mount=mount,
    )
    await provider.check()
    token = await provider.pseudonym("person", NATIONAL_ID)
    data_key = await provider.generate_data_key()
    assert await provider.rotate() == 2
    assert await provider.unwrap_data_key(await provider.rewrap(data_key.wrapped)) == (
        data_key.plaintext
    )
    assert verify_signature(await provider.public_key(), b"m", await provider.sign(b"m"))
    await asyncio.sleep(2.5)
    assert await provider.pseudonym("person", NATIONAL_ID) == token


async def test_vault_refuses_a_key_of_the_wrong_type(
    vault_root: hvac.Client, transit_mount: str
) -> None:
    vault_root.secrets.transit.create_key(
        "healthbank-audit", key_type="aes256-gcm96", mount_point=transit_mount
    )
    provider = VaultKeyProvider(vault_root.url, token=vault_root.token, transit_mount=transit_mount)
    with pytest.raises(KeyProviderError, match="healthbank-audit has type aes256-gcm96"):
        await provider.check()


async def test_vault_pseudonym_ignores_rotation_of_the_hmac_key(
    vault_root: hvac.Client, transit_mount: str
) -> None:
    provider = VaultKeyProvider(vault_root.url, token=vault_root.token, transit_mount=transit_mount)
    token = await provider.pseudonym("person", NATIONAL_ID)
    vault_root.secrets.transit.rotate_key("healthbank-pseudonym", mount_point=transit_mount)
    assert await provider.pseudonym("person", NATIONAL_ID) == token


async def test_vault_pseudonyms_asked_together_share_transit_requests(
    vault_root: hvac.Client, transit_mount: str
) -> None:
    provider = VaultKeyProvider(vault_root.url, token=vault_root.token, transit_mount=transit_mount)
    values = [f"1101051949123{n:04d}" for n in range(40)]
    one_by_one = [await provider.pseudonym("person", value) for value in values]
    # Count the HTTP requests the provider's own session sends from here on.
    requests_sent: list[str] = []
    session = provider._ready_client().session  # the provider's real session, observed
    session.hooks["response"].append(lambda response, **_: requests_sent.append(response.url))
    together = await asyncio.gather(*(provider.pseudonym("person", value) for value in values))
    assert together == one_by_one
    assert len(set(together)) == len(values)
    # The first request goes alone; everything asked meanwhile rides in the next one(s).
    assert 1 <= len(requests_sent) <= 3
    assert all(url.endswith(f"/{transit_mount}/hmac/healthbank-pseudonym") for url in requests_sent)


async def test_vault_pseudonym_failures_reach_every_caller_of_the_batch() -> None:
    provider = VaultKeyProvider(f"http://127.0.0.1:{closed_port()}", token="x", timeout=2)
    outcomes = await asyncio.gather(
        *(provider.pseudonym("person", f"value-{n}") for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, KeyProviderUnavailable) for outcome in outcomes)


async def test_vault_readiness_asks_vault_only_when_it_has_not_answered_lately(
    vault_root: hvac.Client, transit_mount: str
) -> None:
    provider = VaultKeyProvider(
        vault_root.url,
        token=vault_root.token,
        transit_mount=transit_mount,
        answered_ready_seconds=0.5,
    )
    await provider.pseudonym("person", NATIONAL_ID)
    requests_sent: list[str] = []
    session = provider._ready_client().session  # the provider's real session, observed
    session.hooks["response"].append(lambda response, **_: requests_sent.append(response.url))
    # Vault has just answered: the check passes without asking it.
    await provider.check()
    assert requests_sent == []
    # Not lately: the check asks.
    await asyncio.sleep(0.6)
    await provider.check()
    assert requests_sent != []


async def test_vault_readiness_asks_again_at_once_after_an_operation_vault_did_not_answer(
    openbao: OpenBao, vault_root: hvac.Client, transit_mount: str
) -> None:
    async with openbao_relay(openbao) as (relay, url):
        provider = VaultKeyProvider(
            url, token=vault_root.token, transit_mount=transit_mount, timeout=2
        )
        await provider.check()
        await relay.cut()
        with pytest.raises(KeyProviderUnavailable):
            await provider.pseudonym("person", NATIONAL_ID)
        # Within the seconds a check would trust an answer, but the last call had none.
        with pytest.raises(KeyProviderUnavailable):
            await provider.check()
