"""The committee's store on Cassandra (keyspace ``<prefix>_research``); see
:mod:`services.consent.store_research` for the contract.

- ``research_requests``: one row per request; the decision is ``UPDATE ... IF state = 1``
  (a lightweight transaction), so two members' deciding votes store one decision.
- ``request_keys``: (researcher, idempotency key) claimed by ``INSERT ... IF NOT EXISTS``.
- ``request_index``: request ids in one partition, newest first (the committee reviews a
  handful a week; one partition lists them in order).
- ``committee_votes``: ``INSERT ... IF NOT EXISTS`` per (request, member): one vote each.
- ``research_grants``: the grant, with ``spent_micro`` and the set of query ids that spent.
  A spend is a compare-and-set LWT on ``spent_micro`` (``IF spent_micro = <read>``) that adds
  its query id in the same write: concurrent spends serialize through Paxos on one row, a
  loser re-reads and retries, and a retried query finds its id already there. The ledger
  is the grant row itself, so it can never disagree with the budget (ADR 26).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.errors import StorageUnavailable
from services.consent.committee import (
    Choice,
    RequestState,
    ResearchGrant,
    ResearchRequest,
    Vote,
)
from services.consent.store_research import (
    BudgetExhausted,
    findings_from_json,
    findings_to_json,
    study_from_json,
    study_to_json,
)

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS research_requests (
        request_id text PRIMARY KEY, researcher_id text, idempotency_key text, state int,
        create_time timestamp, study text, findings text, decision_reasons text,
        decide_time timestamp
    );
    CREATE TABLE IF NOT EXISTS request_keys (
        researcher_id text, idempotency_key text, request_id text,
        PRIMARY KEY ((researcher_id, idempotency_key))
    );
    CREATE TABLE IF NOT EXISTS request_index (
        bucket int, request_id text, PRIMARY KEY ((bucket), request_id)
    ) WITH CLUSTERING ORDER BY (request_id DESC);
    CREATE TABLE IF NOT EXISTS committee_votes (
        request_id text, member_id text, choice int, comment text, cast_time timestamp,
        PRIMARY KEY ((request_id), member_id)
    );
    CREATE TABLE IF NOT EXISTS research_grants (
        grant_id text PRIMARY KEY, researcher_id text, study text, budget_micro bigint,
        spent_micro bigint, spent_queries set<text>, expire_time timestamp,
        create_time timestamp
    )
    """
]

_REQUEST_COLUMNS = (
    "request_id, researcher_id, idempotency_key, state, create_time, study, findings,"
    " decision_reasons, decide_time"
)
_GRANT_COLUMNS = (
    "grant_id, researcher_id, study, budget_micro, spent_micro, spent_queries, expire_time,"
    " create_time"
)
# Compare-and-set rounds before a spend gives up as contended (each round is one Paxos
# exchange; the black room spends once per query, so contention is a handful of queries).
_SPEND_ROUNDS = 50


