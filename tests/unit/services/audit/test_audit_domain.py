"""The audit log's Merkle tree, tree head bytes and page tokens (pure; no I/O)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import timestamp_pb2

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import leaf_bytes, tree_head_bytes, verify_tree_head
from services.audit.log import InvalidPageToken, decode_page_token, encode_page_token
from services.audit.store import PersonCursor

MAX_SIZE = 70


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]), straight from the definition."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 SUBPROOF(m, D[n], b), straight from the definition."""
    n = len(leaves)
    if m == n:
        return [] if complete else [naive_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, leaves[:k], complete), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


LEAVES = [f"leaf-{index}".encode() for index in range(MAX_SIZE)]


@pytest.fixture(scope="module")
def nodes() -> dict[merkle.NodeKey, bytes]:
    """The node table after appending all LEAVES one by one, as the store does."""
    table: dict[merkle.NodeKey, bytes] = {}
    for index, leaf in enumerate(LEAVES):
        needed = {key: table[key] for key in merkle.append_keys(index)}
        for key, value in merkle.append_nodes(index, merkle.leaf_hash(leaf), needed):
            assert key not in table, "complete subtrees are written once"
            table[key] = value
    return table


def only(
    table: dict[merkle.NodeKey, bytes], keys: list[merkle.NodeKey]
) -> dict[merkle.NodeKey, bytes]:
    """The subset of the table an O(log n) read would fetch; proves the *_keys are enough."""
    return {key: table[key] for key in keys}


def test_leaf_and_node_hash_use_rfc6962_prefixes() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert merkle.root_hash(0, {}) == hashlib.sha256(b"").digest()


def test_known_vector_for_empty_leaf() -> None:
    # RFC 6962 test vector used by Certificate Transparency implementations.
    assert (
        merkle.leaf_hash(b"").hex()
        == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_root_matches_naive_mth(size: int, nodes: dict[merkle.NodeKey, bytes]) -> None:
    keys = merkle.root_keys(size)
    assert len(keys) == bin(size).count("1")
    assert merkle.root_hash(size, only(nodes, keys)) == naive_mth(LEAVES[:size])


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_every_inclusion_proof_matches_rfc_and_verifies(
    size: int, nodes: dict[merkle.NodeKey, bytes]
) -> None:
    root = naive_mth(LEAVES[:size])
    for index in range(size):
        keys = merkle.inclusion_keys(index, size)
        # O(log n) reads: at most two nodes per level.
        assert len(keys) <= 2 * max(1, size.bit_length())
        path = merkle.inclusion_path(index, size, only(nodes, keys))
        assert path == naive_path(index, LEAVES[:size])
        leaf = merkle.leaf_hash(LEAVES[index])
        assert merkle.verify_inclusion(leaf, index, size, path, root)


@pytest.mark.parametrize("size2", range(1, MAX_SIZE + 1))
def test_every_consistency_proof_matches_rfc_and_verifies(
    size2: int, nodes: dict[merkle.NodeKey, bytes]
) -> None:
    root2 = naive_mth(LEAVES[:size2])
    for size1 in range(1, size2 + 1):
        keys = merkle.consistency_keys(size1, size2)
        proof = merkle.consistency_proof(size1, size2, only(nodes, keys))
        assert proof == naive_subproof(size1, LEAVES[:size2], True)
        root1 = naive_mth(LEAVES[:size1])
        assert merkle.verify_consistency(size1, size2, root1, root2, proof)


def test_tampered_inclusion_proofs_fail(nodes: dict[merkle.NodeKey, bytes]) -> None:
    for size in (2, 3, 7, 8, 13, 64, 70):
        root = merkle.root_hash(size, nodes)
        for index in range(size):
            leaf = merkle.leaf_hash(LEAVES[index])
            path = merkle.inclusion_path(index, size, nodes)
            for position in range(len(path)):
                broken = list(path)
                broken[position] = bytes([broken[position][0] ^ 1]) + broken[position][1:]
                assert not merkle.verify_inclusion(leaf, index, size, broken, root)
            assert not merkle.verify_inclusion(leaf, index, size, path[:-1], root)
            assert not merkle.verify_inclusion(leaf, index, size, [*path, root], root)
            other = merkle.leaf_hash(b"forged")
            assert not merkle.verify_inclusion(other, index, size, path, root)
            if size > 1:
                wrong_index = (index + 1) % size
                assert not merkle.verify_inclusion(leaf, wrong_index, size, path, root)
            if size < MAX_SIZE:
                # A proof for one tree does not prove anything about the next one. (Sizes
                # themselves are authenticated by the signed tree head, not by the path.)
                bigger_root = merkle.root_hash(size + 1, nodes)
                assert not merkle.verify_inclusion(leaf, index, size + 1, path, bigger_root)
            assert not merkle.verify_inclusion(leaf, index, size, path, hashlib.sha256().digest())


def test_tampered_consistency_proofs_fail(nodes: dict[merkle.NodeKey, bytes]) -> None:
    for size2 in (2, 5, 8, 13, 32, 70):
        root2 = merkle.root_hash(size2, nodes)
        for size1 in range(1, size2):
            root1 = merkle.root_hash(size1, nodes)
            proof = merkle.consistency_proof(size1, size2, nodes)
            for position in range(len(proof)):
                broken = list(proof)
                broken[position] = bytes([broken[position][0] ^ 1]) + broken[position][1:]
                assert not merkle.verify_consistency(size1, size2, root1, root2, broken)
            assert not merkle.verify_consistency(size1, size2, root1, root2, proof[:-1])
            assert not merkle.verify_consistency(size1, size2, root2, root2, proof)
            assert not merkle.verify_consistency(size1, size2, root1, root1, proof)
            if size2 < MAX_SIZE:
                bigger_root = merkle.root_hash(size2 + 1, nodes)
                assert not merkle.verify_consistency(size1, size2 + 1, root1, bigger_root, proof)
            assert not merkle.verify_consistency(size1, size2, root1, root2, [])


def test_equal_sizes_need_an_empty_proof_and_equal_roots(
    nodes: dict[merkle.NodeKey, bytes],
) -> None:
    root = merkle.root_hash(9, nodes)
    assert merkle.consistency_proof(9, 9, nodes) == []
    assert merkle.verify_consistency(9, 9, root, root, [])
    assert not merkle.verify_consistency(9, 9, root, merkle.root_hash(8, nodes), [])
    assert not merkle.verify_consistency(9, 9, root, root, [root])


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_ranges(3, 3)
    with pytest.raises(ValueError):
        merkle.consistency_ranges(0, 3)
    with pytest.raises(ValueError):
        merkle.consistency_ranges(4, 3)
    assert not merkle.verify_inclusion(b"short", 0, 1, [], b"short")
    assert not merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])


