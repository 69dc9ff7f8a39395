"""The witness's rules (healthbank.witness.judge): co-sign what grew consistently, alarm on a
bad signature, a shrink, a fork (split view) or an invalid proof. Pure, no I/O."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import tree_head_bytes
from healthbank.witness.judge import Finding, HeldHead, judge, needs_proof

LOG_KEY = Ed25519PrivateKey.generate()
LOG_PUBLIC = LOG_KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)
LEAVES = [merkle.leaf_hash(f"event-{i}".encode()) for i in range(20)]


def nodes_of(leaves: list[bytes]) -> dict[merkle.NodeKey, bytes]:
    nodes: dict[merkle.NodeKey, bytes] = {}
    for index, leaf in enumerate(leaves):
        nodes.update(merkle.append_nodes(index, leaf, nodes))
    return nodes


NODES = nodes_of(LEAVES)


def head(
    size: int, root: bytes | None = None, key: Ed25519PrivateKey = LOG_KEY
) -> audit_pb2.SignedTreeHead:
    root = merkle.root_hash(size, NODES) if root is None else root
    signed = audit_pb2.SignedTreeHead(tree_size=size, root_hash=root, public_key=LOG_PUBLIC)
    signed.timestamp.FromMilliseconds(1_000)
    signed.signature = key.sign(tree_head_bytes(size, root, 1_000))
    return signed


def held(size: int) -> HeldHead:
    return HeldHead(size, merkle.root_hash(size, NODES))


def test_first_head_is_trusted_then_growth_is_checked() -> None:
    assert judge(None, head(5), LOG_PUBLIC) == Finding.FIRST
    assert needs_proof(held(5), head(12))
    proof = merkle.consistency_proof(5, 12, NODES)
    assert judge(held(5), head(12), LOG_PUBLIC, proof) == Finding.GREW
    assert judge(held(0), head(12), LOG_PUBLIC) == Finding.GREW
    assert not needs_proof(held(0), head(12))
    assert judge(held(12), head(12), LOG_PUBLIC) == Finding.UNCHANGED
    assert not any(f.is_alarm for f in (Finding.FIRST, Finding.GREW, Finding.UNCHANGED))


def test_a_shrink_is_an_alarm() -> None:
    assert judge(held(12), head(11), LOG_PUBLIC) == Finding.SHRINK


def test_a_split_view_is_an_alarm() -> None:
    assert judge(held(12), head(12, root=b"\x07" * 32), LOG_PUBLIC) == Finding.FORK


def test_growth_from_a_rewritten_history_is_an_alarm() -> None:
    # The log re-signed a tree whose first 12 leaves were rewritten, then grew to 15.
    rewritten = list(LEAVES[:15])
    rewritten[3] = merkle.leaf_hash(b"rewritten")
    other = nodes_of(rewritten)
    tampered = head(15, root=merkle.root_hash(15, other))
    proof = merkle.consistency_proof(12, 15, other)
    assert judge(held(12), tampered, LOG_PUBLIC, proof) == Finding.INVALID_PROOF
    assert Finding.INVALID_PROOF.is_alarm


@pytest.mark.parametrize("last", [None, HeldHead(3, b"\x00" * 32)])
def test_a_head_signed_by_another_key_is_an_alarm(last: HeldHead | None) -> None:
    finding = judge(last, head(5, key=Ed25519PrivateKey.generate()), LOG_PUBLIC)
    assert finding == Finding.BAD_SIGNATURE
    assert finding.is_alarm
