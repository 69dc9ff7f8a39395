"""``healthbank audit verify`` as a library function: the whole audit log checked over gRPC.

Fetches the signed tree head, every entry 0..size-1 (``GetEntries``) and, only to name the
first bad leaf after a root mismatch, consistency proofs; the checking itself is the pure
:class:`healthbank.ledger.verify.LogCheck`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.ledger.verify import ROOT_MISMATCH, LogCheck, Verdict, first_bad_leaf

Metadata = Sequence[tuple[str, str]]


async def verify_audit_log(
    channel: grpc.aio.Channel,
    public_key: bytes,
    metadata: Metadata = (),
    events: list[audit_pb2.AccessEvent] | None = None,
) -> Verdict:
    """Verify the log served on ``channel`` against its current signed tree head.

    ``public_key`` is the raw Ed25519 key the verifier trusts for the log (configured, not
    fetched from the server); ``metadata`` carries the caller's credentials for GetEntries.
    ``events``, if given, receives every event checked, in order (a caller that examines
    the events reads the log once). A failed call is a failed verdict, not an exception.
    """
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    try:
        head = await stub.GetTreeHead(audit_pb2.GetTreeHeadRequest(), metadata=metadata)
        check = LogCheck(head, public_key)
        while check.wants_more:
            response = await stub.GetEntries(
                audit_pb2.GetEntriesRequest(start_index=check.next_index, end_index=head.tree_size),
                metadata=metadata,
            )
            if not response.entries:
                break
            for entry in response.entries:
                if events is not None:
                    events.append(entry.event)
                if not check.add(entry.leaf_index, entry.event, entry.leaf):
                    break
        verdict = check.finish()
        if verdict.problem != ROOT_MISMATCH:
            return verdict

        async def prove(size: int) -> list[bytes]:
            proof = await stub.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(
                    first_tree_size=size, second_tree_size=head.tree_size
                ),
                metadata=metadata,
            )
            return list(proof.proof)

        try:
            first_bad = await first_bad_leaf(check, prove)
        except grpc.aio.AioRpcError:
            return verdict  # the mismatch stands; only its place is unknown
        return Verdict(False, head.tree_size, ROOT_MISMATCH, first_bad)
    except grpc.aio.AioRpcError as error:
        return Verdict(False, 0, f"the audit service answered {error.code().name}")
