"""The black room's flow (ADR 26): a researcher's query under a committee grant.

RunAggregate: the grant (from consent) → the caller holds it, it has not expired, the
field and groupings are within it → spend the query's epsilon (consent's atomic ledger;
nothing is computed unless it is spent) → build the extract → record, once per grant, in
each cohort person's own access log that their data is used in aggregates → run the exact
query in a thread → suppress small cells, add noise → audit the run → release.

Synthesize: the grant allows synthetic output → build the extract → fit a Gaussian copula
and draw (a thread) → utility and privacy reports; a failed privacy report releases
nothing → audit → release.

No gRPC here: consent and the audit log are reached through the small protocols below
(adapters in :mod:`services.ai_alert.clients`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from healthbank.contracts.principal import Principal
from healthbank.contracts.research import EXTRACT_FIELDS, research_grant_name
from healthbank.records import RecordStore
from services.ai_alert import black_room, synthesis
from services.ai_alert.aggregates import AggregateKind, AggregateSpec, ReleasedCell, release
from services.ai_alert.research_extract import Cohort, Extract, build_extract

# Records read for one extract; more means the cohort needs the Spark engine (ADR 26).
MAX_EXTRACT_RECORDS = 2_000_000
OUTPUT_SYNTHETIC = 2
STEP_AGGREGATE = "AGGREGATE_RUN"
STEP_SYNTHESIZED = "COHORT_SYNTHESIZED"
USE_AGGREGATES = "AGGREGATES"
USE_SYNTHETIC = "SYNTHETIC_COHORT"


@dataclass(frozen=True)
class GrantView:
    """What the black room needs of a research grant."""

    grant_id: str
    researcher_id: str
    code_system: str
    codes: frozenset[str]
    fields: tuple[str, ...]
    groupings: tuple[str, ...]
    output_kind: int
    period_start: datetime
    period_end: datetime
    expire_time: datetime
    create_time: datetime


class Grants(Protocol):
    """Consent's research grants and their budget ledger."""

    async def grant(self, grant_id: str) -> GrantView:
        """The grant (raises the downstream error when consent refuses or fails)."""
        ...

    async def spend(self, grant_id: str, epsilon: float, query_id: str) -> float:
        """Spend ``epsilon`` for ``query_id`` (once); the budget left."""
        ...


class ResearchLog(Protocol):
    """The audit log, for the black room's own steps."""

    async def research_step(self, actor: Principal, grant_id: str, step: str) -> None:
        """Record ``step`` of ``actor`` under the grant's research ledger token."""
        ...

    async def cohort_used(
        self, actor: Principal, grant: GrantView, person_tokens: frozenset[str], use: str
    ) -> None:
        """Record in each person's own access log, once per grant, that their data is used
        by the grant's research as ``use`` (AGGREGATES or SYNTHETIC_COHORT)."""
        ...


