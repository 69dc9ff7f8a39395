"""Verifying the whole audit log against a signed tree head, from the events themselves.

Pure: no I/O, no grpc. A driver (``healthbank.rpc.audit_verify``) feeds :class:`LogCheck`
the log's entries in order; the check trusts nothing the server computed except what the
signed tree head commits to:

- the head's signature must verify with the public key the verifier was configured with;
- the entries must be exactly leaf indexes ``0 .. tree_size - 1``, in order (a deleted,
  duplicated or reordered entry is named by its sequence number);
- each leaf hash is recomputed from the event's contents (:func:`event_leaf_hash`), never
  taken from the server, and the Merkle root rebuilt from them must equal the signed root.

When only the root differs, :func:`first_bad_leaf` names the first leaf not proven to be as
signed: every leaf before it is, by an RFC 6962 consistency proof from the rebuilt prefix
root to the signed root (which the server cannot forge for a prefix that differs from what
it signed). A changed event is named exactly; rewritten stored hashes spoil the proofs of
their neighbours too, so the leaf named may be a sibling before the rewritten one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import leaf_bytes, verify_tree_head


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying the log; ``first_bad_index`` names the first bad leaf."""

    ok: bool
    tree_size: int
    problem: str = ""
    first_bad_index: int | None = None

    def line(self) -> str:
        """The one-line verdict ``healthbank audit verify`` prints."""
        if self.ok:
            return (
                f"audit log OK: {self.tree_size} events recomputed and match the signed tree head"
            )
        index = self.first_bad_index
        where = "" if index is None else f" at sequence number {index}"
        return f"audit log FAILED{where}: {self.problem}"


ROOT_MISMATCH = (
    "the Merkle root rebuilt from the events differs from the signed root"
    " (the events before this one are proven as signed)"
)


class LogCheck:
    """Checks the entries of one signed tree head, fed in log order."""

    def __init__(self, head: audit_pb2.SignedTreeHead, public_key: bytes) -> None:
        """Check against ``head``, whose signature must verify with ``public_key``."""
        self.head = head
        self._builder = merkle.RootBuilder()
        # The rebuilt root of every prefix, for locating the first bad leaf on a mismatch.
        self._prefix_roots: list[bytes] = []
        self.failure: Verdict | None = None
        if not verify_tree_head(head, public_key):
            self.failure = Verdict(
                False,
                head.tree_size,
                "the tree head's signature does not verify with the configured public key",
            )

    @property
    def next_index(self) -> int:
        """The leaf index the next entry must have."""
        return self._builder.size

    @property
    def wants_more(self) -> bool:
        """True while no failure is found and entries are still expected."""
        return self.failure is None and self.next_index < self.head.tree_size

    def add(self, leaf_index: int, event: audit_pb2.AccessEvent, leaf: bytes) -> bool:
        """Check the next listed entry; False once the log has failed."""
        if self.failure is not None:
            return False
        expected = self.next_index
        if expected >= self.head.tree_size:
            return self._fail(expected, "the listing has more events than the signed tree size")
        if leaf_index > expected:
            return self._fail(expected, "the event is missing from the listing")
        if leaf_index < expected:
            return self._fail(expected, f"event {leaf_index} is listed again or out of order")
        canonical = leaf_bytes(event)
        if canonical != leaf:
            return self._fail(expected, "the event's contents do not match its stored bytes")
        self._builder.append(merkle.leaf_hash(canonical))
        self._prefix_roots.append(self._builder.root())
        return True

    def finish(self) -> Verdict:
        """The verdict once the listing ended (ROOT_MISMATCH has no index yet)."""
        if self.failure is not None:
            return self.failure
        if self.next_index < self.head.tree_size:
            return Verdict(
                False,
                self.head.tree_size,
                "the event is missing from the listing (it ends early)",
                self.next_index,
            )
        if self._builder.root() != self.head.root_hash:
            return Verdict(False, self.head.tree_size, ROOT_MISMATCH)
        return Verdict(True, self.head.tree_size)

    def prefix_root(self, size: int) -> bytes:
        """The root rebuilt from the first ``size`` (>= 1) events."""
        return self._prefix_roots[size - 1]

    def _fail(self, index: int, problem: str) -> bool:
        self.failure = Verdict(False, self.head.tree_size, problem, index)
        return False


ConsistencyProver = Callable[[int], Awaitable[Sequence[bytes]]]
"""Fetches the consistency proof from a tree size to the checked head's size."""


async def first_bad_leaf(check: LogCheck, prove: ConsistencyProver) -> int:
    """After a ROOT_MISMATCH: the first leaf not proven to be as signed.

    Binary search over prefix sizes m: the rebuilt root of the first m events is proven a
    prefix of the signed tree when the server's consistency proof verifies. The search
    ends at a size m whose prefix m - 1 was proven (or is empty) and whose prefix m was
    not: leaves before m - 1 are as signed, leaf m - 1 is the first bad one.
    """
    head = check.head
    low, high = 1, head.tree_size  # high is inconsistent: the full roots differ
    while low < high:
        middle = (low + high) // 2
        proof = await prove(middle)
        if merkle.verify_consistency(
            middle, head.tree_size, check.prefix_root(middle), head.root_hash, proof
        ):
            low = middle + 1
        else:
            high = middle
    return high - 1