def test_missing_node_is_reported(nodes: dict[merkle.NodeKey, bytes]) -> None:
    keys = merkle.inclusion_keys(5, 20)
    partial = only(nodes, keys[1:])
    with pytest.raises(merkle.MissingNode):
        merkle.inclusion_path(5, 20, partial)


def test_range_hash_refuses_ranges_that_are_no_rfc_subtree(
    nodes: dict[merkle.NodeKey, bytes],
) -> None:
    with pytest.raises(ValueError):
        merkle.range_hash(1, 4, nodes)


def _head(size: int, root: bytes, millis: int, key: Ed25519PrivateKey) -> audit_pb2.SignedTreeHead:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromMilliseconds(millis)
    return audit_pb2.SignedTreeHead(
        tree_size=size,
        root_hash=root,
        timestamp=timestamp,
        signature=key.sign(tree_head_bytes(size, root, millis)),
        public_key=key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ),
    )


def test_tree_head_bytes_layout() -> None:
    root = bytes(range(32))
    raw = tree_head_bytes(5, root, 1_700_000_000_123)
    assert raw == b"healthbank-sth-v1" + (5).to_bytes(8, "big") + root + (
        1_700_000_000_123
    ).to_bytes(8, "big")


def test_verify_tree_head_accepts_signed_and_rejects_tampered() -> None:
    key = Ed25519PrivateKey.generate()
    root = merkle.leaf_hash(b"root")
    head = _head(42, root, 1_700_000_000_123, key)
    assert verify_tree_head(head)
    for mutate in (
        lambda h: setattr(h, "tree_size", 43),
        lambda h: setattr(h, "root_hash", merkle.leaf_hash(b"other")),
        lambda h: h.timestamp.FromMilliseconds(1_700_000_000_124),
        lambda h: setattr(h, "signature", bytes(64)),
        lambda h: setattr(h, "public_key", bytes(31)),
    ):
        tampered = audit_pb2.SignedTreeHead()
        tampered.CopyFrom(head)
        mutate(tampered)
        assert not verify_tree_head(tampered)
    other_key = _head(42, root, 1_700_000_000_123, Ed25519PrivateKey.generate())
    forged = audit_pb2.SignedTreeHead()
    forged.CopyFrom(head)
    forged.public_key = other_key.public_key
    assert not verify_tree_head(forged)


def test_leaf_bytes_are_deterministic() -> None:
    event = audit_pb2.AccessEvent(
        event_id="01J0000000000000000000000A",
        person_token="p1",
        action=audit_pb2.ACTION_READ_HISTORY,
        resource_names=["persons/p1/records/r1"],
    )
    again = audit_pb2.AccessEvent()
    again.ParseFromString(leaf_bytes(event))
    assert leaf_bytes(again) == leaf_bytes(event)
    assert leaf_bytes(event) == event.SerializeToString(deterministic=True)


def test_page_tokens_round_trip_and_are_bound_to_the_person() -> None:
    cursor = PersonCursor(occur_us=1_700_000_000_000_001, leaf_index=17)
    token = encode_page_token("person-a", cursor)
    assert "person-a" not in token
    assert decode_page_token(token, "person-a") == cursor
    with pytest.raises(InvalidPageToken):
        decode_page_token(token, "person-b")
    for garbage in ("", "!!!", "e30", token[:-3]):
        with pytest.raises(InvalidPageToken):
            decode_page_token(garbage, "person-a")