class ResearchRefused(Exception):
    """The query falls outside the grant: PERMISSION_DENIED (``field`` names the request
    field) or, for ``precondition``, FAILED_PRECONDITION."""

    def __init__(self, reason: str, message: str, *, precondition: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.precondition = precondition


@dataclass(frozen=True)
class AggregateOutcome:
    """A released aggregate."""

    cells: list[ReleasedCell]
    mechanism: str
    epsilon: float
    epsilon_remaining: float
    min_cell_size: int


class ResearchFlow:
    """Runs researchers' queries; one instance per ai-alert process."""

    def __init__(
        self,
        *,
        records: RecordStore,
        grants: Grants,
        log: ResearchLog,
        now: Callable[[], datetime],
        min_cell_size: int,
        default_epsilon: float,
    ) -> None:
        self._records = records
        self._grants = grants
        self._log = log
        self._now = now
        self._min_cell_size = min_cell_size
        self._default_epsilon = default_epsilon

    async def aggregate(
        self,
        researcher: Principal,
        grant_id: str,
        spec: AggregateSpec,
        epsilon: float,
        query_id: str,
    ) -> AggregateOutcome:
        """Run ``spec`` under the grant, spending ``epsilon`` (0: the default) first."""
        grant = await self._usable_grant(researcher, grant_id)
        if spec.field and spec.field not in grant.fields:
            raise ResearchRefused("FIELD_NOT_GRANTED", "the grant does not include this field")
        outside = [name for name in spec.group_by if name not in grant.groupings]
        if outside:
            raise ResearchRefused(
                "GROUPING_NOT_GRANTED",
                "the grant does not allow grouping by: " + ", ".join(outside),
            )
        epsilon = epsilon or self._default_epsilon
        remaining = await self._grants.spend(grant_id, epsilon, query_id)
        extract = await self._extract(grant)
        await self._log.cohort_used(researcher, grant, extract.subjects, USE_AGGREGATES)
        cells, mechanism = await asyncio.to_thread(
            _run_and_release, extract, spec, epsilon, self._min_cell_size
        )
        kind = AggregateKind(spec.kind).name
        await self._log.research_step(
            researcher,
            grant_id,
            f"{STEP_AGGREGATE} {research_grant_name(grant_id)} {kind} {epsilon:g} query {query_id}",
        )
        return AggregateOutcome(cells, mechanism, epsilon, remaining, self._min_cell_size)

    async def synthesize(
        self, researcher: Principal, grant_id: str, row_count: int, parquet: bool, seed: int
    ) -> synthesis.SyntheticRelease:
        """A synthetic cohort of the grant's extract with its reports."""
        grant = await self._usable_grant(researcher, grant_id)
        if grant.output_kind != OUTPUT_SYNTHETIC:
            raise ResearchRefused(
                "SYNTHETIC_NOT_GRANTED", "the grant allows aggregates only, not synthetic data"
            )
        extract = await self._extract(grant)
        numeric = [name for name in grant.fields if not EXTRACT_FIELDS[name].dimension]
        if len(extract.rows) < synthesis.MIN_COHORT or not numeric:
            raise ResearchRefused(
                "COHORT_TOO_SMALL",
                f"a synthetic cohort needs at least {synthesis.MIN_COHORT} persons and a "
                "numeric field",
                precondition=True,
            )
        await self._log.cohort_used(researcher, grant, extract.subjects, USE_SYNTHETIC)
        released = await asyncio.to_thread(
            synthesis.synthesize, extract, row_count or len(extract.rows), seed, parquet
        )
        if not released.privacy.passed:
            raise ResearchRefused(
                "PRIVACY_CHECK_FAILED",
                "the synthetic cohort failed its privacy report; nothing is released",
                precondition=True,
            )
        await self._log.research_step(
            researcher,
            grant_id,
            f"{STEP_SYNTHESIZED} {research_grant_name(grant_id)} rows {released.row_count}",
        )
        return released

    async def _usable_grant(self, researcher: Principal, grant_id: str) -> GrantView:
        grant = await self._grants.grant(grant_id)
        if grant.researcher_id != researcher.subject:
            raise ResearchRefused("NOT_GRANT_HOLDER", "the grant belongs to another researcher")
        if self._now() >= grant.expire_time:
            raise ResearchRefused(
                "RESEARCH_GRANT_EXPIRED", "the research grant has expired", precondition=True
            )
        return grant

    async def _extract(self, grant: GrantView) -> Extract:
        records = await self._records.list_effective_before(grant.period_end, MAX_EXTRACT_RECORDS)
        if len(records) >= MAX_EXTRACT_RECORDS:
            raise ResearchRefused(
                "EXTRACT_TOO_LARGE",
                "the cohort's records exceed the embedded engine; run it on Spark",
                precondition=True,
            )
        cohort = Cohort(
            code_system=grant.code_system,
            codes=grant.codes,
            period_start=grant.period_start,
            period_end=grant.period_end,
            fields=grant.fields,
        )
        return await asyncio.to_thread(build_extract, records, cohort)


def _run_and_release(
    extract: Extract, spec: AggregateSpec, epsilon: float, min_cell_size: int
) -> tuple[list[ReleasedCell], str]:
    connection = black_room.duckdb_table(extract)
    try:
        cells = black_room.run_duckdb(connection, spec)
        values = (
            black_room.group_values(connection, spec)
            if spec.kind == AggregateKind.QUANTILES
            else None
        )
    finally:
        connection.close()
    return release(spec, cells, epsilon, min_cell_size, values)
