"""What the data security committee persists: research requests, votes, grants and their
privacy budgets (ADR 26).

:class:`ResearchStore` is the interface; :class:`SqliteResearchStore` keeps ``research.db``
in the data dir, :class:`~services.consent.store_research_cassandra.CassandraResearchStore`
the keyspace ``<prefix>_research``. The contract suite
(tests/contract/test_research_store_contract.py) holds both to the same behaviour:

- one request per (researcher, idempotency key), however many retries race;
- one vote per member per request (the first stays);
- a decision is stored once: only over a request still under review;
- a budget spend is atomic and idempotent by query id: concurrent spends never take the
  budget below zero, and a retried query spends once.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from healthbank.records import from_micros, to_micros
from healthbank.storage.sqlite import SqliteDatabase
from services.consent.committee import (
    Choice,
    Finding,
    OutputKind,
    RequestState,
    ResearchGrant,
    ResearchRequest,
    Study,
    Vote,
)


class BudgetExhausted(Exception):
    """The spend would take the grant's budget below zero."""


class ResearchStore(Protocol):
    """Persistence of the committee's requests, votes and grants."""

    async def add_request(self, request: ResearchRequest) -> ResearchRequest:
        """Store ``request`` unless its researcher already used its idempotency key; the
        stored request (``request`` or the first one)."""
        ...

    async def get_request(self, request_id: str) -> ResearchRequest | None:
        """The request with its votes, or None."""
        ...

    async def request_for_key(
        self, researcher_id: str, idempotency_key: str
    ) -> ResearchRequest | None:
        """The request the researcher's idempotency key created, or None."""
        ...

    async def list_requests(
        self, limit: int, before_request_id: str | None = None
    ) -> list[ResearchRequest]:
        """Up to ``limit`` requests, newest first, older than ``before_request_id``."""
        ...

    async def add_vote(self, request_id: str, vote: Vote) -> bool:
        """Record ``vote`` unless its member already voted; True if it was recorded."""
        ...

    async def decide(self, decided: ResearchRequest, grant: ResearchGrant | None) -> bool:
        """Store the decision (state, reasons, decide time) of a request still under review,
        and its grant; False (nothing written) when it was already decided."""
        ...

    async def get_grant(self, grant_id: str) -> ResearchGrant | None:
        """The grant with what has been spent of its budget, or None."""
        ...

    async def spend(self, grant_id: str, query_id: str, micro: int) -> ResearchGrant:
        """Spend ``micro`` of the grant's budget for ``query_id`` (once per query id).

        Raises BudgetExhausted when the rest of the budget is smaller, KeyError when there
        is no such grant.
        """
        ...

    async def check(self) -> None:
        """Return if the store is usable; raise if it is not."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE research_requests (
        request_id TEXT PRIMARY KEY,
        researcher_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        state INTEGER NOT NULL,
        create_time INTEGER NOT NULL,
        study TEXT NOT NULL,
        findings TEXT NOT NULL,
        decision_reasons TEXT NOT NULL,
        decide_time INTEGER
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX research_requests_by_key
        ON research_requests (researcher_id, idempotency_key);
    CREATE TABLE committee_votes (
        request_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        choice INTEGER NOT NULL,
        comment TEXT NOT NULL,
        cast_time INTEGER NOT NULL,
        PRIMARY KEY (request_id, member_id)
    ) WITHOUT ROWID;
    CREATE TABLE research_grants (
        grant_id TEXT PRIMARY KEY,
        researcher_id TEXT NOT NULL,
        study TEXT NOT NULL,
        budget_micro INTEGER NOT NULL,
        spent_micro INTEGER NOT NULL,
        expire_time INTEGER NOT NULL,
        create_time INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE budget_spends (
        grant_id TEXT NOT NULL,
        query_id TEXT NOT NULL,
        micro INTEGER NOT NULL,
        PRIMARY KEY (grant_id, query_id)
    ) WITHOUT ROWID
    """
]

_REQUEST_COLUMNS = (
    "request_id, researcher_id, idempotency_key, state, create_time, study, findings,"
    " decision_reasons, decide_time"
)
_GRANT_COLUMNS = (
    "grant_id, researcher_id, study, budget_micro, spent_micro, expire_time, create_time"
)


