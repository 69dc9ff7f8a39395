"""The witness's schedule: observe the audit log's head, judge it, co-sign or raise an alarm.

The edge of the witness: it reaches the audit service over gRPC (public RPCs only, no
credentials), keeps what it saw in its own :class:`WitnessStore` and publishes the latest
co-signed head as a JSON file that anyone can read and check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import grpc  # type: ignore[import-untyped, unused-ignore]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.core.files import write_durably
from healthbank.ledger.tree_head import cosigned_head_bytes, head_timestamp_ms, to_millis
from healthbank.witness.judge import Finding, HeldHead, judge, needs_proof
from healthbank.witness.store import Alarm, CosignedHead, WitnessStore

_log = logging.getLogger(__name__)


class Witness:
    """One witness of one audit log."""

    def __init__(
        self,
        store: WitnessStore,
        channel: grpc.aio.Channel,
        log_public_key: bytes,
        key: Ed25519PrivateKey,
        now: Callable[[], datetime],
        publish: Path | None = None,
    ) -> None:
        """Witness the log on ``channel`` whose heads ``log_public_key`` signs.

        ``key`` co-signs; ``publish`` (optional) receives the latest co-signed head as JSON.
        """
        self._store = store
        self._stub = audit_pb2_grpc.AuditServiceStub(channel)
        self._log_public_key = log_public_key
        self._key = key
        self._now = now
        self._publish = publish

    @property
    def public_key(self) -> bytes:
        """The witness's raw Ed25519 public key (verifies its co-signatures)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    async def observe(self) -> Finding:
        """Fetch the current head, judge it, then co-sign and keep it or raise an alarm.

        Raises grpc.aio.AioRpcError when the audit service cannot be reached.
        """
        head = await self._stub.GetTreeHead(audit_pb2.GetTreeHeadRequest())
        held = await self._store.latest()
        last = None if held is None else HeldHead(held.tree_size, held.root_hash)
        proof: list[bytes] = []
        if needs_proof(last, head):
            assert last is not None
            response = await self._stub.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(
                    first_tree_size=last.tree_size, second_tree_size=head.tree_size
                )
            )
            proof = list(response.proof)
        finding = judge(last, head, self._log_public_key, proof)
        now_ms = to_millis(self._now())
        if finding.is_alarm:
            await self._store.add_alarm(
                Alarm(finding.value, head.tree_size, head.root_hash, now_ms)
            )
            _log.error(
                "witness ALARM %s: log head of size %d (last held: %s)",
                finding.value,
                head.tree_size,
                "none" if last is None else last.tree_size,
                extra={"finding": finding.value},
            )
            return finding
        if finding in (Finding.FIRST, Finding.GREW):
            cosigned = CosignedHead(
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                timestamp_ms=head_timestamp_ms(head),
                log_signature=head.signature,
                log_public_key=self._log_public_key,
                cosignature=self._key.sign(cosigned_head_bytes(head)),
                witnessed_ms=now_ms,
            )
            await self._store.add_head(cosigned)
            if self._publish is not None:
                await asyncio.to_thread(_write_json, self._publish, self._published(cosigned))
            _log.info("witness co-signed the log head of size %d", head.tree_size)
        return finding

    async def run(self, interval: float, stop: asyncio.Event) -> Finding | None:
        """Observe every ``interval`` seconds until ``stop`` is set or an alarm is raised.

        Returns the alarm, or None when stopped. An unreachable log is logged and retried.
        """
        while not stop.is_set():
            try:
                finding = await self.observe()
            except grpc.aio.AioRpcError as error:
                _log.warning("witness could not reach the audit log: %s", error.code().name)
            else:
                if finding.is_alarm:
                    return finding
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        return None

    def _published(self, head: CosignedHead) -> dict[str, object]:
        return {
            "tree_size": head.tree_size,
            "root_hash": head.root_hash.hex(),
            "timestamp_ms": head.timestamp_ms,
            "log_signature": head.log_signature.hex(),
            "log_public_key": head.log_public_key.hex(),
            "witness_public_key": self.public_key.hex(),
            "witness_signature": head.cosignature.hex(),
            "witnessed_ms": head.witnessed_ms,
        }


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The witness's Ed25519 key from a PEM file, created (mode 0600) if missing."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return key


def _write_json(path: Path, body: dict[str, object]) -> None:
    # Readers never see a half-written file, and a crash never leaves an empty one.
    write_durably(path, (json.dumps(body, indent=2) + "\n").encode())
