"""A research extract to query in tests: record metadata of a seeded city, built as the black
room builds it (ADR 26), with a fixed pseudonym key so it is the same every run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from healthbank.records import StoredRecord
from services.ai_alert.research_extract import Cohort, Extract, build_extract

ICD10 = "http://hl7.org/fhir/sid/icd-10"
START = datetime(2024, 1, 1, tzinfo=UTC)
HOSPITALS = ("city-general", "east-er", "north", "small-clinic")
COHORT = Cohort(
    code_system=ICD10,
    codes=frozenset({"J10.1", "J11.1"}),
    period_start=START,
    period_end=START + timedelta(days=1000),
    fields=(
        "hospital",
        "cohort_code",
        "first_year",
        "record_count",
        "span_days",
        "condition_count",
    ),
)


def city_records(persons: int = 400, seed: int = 4) -> list[StoredRecord]:
    """Records of ``persons`` people: flu and diabetes codes, four categories, 2024-2026."""
    rng = random.Random(seed)
    records = []
    for person in range(persons):
        hospital = HOSPITALS[0 if person % 50 == 0 else rng.randrange(3) + (person % 97 == 0)]
        for index in range(rng.randint(1, 12)):
            records.append(
                StoredRecord(
                    record_id=f"{person:010d}{index:016d}",
                    person_token=f"{person:064x}",
                    source_hospital=hospital,
                    source_format=1,
                    message_id=f"m-{person}",
                    source_version="",
                    content_hash="h",
                    category=rng.choice([2, 4, 6, 7]),
                    code_system=ICD10,
                    code=rng.choice(["J10.1", "J11.1", "E11.9"]),
                    code_display="",
                    effective_time=START + timedelta(days=rng.randint(0, 700)),
                    status="final",
                    sealed_payload=b"",
                )
            )
    return records


def city_extract() -> Extract:
    """The seeded city's influenza extract."""
    return build_extract(city_records(), COHORT, key=b"test-extract-key".ljust(32, b"."))