class SqliteResearchStore:
    """ResearchStore on an embedded SQLite file (writes are serialized transactions)."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteResearchStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def add_request(self, request: ResearchRequest) -> ResearchRequest:
        """See ResearchStore.add_request."""

        def work(connection: sqlite3.Connection) -> str:
            row = connection.execute(
                "SELECT request_id FROM research_requests"
                " WHERE researcher_id = ? AND idempotency_key = ?",
                (request.researcher_id, request.idempotency_key),
            ).fetchone()
            if row is not None:
                return str(row["request_id"])
            connection.execute(
                f"INSERT INTO research_requests ({_REQUEST_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.request_id,
                    request.researcher_id,
                    request.idempotency_key,
                    int(request.state),
                    to_micros(request.create_time),
                    study_to_json(request.study),
                    findings_to_json(request.findings),
                    json.dumps(list(request.decision_reasons)),
                    None if request.decide_time is None else to_micros(request.decide_time),
                ),
            )
            return request.request_id

        stored_id = await self._db.write(work)
        stored = await self.get_request(stored_id)
        assert stored is not None
        return stored

    async def get_request(self, request_id: str) -> ResearchRequest | None:
        """See ResearchStore.get_request."""

        def work(connection: sqlite3.Connection) -> ResearchRequest | None:
            row = connection.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM research_requests WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            return _request_from_row(row, _votes(connection, request_id))

        return await self._db.read(work)

    async def request_for_key(
        self, researcher_id: str, idempotency_key: str
    ) -> ResearchRequest | None:
        """See ResearchStore.request_for_key."""
        row = await self._db.read(
            lambda connection: connection.execute(
                "SELECT request_id FROM research_requests"
                " WHERE researcher_id = ? AND idempotency_key = ?",
                (researcher_id, idempotency_key),
            ).fetchone()
        )
        return None if row is None else await self.get_request(row["request_id"])

    async def list_requests(
        self, limit: int, before_request_id: str | None = None
    ) -> list[ResearchRequest]:
        """See ResearchStore.list_requests."""

        def work(connection: sqlite3.Connection) -> list[ResearchRequest]:
            rows = connection.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM research_requests WHERE request_id < ?"
                " ORDER BY request_id DESC LIMIT ?",
                (before_request_id or "~", limit),
            ).fetchall()
            return [_request_from_row(row, _votes(connection, row["request_id"])) for row in rows]

        return await self._db.read(work)

    async def add_vote(self, request_id: str, vote: Vote) -> bool:
        """See ResearchStore.add_vote."""

        def work(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO committee_votes"
                " (request_id, member_id, choice, comment, cast_time) VALUES (?, ?, ?, ?, ?)",
                (
                    request_id,
                    vote.member_id,
                    int(vote.choice),
                    vote.comment,
                    to_micros(vote.cast_time),
                ),
            )
            return cursor.rowcount == 1

        return await self._db.write(work)

    async def decide(self, decided: ResearchRequest, grant: ResearchGrant | None) -> bool:
        """See ResearchStore.decide (one transaction: the decision and its grant)."""
        assert decided.decide_time is not None

        def work(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE research_requests SET state = ?, decision_reasons = ?, decide_time = ?"
                " WHERE request_id = ? AND state = ?",
                (
                    int(decided.state),
                    json.dumps(list(decided.decision_reasons)),
                    to_micros(decided.decide_time),  # type: ignore[arg-type]
                    decided.request_id,
                    int(RequestState.UNDER_REVIEW),
                ),
            )
            if cursor.rowcount != 1:
                return False
            if grant is not None:
                connection.execute(
                    f"INSERT INTO research_grants ({_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        grant.grant_id,
                        grant.researcher_id,
                        study_to_json(grant.study),
                        grant.budget_micro,
                        grant.spent_micro,
                        to_micros(grant.expire_time),
                        to_micros(grant.create_time),
                    ),
                )
            return True

        return await self._db.write(work)

    async def get_grant(self, grant_id: str) -> ResearchGrant | None:
        """See ResearchStore.get_grant."""
        return await self._db.read(lambda connection: _grant(connection, grant_id))

    async def spend(self, grant_id: str, query_id: str, micro: int) -> ResearchGrant:
        """See ResearchStore.spend (one serialized transaction: check, record, add)."""

        def work(connection: sqlite3.Connection) -> ResearchGrant:
            grant = _grant(connection, grant_id)
            if grant is None:
                raise KeyError(grant_id)
            if query_id in grant.spent_queries:
                return grant
            if micro > grant.remaining_micro:
                raise BudgetExhausted(grant_id)
            connection.execute(
                "INSERT INTO budget_spends (grant_id, query_id, micro) VALUES (?, ?, ?)",
                (grant_id, query_id, micro),
            )
            connection.execute(
                "UPDATE research_grants SET spent_micro = spent_micro + ? WHERE grant_id = ?",
                (micro, grant_id),
            )
            refreshed = _grant(connection, grant_id)
            assert refreshed is not None
            return refreshed

        return await self._db.write(work)

    async def check(self) -> None:
        """See ResearchStore.check."""
        await self._db.read(lambda connection: connection.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See ResearchStore.close."""
        await self._db.close()