class CassandraResearchStore:
    """ResearchStore on Cassandra; see the module docstring for the tables."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database

    async def open(self) -> CassandraResearchStore:
        """Connect (``healthbank migrate`` creates the schema); returns self."""
        await self._db.open()
        return self

    async def add_request(self, request: ResearchRequest) -> ResearchRequest:
        """See ResearchStore.add_request (the key's claim decides which request exists)."""
        rows = await self._db.execute(
            "INSERT INTO request_keys (researcher_id, idempotency_key, request_id)"
            " VALUES (?, ?, ?) IF NOT EXISTS",
            (request.researcher_id, request.idempotency_key, request.request_id),
        )
        claimed_id = request.request_id if rows[0].applied else rows[0].request_id
        if claimed_id == request.request_id:
            await self._db.execute_logged_batch(
                [
                    (
                        f"INSERT INTO research_requests ({_REQUEST_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            request.request_id,
                            request.researcher_id,
                            request.idempotency_key,
                            int(request.state),
                            _millis(request.create_time),
                            study_to_json(request.study),
                            findings_to_json(request.findings),
                            json.dumps(list(request.decision_reasons)),
                            None if request.decide_time is None else _millis(request.decide_time),
                        ),
                    ),
                    (
                        "INSERT INTO request_index (bucket, request_id) VALUES (0, ?)",
                        (request.request_id,),
                    ),
                ]
            )
        stored = await self.get_request(claimed_id)
        if stored is None:
            # The claiming attempt has not written its request yet: the caller retries.
            raise StorageUnavailable(f"cassandra keyspace {self._db.keyspace}: request not settled")
        return stored

    async def get_request(self, request_id: str) -> ResearchRequest | None:
        """See ResearchStore.get_request."""
        rows = await self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM research_requests WHERE request_id = ?",
            (request_id,),
        )
        if not rows:
            return None
        return _request_from_row(rows[0], await self._votes(request_id))

    async def request_for_key(
        self, researcher_id: str, idempotency_key: str
    ) -> ResearchRequest | None:
        """See ResearchStore.request_for_key."""
        rows = await self._db.execute(
            "SELECT request_id FROM request_keys WHERE researcher_id = ? AND idempotency_key = ?",
            (researcher_id, idempotency_key),
        )
        return await self.get_request(rows[0].request_id) if rows else None

    async def list_requests(
        self, limit: int, before_request_id: str | None = None
    ) -> list[ResearchRequest]:
        """See ResearchStore.list_requests (a clustering slice of the index)."""
        ids = await self._db.execute(
            "SELECT request_id FROM request_index WHERE bucket = 0 AND request_id < ? LIMIT ?",
            (before_request_id or "~", limit),
        )
        found = []
        for row in ids:
            request = await self.get_request(row.request_id)
            if request is not None:
                found.append(request)
        return found

    async def _votes(self, request_id: str) -> tuple[Vote, ...]:
        rows = await self._db.execute(
            "SELECT member_id, choice, comment, cast_time FROM committee_votes"
            " WHERE request_id = ?",
            (request_id,),
        )
        votes = [
            Vote(
                member_id=row.member_id,
                choice=Choice(row.choice),
                comment=row.comment,
                cast_time=_utc(row.cast_time),
            )
            for row in rows
        ]
        return tuple(sorted(votes, key=lambda vote: (vote.cast_time, vote.member_id)))

    async def add_vote(self, request_id: str, vote: Vote) -> bool:
        """See ResearchStore.add_vote."""
        rows = await self._db.execute(
            "INSERT INTO committee_votes (request_id, member_id, choice, comment, cast_time)"
            " VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
            (request_id, vote.member_id, int(vote.choice), vote.comment, _millis(vote.cast_time)),
        )
        return bool(rows[0].applied)

    async def decide(self, decided: ResearchRequest, grant: ResearchGrant | None) -> bool:
        """See ResearchStore.decide: the grant first (``IF NOT EXISTS``), then the decision's
        LWT. A grant whose request was not approved is never served (the desk checks the
        request), so a lost race or a crash between the two writes grants nothing."""
        assert decided.decide_time is not None
        if grant is not None:
            await self._db.execute(
                f"INSERT INTO research_grants ({_GRANT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                (
                    grant.grant_id,
                    grant.researcher_id,
                    study_to_json(grant.study),
                    grant.budget_micro,
                    grant.spent_micro,
                    set(),
                    _millis(grant.expire_time),
                    _millis(grant.create_time),
                ),
            )
        rows = await self._db.execute(
            "UPDATE research_requests SET state = ?, decision_reasons = ?, decide_time = ?"
            " WHERE request_id = ? IF state = ?",
            (
                int(decided.state),
                json.dumps(list(decided.decision_reasons)),
                _millis(decided.decide_time),
                decided.request_id,
                int(RequestState.UNDER_REVIEW),
            ),
        )
        return bool(rows[0].applied)

    async def get_grant(self, grant_id: str) -> ResearchGrant | None:
        """See ResearchStore.get_grant."""
        rows = await self._db.execute(
            f"SELECT {_GRANT_COLUMNS} FROM research_grants WHERE grant_id = ?", (grant_id,)
        )
        return _grant_from_row(rows[0]) if rows else None

    async def spend(self, grant_id: str, query_id: str, micro: int) -> ResearchGrant:
        """See ResearchStore.spend: compare-and-set on ``spent_micro``, retried on a race."""
        for _ in range(_SPEND_ROUNDS):
            grant = await self._serial_grant(grant_id)
            if grant is None:
                raise KeyError(grant_id)
            if query_id in grant.spent_queries:
                return grant
            if micro > grant.remaining_micro:
                raise BudgetExhausted(grant_id)
            rows = await self._db.execute(
                "UPDATE research_grants SET spent_micro = ?, spent_queries = spent_queries + ?"
                " WHERE grant_id = ? IF spent_micro = ?",
                (grant.spent_micro + micro, {query_id}, grant_id, grant.spent_micro),
            )
            if rows[0].applied:
                return ResearchGrant(
                    grant_id=grant.grant_id,
                    researcher_id=grant.researcher_id,
                    study=grant.study,
                    budget_micro=grant.budget_micro,
                    spent_micro=grant.spent_micro + micro,
                    expire_time=grant.expire_time,
                    create_time=grant.create_time,
                    spent_queries=grant.spent_queries | {query_id},
                )
        raise StorageUnavailable(f"cassandra keyspace {self._db.keyspace}: budget contended")

    async def _serial_grant(self, grant_id: str) -> ResearchGrant | None:
        # A stale read only costs a failed compare-and-set and another round.
        rows = await self._db.execute(
            f"SELECT {_GRANT_COLUMNS} FROM research_grants WHERE grant_id = ?", (grant_id,)
        )
        return _grant_from_row(rows[0]) if rows else None

    async def check(self) -> None:
        """See ResearchStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See ResearchStore.close."""
        await self._db.close()


def _request_from_row(row: Any, votes: tuple[Vote, ...]) -> ResearchRequest:
    return ResearchRequest(
        request_id=row.request_id,
        researcher_id=row.researcher_id,
        idempotency_key=row.idempotency_key,
        study=study_from_json(row.study),
        state=RequestState(row.state),
        create_time=_utc(row.create_time),
        findings=findings_from_json(row.findings),
        votes=votes,
        decision_reasons=tuple(json.loads(row.decision_reasons)),
        decide_time=None if row.decide_time is None else _utc(row.decide_time),
    )


def _grant_from_row(row: Any) -> ResearchGrant:
    return ResearchGrant(
        grant_id=row.grant_id,
        researcher_id=row.researcher_id,
        study=study_from_json(row.study),
        budget_micro=row.budget_micro,
        spent_micro=row.spent_micro,
        expire_time=_utc(row.expire_time),
        create_time=_utc(row.create_time),
        spent_queries=frozenset(row.spent_queries or ()),
    )


def _millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _utc(moment: datetime) -> datetime:
    """The driver returns naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
