"""The Merkle tree of the audit log, in the shape of RFC 6962 / RFC 9162 section 2.1.

Pure functions only: no I/O, no grpc. Hashes follow RFC 6962:

- leaf hash  ``SHA-256(0x00 || leaf)``
- inner node ``SHA-256(0x01 || left || right)``
- the Merkle Tree Hash (MTH) of n leaves splits at the largest power of two below n.

Storage model. A tree is persisted as a *node table*: the hash of every complete
(perfect) subtree, keyed by ``(level, index)`` where the node covers leaves
``[index * 2**level, (index + 1) * 2**level)``. Complete subtrees never change once
written, so appending leaf i writes O(log n) new nodes and reads O(log n) old ones
(:func:`append_keys` / :func:`append_nodes`). Every subtree the RFC algorithms need
(``MTH(D[a:b])`` with ``a`` aligned) is either a complete subtree or a "right edge"
subtree that folds from a few complete ones, so proofs and roots are O(log n) node
reads too: ask for the keys first (``*_keys``), fetch them in one batch, then build
(the functions taking ``nodes``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from itertools import pairwise

NodeKey = tuple[int, int]
"""``(level, index)`` of a complete subtree: leaves ``[index << level, (index + 1) << level)``."""

HASH_SIZE = 32

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree (RFC 6962: the hash of the empty string)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class MissingNode(LookupError):
    """A node the computation needs is not in the given node table (store damaged)."""

    def __init__(self, key: NodeKey) -> None:
        super().__init__(f"merkle node level={key[0]} index={key[1]} is missing")
        self.key = key


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


# --- node table maintenance ---------------------------------------------------------


def append_keys(index: int) -> list[NodeKey]:
    """Nodes to read before appending leaf ``index``: the left siblings it completes."""
    if index < 0:
        raise ValueError("leaf index must be >= 0")
    keys: list[NodeKey] = []
    level = 0
    position = index
    while position & 1:
        keys.append((level, position - 1))
        level += 1
        position >>= 1
    return keys


def append_nodes(
    index: int, new_leaf_hash: bytes, nodes: Mapping[NodeKey, bytes]
) -> list[tuple[NodeKey, bytes]]:
    """Nodes to write when leaf ``index`` is appended: the leaf and the subtrees it completes.

    ``nodes`` must hold at least :func:`append_keys` of ``index``.
    """
    written: list[tuple[NodeKey, bytes]] = [((0, index), new_leaf_hash)]
    current = new_leaf_hash
    for level, left_index in append_keys(index):
        current = node_hash(_node(nodes, (level, left_index)), current)
        written.append(((level + 1, left_index >> 1), current))
    return written


class RootBuilder:
    """Rebuilds Merkle roots from leaf hashes streamed in log order, in O(log n) memory.

    It keeps only the complete subtrees the root of the current size folds from (the
    tree's right edge), which are also all that the next append reads.
    """

    def __init__(self) -> None:
        """An empty tree."""
        self.size = 0
        self._edge: dict[NodeKey, bytes] = {}

    def append(self, new_leaf_hash: bytes) -> None:
        """Add the next leaf (its RFC 6962 leaf hash)."""
        nodes = dict(self._edge)
        nodes.update(append_nodes(self.size, new_leaf_hash, self._edge))
        self.size += 1
        self._edge = {key: nodes[key] for key in root_keys(self.size)}

    def root(self) -> bytes:
        """MTH of the leaves added so far."""
        return root_hash(self.size, self._edge)


# --- subtrees as ranges ---------------------------------------------------------------


def range_keys(start: int, end: int) -> list[NodeKey]:
    """Complete subtrees that tile leaves ``[start, end)``, left to right, greedily largest."""
    if not 0 <= start < end:
        raise ValueError("a leaf range needs 0 <= start < end")
    keys: list[NodeKey] = []
    while start < end:
        # Largest block aligned at start that still fits before end.
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def range_hash(start: int, end: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """``MTH(D[start:end])`` for an RFC 6962 subtree, folded from its complete subtrees.

    Valid for the subtrees the RFC algorithms use (start aligned to a power of two at least
    ``end - start``): their tiling has strictly shrinking blocks, and MTH folds them right to
    left. Other ranges raise ValueError.
    """
    keys = range_keys(start, end)
    levels = [level for level, _ in keys]
    if any(a <= b for a, b in pairwise(levels)):
        raise ValueError("range is not an RFC 6962 subtree")
    current = _node(nodes, keys[-1])
    for key in reversed(keys[:-1]):
        current = node_hash(_node(nodes, key), current)
    return current


def _keys_of(ranges: Sequence[tuple[int, int]]) -> list[NodeKey]:
    seen: dict[NodeKey, None] = {}
    for start, end in ranges:
        for key in range_keys(start, end):
            seen[key] = None
    return list(seen)


def _node(nodes: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    try:
        return nodes[key]
    except KeyError:
        raise MissingNode(key) from None


# --- root ------------------------------------------------------------------------------


def root_keys(size: int) -> list[NodeKey]:
    """Nodes needed for the root of a tree of ``size`` leaves."""
    if size < 0:
        raise ValueError("tree size must be >= 0")
    return range_keys(0, size) if size else []


def root_hash(size: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH of the first ``size`` leaves (EMPTY_ROOT for 0)."""
    if size < 0:
        raise ValueError("tree size must be >= 0")
    return range_hash(0, size, nodes) if size else EMPTY_ROOT


# --- inclusion proof (RFC 6962 2.1.1 PATH) -----------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees of ``PATH(index, D[size])`` as leaf ranges, from the leaf upwards."""
    if not 0 <= index < size:
        raise ValueError("inclusion proof needs 0 <= index < size")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    # Walk down from the root; each step's sibling subtree is prepended (path is leaf-up).
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def inclusion_keys(index: int, size: int) -> list[NodeKey]:
    """Nodes needed for :func:`inclusion_path`."""
    return _keys_of(inclusion_ranges(index, size))


def inclusion_path(index: int, size: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 6962 PATH)."""
    return [range_hash(start, end, nodes) for start, end in inclusion_ranges(index, size)]


# --- consistency proof (RFC 6962 2.1.2 PROOF) --------------------------------------


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The subtrees of ``PROOF(size1, D[size2])`` as leaf ranges (empty if size1 == size2)."""
    if not 0 < size1 <= size2:
        raise ValueError("consistency proof needs 0 < size1 <= size2")
    ranges: list[tuple[int, int]] = []
    start, end, old = 0, size2, size1
    complete = True  # SUBPROOF's b flag: is the old tree exactly this subtree's left edge?
    while old != end - start:
        k = _split(end - start)
        if old <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            old -= k
            start += k
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def consistency_keys(size1: int, size2: int) -> list[NodeKey]:
    """Nodes needed for :func:`consistency_proof`."""
    return _keys_of(consistency_ranges(size1, size2))


def consistency_proof(size1: int, size2: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """Proof that the tree of ``size1`` leaves is a prefix of the one of ``size2`` (PROOF)."""
    return [range_hash(start, end, nodes) for start, end in consistency_ranges(size1, size2)]


# --- verifiers (RFC 9162 2.1.3.2 and 2.1.4.2) --------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof: ``leaf`` (a leaf hash) is at ``index`` in the tree ``root``.

    RFC 9162 section 2.1.3.2.
    """
    if not 0 <= index < size or not _all_hashes([leaf, root, *path]):
        return False
    fn, sn = index, size - 1
    current = leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            current = node_hash(sibling, current)
            if not fn & 1:
                # Skip levels where this node is the right edge's only child.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            current = node_hash(current, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(current, root)


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool:
    """Check that the tree ``root1`` of ``size1`` leaves is a prefix of ``root2`` (size2).

    RFC 9162 section 2.1.4.2; equal sizes need an empty proof and equal roots.
    """
    if not 0 < size1 <= size2 or not _all_hashes([root1, root2, *proof]):
        return False
    if size1 == size2:
        return not proof and hmac.compare_digest(root1, root2)
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # The old tree is a complete subtree of the new one: its root is the first node.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first_root = second_root = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_root = node_hash(node, first_root)
            second_root = node_hash(node, second_root)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second_root = node_hash(second_root, node)
        fn >>= 1
        sn >>= 1
    return (
        sn == 0
        and hmac.compare_digest(first_root, root1)
        and hmac.compare_digest(second_root, root2)
    )


def _all_hashes(values: Sequence[bytes]) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in values)
