"""Budgets that do not depend on the machine, held on the real engines: what one Submit
costs Cassandra on the happy path (statements, round trips, lightweight transactions and
SERIAL reads), counted by the driver while ingest, identity and audit run in this process.

The budgets are the counts measured when each was last lowered; a change that sends more
fails here, one that sends fewer should lower the budget (README, "Speed").

What is counted: every statement ingest's, identity's and the record store's keyspaces
receive for a Submit sent alone (the claim, the records batch, the pending-audit note and
mark, the counters, identity's reads and inserts). Not counted per message: the audit
keyspace's statements, because its group commit spends one or two LWTs per *batch* of
events (amortised across messages: sent one at a time, each message is its own batch,
which reserves itself with the previous batch's advance, ADR 40) and its
background head signer's reads depend on time; its LWTs are held separately.
"""

from __future__ import annotations

import functools
from types import ModuleType

import pytest
from engine_support import cassandra_env
from repo_paths import REPO

from healthbank.dev.scripts import load_script
from healthbank.storage.cassandra import StatementCounts

MESSAGES = 5
# Per Submit of a 3-record FHIR bundle of a patient the index already knows: one LWT (the
# receipt claim, which carries the audit event) and no SERIAL read (ADR 0019); the rows in
# one unlogged batch, then the facts version, then the commit (ADR 36: no logged batch, so
# no batchlog to wait on); identity answers from its cache of known patients (ADR 24).
# Measured 2026-12-02 after ADR 36: 7 round trips, 23 statements.
KNOWN_PATIENT = StatementCounts(requests=7, statements=23, lwts=1, serial_reads=0)
# A new patient adds identity's conditional inserts (national ID claim, MRN link; the
# person row is a plain write since ADR 39, written with its links copy since ADR 64):
# measured 2026-12-07, 12 round trips, 29 statements, 3 LWTs, no SERIAL read (2026-12-03:
# 14, 30, 3; before ADR 39: 15, 31, 4).
NEW_PATIENT = StatementCounts(requests=12, statements=29, lwts=3, serial_reads=0)
# Audit's group commit, a message alone in its batch: reserve and advance the head.
AUDIT_LWTS_PER_LONE_MESSAGE = 2


@functools.cache
def bench_module() -> ModuleType:
    """tools/bench/run.py (a stand-alone script), imported by path once."""
    return load_script(REPO / "tools" / "bench" / "run.py", "healthbank_tools_bench_run")


@pytest.mark.parametrize(
    ("known_patient", "budget"), [(True, KNOWN_PATIENT), (False, NEW_PATIENT)], ids=["known", "new"]
)
async def test_a_submit_stays_within_its_cassandra_budget(
    engines: dict[str, str], keyspace_prefix: str, known_patient: bool, budget: StatementCounts
) -> None:
    env = {**cassandra_env(engines, keyspace_prefix), "HEALTHBANK_KEY_PROVIDER": "local"}
    by_keyspace = await bench_module().count_statements(
        env, MESSAGES, "budget", known_patient=known_patient
    )
    # Only this test's keyspaces: stores other tests left open in this process may still talk.
    ours = {k: v for k, v in by_keyspace.items() if k.startswith(f"{keyspace_prefix}_")}
    audit = ours.pop(f"{keyspace_prefix}_audit", StatementCounts())
    others = sum(ours.values(), StatementCounts())
    assert set(ours) <= {f"{keyspace_prefix}_{c}" for c in ("ingest", "identity", "records")}
    assert others.requests <= budget.requests * MESSAGES, others
    assert others.statements <= budget.statements * MESSAGES, others
    assert others.lwts <= budget.lwts * MESSAGES, others
    assert others.serial_reads <= budget.serial_reads * MESSAGES, others
    assert audit.lwts <= AUDIT_LWTS_PER_LONE_MESSAGE * MESSAGES, audit
    # Every message reached Cassandra (a budget met by sending nothing would prove nothing):
    # each claimed its receipt, and each was audited.
    assert others.lwts >= MESSAGES and audit.lwts >= MESSAGES
