"""DuckDB and Spark (local mode) give the same exact answers to the same aggregate specs on
the same research extract (ADR 26): counts, sums, discrete quantiles and histogram bins,
grouped and not. One SparkSession for the module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from research_extract_support import city_extract

from services.ai_alert import black_room
from services.ai_alert.aggregates import AggregateKind, AggregateSpec
from services.ai_alert.research_extract import Extract

SPECS = [
    AggregateSpec(AggregateKind.COUNT),
    AggregateSpec(AggregateKind.COUNT, group_by=("hospital",)),
    AggregateSpec(AggregateKind.COUNT, group_by=("hospital", "first_year")),
    AggregateSpec(AggregateKind.SUM, "record_count", ("cohort_code",)),
    AggregateSpec(AggregateKind.MEAN, "span_days", ("hospital",)),
    AggregateSpec(AggregateKind.QUANTILES, "span_days", ("hospital",), (0.1, 0.5, 0.9)),
    AggregateSpec(AggregateKind.QUANTILES, "condition_count", (), (0.25, 0.75)),
    AggregateSpec(AggregateKind.HISTOGRAM, "record_count", ("first_year",), (), (2, 4, 8)),
]


@pytest.fixture(scope="module")
def extract() -> Extract:
    return city_extract()


@pytest.fixture(scope="module")
def spark(extract: Extract) -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("healthbank-black-room-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        # The JVM's start dominates this module: the quick JIT tier and one GC thread.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    black_room.spark_table(session, extract)
    yield session
    session.stop()


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: f"{spec.kind.name}-{spec.field}")
def test_duckdb_and_spark_agree_exactly(spec: AggregateSpec, extract: Extract, spark: Any) -> None:
    connection = black_room.duckdb_table(extract)
    try:
        on_duckdb = black_room.run_duckdb(connection, spec)
    finally:
        connection.close()
    on_spark = black_room.run_spark(spark, spec)
    assert on_duckdb == on_spark
    assert sum(cell.count for cell in on_duckdb) == len(extract.rows) > 100
