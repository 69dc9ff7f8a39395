"""Budgets that do not depend on the machine, held on the real engines: what one Submit
costs Cassandra on the happy path (statements, round trips, lightweight transactions and
SERIAL reads), counted by the driver while ingest, identity and audit run in this process.

The budgets are the counts measured when each was last lowered; a change that sends more
fails here, one that sends fewer should lower the budget (README, "Speed").
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from types import ModuleType

from engine_support import cassandra_env
from repo_paths import REPO

from healthbank.storage.cassandra import StatementCounts

MESSAGES = 5
# Per Submit of a new patient's 3-record FHIR bundle, sent one at a time: what ingest's,
# identity's and the record store's keyspaces receive (statements, round trips, LWTs,
# SERIAL reads), and the lightweight transactions of every keyspace. Audit's statements
# also carry its background head signer's reads, which depend on time, so only its LWTs
# (two per group-committed batch) are held.
OTHER_THAN_AUDIT = StatementCounts(requests=18, statements=33, lwts=6, serial_reads=1)
LWTS_PER_SUBMIT = 8


@functools.cache
def bench_module() -> ModuleType:
    """tools/bench/run.py (a stand-alone script), imported by path once."""
    name = "healthbank_tools_bench_run"
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_a_submit_stays_within_its_cassandra_budget(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    env = {**cassandra_env(engines, keyspace_prefix), "HEALTHBANK_KEY_PROVIDER": "local"}
    by_keyspace = await bench_module().count_statements(env, MESSAGES, "budget")
    audit = by_keyspace.pop(f"{keyspace_prefix}_audit", StatementCounts())
    others = sum(by_keyspace.values(), StatementCounts())
    assert set(by_keyspace) <= {f"{keyspace_prefix}_{c}" for c in ("ingest", "identity", "records")}
    budget = OTHER_THAN_AUDIT
    assert others.requests <= budget.requests * MESSAGES, others
    assert others.statements <= budget.statements * MESSAGES, others
    assert others.lwts <= budget.lwts * MESSAGES, others
    assert others.serial_reads <= budget.serial_reads * MESSAGES, others
    assert others.lwts + audit.lwts <= LWTS_PER_SUBMIT * MESSAGES, (others, audit)
    # Every message reached Cassandra (a budget met by sending nothing would prove nothing).
    assert others.lwts >= MESSAGES and audit.lwts >= MESSAGES
