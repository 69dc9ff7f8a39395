"""The black room's de-identified research extract (ADR 26): one row per cohort person.

Built in process from record *metadata* only (hospital, category, code, effective time):
the sealed payloads are never opened for research, so no name, ID number, phone or free
text can reach the extract. A person's token is replaced by a pseudonymous key (a keyed
hash under a key made for this extract and then dropped), every date is shifted by a
per-person offset of up to :data:`MAX_SHIFT_DAYS` days (intervals keep their length) and
coarsened to year and quarter, and each numeric field is clamped to the catalog's bounds
(:data:`healthbank.contracts.research.EXTRACT_FIELDS`) so one person's contribution to a
sum is bounded. Only the grant's fields are columns.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from healthbank.contracts.research import EXTRACT_FIELDS
from healthbank.records import StoredRecord

MAX_SHIFT_DAYS = 15

_CONDITION, _OBSERVATION, _MEDICATION, _ENCOUNTER = 2, 4, 6, 7
_COUNTED = {
    "condition_count": _CONDITION,
    "observation_count": _OBSERVATION,
    "medication_count": _MEDICATION,
    "encounter_count": _ENCOUNTER,
}


@dataclass(frozen=True)
class Cohort:
    """Who a grant studies and what it may see of them."""

    code_system: str
    codes: frozenset[str]
    period_start: datetime
    period_end: datetime
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Extract:
    """The extract's columns (``person_key`` first, then the grant's fields) and rows, and
    the person tokens of its rows (``subjects``: never a column, never released; the black
    room records each person's research use in their own access log with them)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | int, ...], ...]
    subjects: frozenset[str] = field(default_factory=frozenset)

    def column_types(self) -> dict[str, str]:
        """SQL type of each column (VARCHAR for dimensions and the key, BIGINT otherwise)."""
        return {
            column: (
                "VARCHAR"
                if column == "person_key" or EXTRACT_FIELDS[column].dimension
                else "BIGINT"
            )
            for column in self.columns
        }


def build_extract(
    records: Iterable[StoredRecord], cohort: Cohort, key: bytes | None = None
) -> Extract:
    """The extract of ``cohort`` from ``records`` (any order, any persons).

    ``key`` keys the pseudonyms and date shifts; by default a fresh random one, so keys
    of two extracts never link (tests pass one to get a repeatable extract).
    """
    key = key or secrets.token_bytes(32)
    by_person: dict[str, list[StoredRecord]] = {}
    for record in records:
        if cohort.period_start <= record.effective_time < cohort.period_end:
            by_person.setdefault(record.person_token, []).append(record)
    columns = ("person_key", *cohort.fields)
    rows = []
    subjects = set()
    for person_token, held in by_person.items():
        cohort_records = sorted(
            (
                record
                for record in held
                if record.code_system == cohort.code_system and record.code in cohort.codes
            ),
            key=lambda record: (record.effective_time, record.record_id),
        )
        if not cohort_records:
            continue
        row = _person_row(person_token, held, cohort_records[0], key)
        rows.append(tuple(row[column] for column in columns))
        subjects.add(person_token)
    rows.sort()
    return Extract(columns, tuple(rows), frozenset(subjects))


def _person_row(
    person_token: str, held: Sequence[StoredRecord], first: StoredRecord, key: bytes
) -> dict[str, str | int]:
    digest = hmac.new(key, person_token.encode(), hashlib.sha256).digest()
    shift = timedelta(days=int.from_bytes(digest[:4]) % (2 * MAX_SHIFT_DAYS + 1) - MAX_SHIFT_DAYS)
    first_seen = first.effective_time + shift
    times = [record.effective_time for record in held]
    values: dict[str, str | int] = {
        "person_key": digest[4:16].hex(),
        "hospital": first.source_hospital,
        "cohort_code": first.code,
        "first_year": str(first_seen.year),
        "first_quarter": str((first_seen.month - 1) // 3 + 1),
        "record_count": len(held),
        "span_days": (max(times) - min(times)).days,
    }
    for counted, category in _COUNTED.items():
        values[counted] = sum(record.category == category for record in held)
    for name, column in EXTRACT_FIELDS.items():
        if not column.dimension:
            values[name] = min(max(int(values[name]), column.lower), column.upper)
    return values
