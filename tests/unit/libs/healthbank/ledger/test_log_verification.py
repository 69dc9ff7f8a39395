"""Verifying the whole log from its events (healthbank.ledger.verify) and the Merkle root
rebuilt in O(log n) memory; pure, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import (
    WITNESS_LABEL,
    cosigned_head_bytes,
    event_leaf_hash,
    leaf_bytes,
    signed_head_bytes,
    tree_head_bytes,
    verify_tree_head,
)
from healthbank.ledger.verify import ROOT_MISMATCH, LogCheck, Verdict, first_bad_leaf

LOG_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def event(index: int) -> audit_pb2.AccessEvent:
    made = audit_pb2.AccessEvent(
        event_id=f"01HZ{index:022d}",
        actor=common_pb2.Principal(kind=common_pb2.PRINCIPAL_KIND_CLINICIAN, subject="dr-1"),
        action=audit_pb2.ACTION_READ_HISTORY,
        person_token="a" * 64,
        basis="GRANT",
        recorded_by="record-lookup",
    )
    made.occur_time.FromDatetime(T0 + timedelta(minutes=index))
    return made


def node_table(events: Sequence[audit_pb2.AccessEvent]) -> dict[merkle.NodeKey, bytes]:
    nodes: dict[merkle.NodeKey, bytes] = {}
    for index, logged in enumerate(events):
        nodes.update(merkle.append_nodes(index, event_leaf_hash(logged), nodes))
    return nodes


def signed_head(
    events: Sequence[audit_pb2.AccessEvent], key: Ed25519PrivateKey = LOG_KEY
) -> audit_pb2.SignedTreeHead:
    size = len(events)
    root = merkle.root_hash(size, node_table(events))
    head = audit_pb2.SignedTreeHead(tree_size=size, root_hash=root, public_key=raw(key))
    head.timestamp.FromMilliseconds(1_714_550_400_000)
    head.signature = key.sign(tree_head_bytes(size, root, 1_714_550_400_000))
    return head


def check(
    head: audit_pb2.SignedTreeHead,
    listing: Sequence[tuple[int, audit_pb2.AccessEvent, bytes]],
) -> tuple[LogCheck, Verdict]:
    checking = LogCheck(head, raw(LOG_KEY))
    for leaf_index, listed, leaf in listing:
        if not checking.add(leaf_index, listed, leaf):
            break
    return checking, checking.finish()


def honest(
    events: Sequence[audit_pb2.AccessEvent],
) -> list[tuple[int, audit_pb2.AccessEvent, bytes]]:
    return [(index, logged, leaf_bytes(logged)) for index, logged in enumerate(events)]


EVENTS = [event(index) for index in range(13)]


@pytest.mark.parametrize("size", range(0, 40))
def test_root_builder_matches_the_node_table(size: int) -> None:
    leaves = [merkle.leaf_hash(f"leaf-{i}".encode()) for i in range(size)]
    builder = merkle.RootBuilder()
    nodes: dict[merkle.NodeKey, bytes] = {}
    for index, leaf in enumerate(leaves):
        builder.append(leaf)
        nodes.update(merkle.append_nodes(index, leaf, nodes))
        assert builder.root() == merkle.root_hash(index + 1, nodes)
    assert builder.size == size
    assert builder.root() == merkle.root_hash(size, nodes)


def test_an_intact_log_verifies() -> None:
    _, verdict = check(signed_head(EVENTS), honest(EVENTS))
    assert verdict == Verdict(True, 13)
    assert verdict.line().startswith("audit log OK: 13 events")
    _, empty = check(signed_head([]), [])
    assert empty.ok


def test_a_head_not_signed_by_the_configured_key_fails() -> None:
    _, verdict = check(signed_head(EVENTS, OTHER_KEY), honest(EVENTS))
    assert not verdict.ok
    assert "signature" in verdict.problem
    # A head claiming the configured key but signed by another one fails too.
    forged = signed_head(EVENTS, OTHER_KEY)
    forged.public_key = raw(LOG_KEY)
    assert not check(forged, honest(EVENTS))[1].ok


def test_a_deleted_event_is_named() -> None:
    listing = honest(EVENTS)
    del listing[5]
    _, verdict = check(signed_head(EVENTS), listing)
    assert (verdict.ok, verdict.first_bad_index) == (False, 5)
    assert "missing" in verdict.problem
    assert verdict.line().startswith("audit log FAILED at sequence number 5:")
    # The last one missing: the listing ends early.
    _, at_end = check(signed_head(EVENTS), honest(EVENTS)[:-1])
    assert (at_end.ok, at_end.first_bad_index) == (False, 12)


def test_a_reordered_or_extra_listing_is_named() -> None:
    listing = honest(EVENTS)
    listing[3], listing[4] = listing[4], listing[3]
    _, verdict = check(signed_head(EVENTS), listing)
    assert (verdict.ok, verdict.first_bad_index) == (False, 3)
    extra = [*honest(EVENTS), (13, event(13), leaf_bytes(event(13)))]
    _, too_many = check(signed_head(EVENTS), extra)
    assert (too_many.ok, too_many.first_bad_index) == (False, 13)


def test_contents_that_differ_from_the_stored_bytes_are_named() -> None:
    listing = honest(EVENTS)
    changed = audit_pb2.AccessEvent()
    changed.CopyFrom(EVENTS[7])
    changed.basis = "SELF"
    listing[7] = (7, changed, listing[7][2])
    _, verdict = check(signed_head(EVENTS), listing)
    assert (verdict.ok, verdict.first_bad_index) == (False, 7)


async def test_a_changed_event_is_found_by_the_root_and_located_by_consistency() -> None:
    head = signed_head(EVENTS)
    nodes = node_table(EVENTS)  # the server's honest node table, as signed
    for bad in (0, 6, 12):
        tampered = list(EVENTS)
        changed = audit_pb2.AccessEvent()
        changed.CopyFrom(EVENTS[bad])
        changed.action = audit_pb2.ACTION_WRITE
        tampered[bad] = changed
        checking, verdict = check(head, honest(tampered))
        assert (verdict.ok, verdict.problem, verdict.first_bad_index) == (
            False,
            ROOT_MISMATCH,
            None,
        )

        async def prove(size: int) -> list[bytes]:
            return merkle.consistency_proof(size, head.tree_size, nodes)

        assert await first_bad_leaf(checking, prove) == bad


def test_tree_head_checks_against_a_configured_key_and_cosigned_bytes() -> None:
    head = signed_head(EVENTS)
    assert verify_tree_head(head, raw(LOG_KEY))
    assert not verify_tree_head(head, raw(OTHER_KEY))
    assert cosigned_head_bytes(head) == WITNESS_LABEL + signed_head_bytes(head)
    assert event_leaf_hash(EVENTS[0]) == merkle.leaf_hash(leaf_bytes(EVENTS[0]))
