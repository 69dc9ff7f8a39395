"""Signed tree heads and audit leaves: their canonical bytes and offline verification.

Pure: no I/O, no grpc (the generated protobuf messages are plain data).

Leaf bytes. A leaf of the audit log is the *deterministic* protobuf serialization of the
``healthbank.audit.v1.AccessEvent`` as stored (``SerializeToString(deterministic=True)``,
after the service filled ``recorded_by``). Deterministic mode orders map entries; fields
are always written in field-number order. Anyone holding the event as returned by
``ListAccessEvents`` or ``GetEntries`` recomputes :func:`event_leaf_hash` and checks it with
an inclusion proof, or rebuilds the whole tree (``healthbank audit verify``).

Tree head bytes. The signature covers
``b"healthbank-sth-v1" || tree_size (u64 BE) || root_hash (32 bytes) || timestamp_ms (u64 BE)``
where timestamp_ms is the head's ``timestamp`` in whole milliseconds since the Unix epoch.
A witness co-signs ``b"healthbank-witness-v1" || <those tree head bytes>`` with its own key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger.merkle import HASH_SIZE, leaf_hash

TREE_HEAD_LABEL = b"healthbank-sth-v1"
WITNESS_LABEL = b"healthbank-witness-v1"
_U64_MAX = 2**64 - 1
_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64


def leaf_bytes(event: audit_pb2.AccessEvent) -> bytes:
    """The bytes a leaf hash covers: the event's deterministic serialization."""
    return event.SerializeToString(deterministic=True)


def event_leaf_hash(event: audit_pb2.AccessEvent) -> bytes:
    """The leaf hash of an event, recomputed from its contents: the one definition."""
    return leaf_hash(leaf_bytes(event))


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


def head_timestamp_ms(sth: audit_pb2.SignedTreeHead) -> int:
    """The head's timestamp in the whole milliseconds its signature covers."""
    return sth.timestamp.seconds * 1000 + sth.timestamp.nanos // 1_000_000


def signed_head_bytes(sth: audit_pb2.SignedTreeHead) -> bytes:
    """The canonical bytes ``sth``'s signature covers (ValueError if out of range)."""
    return tree_head_bytes(sth.tree_size, sth.root_hash, head_timestamp_ms(sth))


def cosigned_head_bytes(sth: audit_pb2.SignedTreeHead) -> bytes:
    """The bytes a witness signs to vouch for ``sth``."""
    return WITNESS_LABEL + signed_head_bytes(sth)


def verify_tree_head(sth: audit_pb2.SignedTreeHead, public_key: bytes | None = None) -> bool:
    """Tell whether ``sth`` carries a valid Ed25519 signature.

    With ``public_key`` (the key the verifier trusts for the log, configured, never taken
    from the server it checks) the signature must be by that key and ``sth.public_key``
    must name it. Without it, the head is checked against its own ``public_key``: that
    proves it intact, not who signed it.
    """
    key = sth.public_key if public_key is None else public_key
    if public_key is not None and sth.public_key and sth.public_key != public_key:
        return False
    if not verify_signature(key, sth.signature, _head_bytes_or_none(sth)):
        return False
    # The head is only canonical at millisecond precision; finer nanos are not signed.
    return sth.timestamp.nanos % 1_000_000 == 0


def _head_bytes_or_none(sth: audit_pb2.SignedTreeHead) -> bytes | None:
    """:func:`signed_head_bytes`, or None for a head whose fields are out of range."""
    try:
        return signed_head_bytes(sth)
    except ValueError:
        return None


def verify_signature(public_key: bytes, signature: bytes, message: bytes | None) -> bool:
    """Tell whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``
    (raw 32 bytes); a None message never verifies."""
    if message is None or len(public_key) != _PUBLIC_KEY_SIZE or len(signature) != _SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
