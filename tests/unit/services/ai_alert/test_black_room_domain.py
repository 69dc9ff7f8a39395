"""The black room's pure parts: the extract, the spec rules, the SQL, the release."""

from __future__ import annotations

from research_extract_support import COHORT, city_extract, city_records

from healthbank.contracts.research import EXTRACT_FIELDS
from services.ai_alert import black_room
from services.ai_alert.aggregates import (
    AggregateKind,
    AggregateSpec,
    ExactCell,
    compile_sql,
    release,
    spec_problems,
)
from services.ai_alert.research_extract import build_extract


def test_the_extract_has_one_row_per_cohort_person_and_no_token() -> None:
    extract = city_extract()
    records = city_records()
    in_cohort = {r.person_token for r in records if r.code in COHORT.codes}
    assert len(extract.rows) == len(in_cohort)
    assert extract.columns == ("person_key", *COHORT.fields)
    tokens = {r.person_token for r in records}
    assert not any(value in tokens for row in extract.rows for value in row)
    for row in extract.rows:
        values = dict(zip(extract.columns, row, strict=True))
        assert 0 <= int(values["record_count"]) <= EXTRACT_FIELDS["record_count"].upper
        assert values["first_year"] in {"2023", "2024", "2025", "2026"}


def test_pseudonyms_differ_between_extracts_unless_keyed_alike() -> None:
    records = city_records(50)
    first = build_extract(records, COHORT)
    second = build_extract(records, COHORT)
    assert {row[0] for row in first.rows}.isdisjoint({row[0] for row in second.rows})
    key = b"k" * 32
    assert build_extract(records, COHORT, key) == build_extract(records, COHORT, key)


def test_specs_are_checked_field_by_field() -> None:
    spec = AggregateSpec(
        AggregateKind.HISTOGRAM, "hospital", ("record_count", "hospital"), (0.5,), (3, 1)
    )
    assert [field for field, _ in spec_problems(spec)] == [
        "field",
        "group_by",
        "quantiles",
        "bin_edges",
    ]
    assert spec_problems(AggregateSpec(AggregateKind.COUNT, group_by=("hospital",))) == []


def test_one_spec_compiles_to_both_dialects_differing_only_in_quoting() -> None:
    spec = AggregateSpec(AggregateKind.QUANTILES, "span_days", ("hospital",), (0.5,))
    duck = compile_sql(spec, "duckdb")
    assert duck == (
        'SELECT "hospital", COUNT(*) AS n, SUM("span_days") AS total, percentile_disc(0.5) '
        'WITHIN GROUP (ORDER BY "span_days") AS q0 FROM extract GROUP BY "hospital" '
        'ORDER BY "hospital"'
    )
    assert compile_sql(spec, "spark") == duck.replace('"', "`")


def test_cells_below_the_minimum_are_suppressed_and_others_noised() -> None:
    spec = AggregateSpec(AggregateKind.COUNT, group_by=("hospital",))
    cells = [ExactCell(("a",), None, 9), ExactCell(("b",), None, 500)]
    released, mechanism = release(spec, cells, 1.0, 10)
    assert released[0].suppressed and released[0].value == 0
    assert not released[1].suppressed and abs(released[1].value - 500) < 50
    assert mechanism == "discrete Laplace on counts, scale 1"


def test_duckdb_runs_the_compiled_query_on_the_extract() -> None:
    extract = city_extract()
    connection = black_room.duckdb_table(extract)
    try:
        cells = black_room.run_duckdb(connection, AggregateSpec(AggregateKind.COUNT))
    finally:
        connection.close()
    assert cells == [ExactCell((), None, len(extract.rows))]
