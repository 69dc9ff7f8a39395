"""What a witness concludes from a new signed tree head and the last head it holds.

Pure: no I/O, no grpc.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import verify_tree_head


class Finding(StrEnum):
    """The outcome of one observation; the last four are alarms."""

    FIRST = "first"  # no earlier head held: trusted on first use
    GREW = "grew"  # consistent with the last head held
    UNCHANGED = "unchanged"  # same size and root as the last head held
    BAD_SIGNATURE = "bad_signature"  # not signed by the log's configured key
    SHRINK = "shrink"  # fewer leaves than a head already held
    FORK = "fork"  # same size, different root: a split view
    INVALID_PROOF = "invalid_proof"  # the consistency proof does not verify

    @property
    def is_alarm(self) -> bool:
        """True for the findings that mean the log cannot be trusted."""
        return self in _ALARMS


_ALARMS = {Finding.BAD_SIGNATURE, Finding.SHRINK, Finding.FORK, Finding.INVALID_PROOF}


@dataclass(frozen=True)
class HeldHead:
    """The part of a held head the rules compare: its size and root."""

    tree_size: int
    root_hash: bytes


def needs_proof(last: HeldHead | None, head: audit_pb2.SignedTreeHead) -> bool:
    """Whether judging ``head`` needs a consistency proof from ``last``'s size."""
    return last is not None and 0 < last.tree_size < head.tree_size


def judge(
    last: HeldHead | None,
    head: audit_pb2.SignedTreeHead,
    log_public_key: bytes,
    proof: Sequence[bytes] = (),
) -> Finding:
    """Judge ``head`` against ``last`` (``proof``: from last's size to head's, if needed)."""
    if not verify_tree_head(head, log_public_key):
        return Finding.BAD_SIGNATURE
    if last is None:
        return Finding.FIRST
    if head.tree_size < last.tree_size:
        return Finding.SHRINK
    if head.tree_size == last.tree_size:
        return Finding.UNCHANGED if head.root_hash == last.root_hash else Finding.FORK
    if last.tree_size == 0:
        return Finding.GREW  # the empty tree is a prefix of every tree
    consistent = merkle.verify_consistency(
        last.tree_size, head.tree_size, last.root_hash, head.root_hash, proof
    )
    return Finding.GREW if consistent else Finding.INVALID_PROOF