def _votes(connection: sqlite3.Connection, request_id: str) -> tuple[Vote, ...]:
    rows = connection.execute(
        "SELECT member_id, choice, comment, cast_time FROM committee_votes"
        " WHERE request_id = ? ORDER BY cast_time, member_id",
        (request_id,),
    ).fetchall()
    return tuple(
        Vote(
            member_id=row["member_id"],
            choice=Choice(row["choice"]),
            comment=row["comment"],
            cast_time=from_micros(row["cast_time"]),
        )
        for row in rows
    )


def _grant(connection: sqlite3.Connection, grant_id: str) -> ResearchGrant | None:
    row = connection.execute(
        f"SELECT {_GRANT_COLUMNS} FROM research_grants WHERE grant_id = ?", (grant_id,)
    ).fetchone()
    if row is None:
        return None
    queries = connection.execute(
        "SELECT query_id FROM budget_spends WHERE grant_id = ?", (grant_id,)
    ).fetchall()
    return ResearchGrant(
        grant_id=row["grant_id"],
        researcher_id=row["researcher_id"],
        study=study_from_json(row["study"]),
        budget_micro=row["budget_micro"],
        spent_micro=row["spent_micro"],
        expire_time=from_micros(row["expire_time"]),
        create_time=from_micros(row["create_time"]),
        spent_queries=frozenset(query["query_id"] for query in queries),
    )


def _request_from_row(row: Any, votes: tuple[Vote, ...]) -> ResearchRequest:
    decide_time = row["decide_time"]
    return ResearchRequest(
        request_id=row["request_id"],
        researcher_id=row["researcher_id"],
        idempotency_key=row["idempotency_key"],
        study=study_from_json(row["study"]),
        state=RequestState(row["state"]),
        create_time=from_micros(row["create_time"]),
        findings=findings_from_json(row["findings"]),
        votes=votes,
        decision_reasons=tuple(json.loads(row["decision_reasons"])),
        decide_time=None if decide_time is None else from_micros(decide_time),
    )


def study_to_json(study: Study) -> str:
    """A study as stored (times in microseconds since the epoch)."""
    return json.dumps(
        {
            "purpose": study.purpose,
            "protocol": study.protocol,
            "ethics_approval_reference": study.ethics_approval_reference,
            "code_system": study.code_system,
            "codes": list(study.codes),
            "fields": list(study.fields),
            "groupings": list(study.groupings),
            "output_kind": int(study.output_kind),
            "period_start": to_micros(study.period_start),
            "period_end": to_micros(study.period_end),
            "epsilon_budget": study.epsilon_budget,
            "access_until": to_micros(study.access_until),
        },
        sort_keys=True,
    )


def study_from_json(raw: str) -> Study:
    """Inverse of study_to_json."""
    stored = json.loads(raw)
    return Study(
        purpose=stored["purpose"],
        protocol=stored["protocol"],
        ethics_approval_reference=stored["ethics_approval_reference"],
        code_system=stored["code_system"],
        codes=tuple(stored["codes"]),
        fields=tuple(stored["fields"]),
        groupings=tuple(stored["groupings"]),
        output_kind=OutputKind(stored["output_kind"]),
        period_start=from_micros(stored["period_start"]),
        period_end=from_micros(stored["period_end"]),
        epsilon_budget=stored["epsilon_budget"],
        access_until=from_micros(stored["access_until"]),
    )


def findings_to_json(findings: tuple[Finding, ...]) -> str:
    """Screening findings as stored."""
    return json.dumps([[finding.rule, finding.detail] for finding in findings])


def findings_from_json(raw: str) -> tuple[Finding, ...]:
    """Inverse of findings_to_json."""
    return tuple(Finding(rule, detail) for rule, detail in json.loads(raw))
