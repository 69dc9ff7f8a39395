"""tools/bench/tree_heads.py: heads checked as a verifier would, and the lag to cover appends."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from repo_paths import REPO

from healthbank.audit.v1 import audit_pb2
from healthbank.dev.scripts import load_script
from healthbank.ledger.tree_head import tree_head_bytes

HEADS = load_script(REPO / "tools" / "bench" / "tree_heads.py", "healthbank_tools_bench_heads")
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def head(size: int, at_ms: int, key: Ed25519PrivateKey = KEY) -> audit_pb2.SignedTreeHead:
    root = bytes([size % 256]) * 32
    signed = audit_pb2.SignedTreeHead(
        tree_size=size,
        root_hash=root,
        signature=key.sign(tree_head_bytes(size, root, at_ms)),
        public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )
    signed.timestamp.FromMilliseconds(at_ms)
    return signed


def test_the_lag_is_from_each_acknowledgement_to_the_first_head_covering_it() -> None:
    heads = HEADS.verified_sizes([(1_200, head(10, 1_190)), (1_800, head(25, 1_790))])
    appends = [HEADS.Seen(1_000, 10), HEADS.Seen(1_500, 20), HEADS.Seen(1_700, 25)]
    assert HEADS.coverage_lag_ms(appends, heads) == 300  # 20 leaves at 1,500: the 1,800 head


def test_a_head_answered_before_the_acknowledgement_covers_it_at_once() -> None:
    heads = HEADS.verified_sizes([(1_000, head(10, 990))])
    assert HEADS.coverage_lag_ms([HEADS.Seen(1_050, 10)], heads) == 0


def test_an_append_no_head_covered_fails_the_run() -> None:
    heads = HEADS.verified_sizes([(1_000, head(10, 990))])
    with pytest.raises(HEADS.InvalidHeads, match="size 11"):
        HEADS.coverage_lag_ms([HEADS.Seen(900, 11)], heads)


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ([(1_000, head(10, 990)), (1_100, head(12, 1_090, OTHER_KEY))], "does not verify"),
        ([(1_000, head(10, 990)), (1_100, head(9, 1_090))], "shrank"),
        ([], "no tree head"),
    ],
)
def test_heads_a_verifier_would_reject_fail_the_run(answers: list, reason: str) -> None:
    with pytest.raises(HEADS.InvalidHeads, match=reason):
        HEADS.verified_sizes(answers)


def test_a_head_whose_signature_does_not_cover_its_size_fails_the_run() -> None:
    tampered = head(10, 990)
    tampered.tree_size = 11
    with pytest.raises(HEADS.InvalidHeads, match="does not verify"):
        HEADS.verified_sizes([(1_000, tampered)])
