"""Signed tree heads and audit leaves: their canonical bytes and offline verification.

Pure: no I/O, no grpc (the generated protobuf messages are plain data).

Leaf bytes. A leaf of the audit log is the *deterministic* protobuf serialization of the
``healthbank.audit.v1.AccessEvent`` as stored (``SerializeToString(deterministic=True)``,
after the service filled ``recorded_by``). Deterministic mode orders map entries; fields
are always written in field-number order. Anyone holding the event as returned by
``ListAccessEvents`` recomputes ``leaf_hash(leaf_bytes(event))`` and checks it with an
inclusion proof.

Tree head bytes. The signature covers
``b"healthbank-sth-v1" || tree_size (u64 BE) || root_hash (32 bytes) || timestamp_ms (u64 BE)``
where timestamp_ms is the head's ``timestamp`` in whole milliseconds since the Unix epoch.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger.merkle import HASH_SIZE

TREE_HEAD_LABEL = b"healthbank-sth-v1"
_U64_MAX = 2**64 - 1
_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64


def leaf_bytes(event: audit_pb2.AccessEvent) -> bytes:
    """The bytes a leaf hash covers: the event's deterministic serialization."""
    return event.SerializeToString(deterministic=True)


def tree_head_bytes(tree_size: int, root_hash: bytes, timestamp_ms: int) -> bytes:
    """The canonical bytes a tree head signature covers."""
    if not 0 <= tree_size <= _U64_MAX or not 0 <= timestamp_ms <= _U64_MAX:
        raise ValueError("tree_size and timestamp_ms must fit an unsigned 64-bit integer")
    if len(root_hash) != HASH_SIZE:
        raise ValueError("root_hash must be 32 bytes")
    return (
        TREE_HEAD_LABEL + tree_size.to_bytes(8, "big") + root_hash + timestamp_ms.to_bytes(8, "big")
    )


def to_millis(moment: datetime) -> int:
    """Whole milliseconds since the Unix epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: healthbank uses UTC only")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def verify_tree_head(sth: audit_pb2.SignedTreeHead) -> bool:
    """Tell whether ``sth`` carries a valid Ed25519 signature by its own ``public_key``.

    This proves the head is intact and signed by the holder of that key; callers must
    still compare ``public_key`` with the key they trust for the log.
    """
    if len(sth.public_key) != _PUBLIC_KEY_SIZE or len(sth.signature) != _SIGNATURE_SIZE:
        return False
    timestamp_ms = sth.timestamp.seconds * 1000 + sth.timestamp.nanos // 1_000_000
    try:
        message = tree_head_bytes(sth.tree_size, sth.root_hash, timestamp_ms)
        Ed25519PublicKey.from_public_bytes(sth.public_key).verify(sth.signature, message)
    except (InvalidSignature, ValueError):
        return False
    # The head is only canonical at millisecond precision; finer nanos are not signed.
    return sth.timestamp.nanos % 1_000_000 == 0
