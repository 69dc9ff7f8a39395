"""The black room's engines (ADR 26): the extract as a table, an aggregate's exact cells.

DuckDB in process is the embedded engine: :func:`duckdb_table` loads an extract into a
private in-memory database, :func:`run_duckdb` runs a spec's compiled SQL on it.
:func:`run_spark` runs the same spec's Spark SQL on a SparkSession, the engine for a
city-scale extract (``pyspark`` is needed only there; the embedded default never loads it).
Both are blocking and CPU-bound: callers on the event loop run them in a thread.
"""

from __future__ import annotations

from typing import Any

from services.ai_alert.aggregates import AggregateSpec, ExactCell, compile_sql, exact_cells
from services.ai_alert.research_extract import Extract

TABLE = "extract"


def duckdb_table(extract: Extract) -> Any:
    """A private in-memory DuckDB database holding ``extract`` as table ``extract``."""
    import duckdb

    connection = duckdb.connect(":memory:")
    types = extract.column_types()
    columns = ", ".join(f'"{column}" {types[column]}' for column in extract.columns)
    connection.execute(f"CREATE TABLE {TABLE} ({columns})")
    if extract.rows:
        marks = ", ".join("?" for _ in extract.columns)
        connection.executemany(f"INSERT INTO {TABLE} VALUES ({marks})", list(extract.rows))
    return connection


def run_duckdb(connection: Any, spec: AggregateSpec) -> list[ExactCell]:
    """The exact cells of ``spec`` on a :func:`duckdb_table` database."""
    cursor = connection.execute(compile_sql(spec, "duckdb", TABLE))
    names = [description[0] for description in cursor.description]
    return exact_cells(spec, [dict(zip(names, row, strict=True)) for row in cursor.fetchall()])


def group_values(connection: Any, spec: AggregateSpec) -> dict[tuple[str, ...], list[int]]:
    """Each group's values of ``spec.field`` (for private quantiles; never released)."""
    keys = ", ".join(f'"{name}"' for name in spec.group_by)
    selected = f"{keys}, " if keys else ""
    rows = connection.execute(f'SELECT {selected}"{spec.field}" FROM {TABLE}').fetchall()
    grouped: dict[tuple[str, ...], list[int]] = {}
    for row in rows:
        grouped.setdefault(tuple(str(value) for value in row[:-1]), []).append(int(row[-1]))
    return grouped


def spark_table(spark: Any, extract: Extract) -> None:
    """Register ``extract`` as the temporary view ``extract`` of a SparkSession."""
    types = extract.column_types()
    schema = ", ".join(
        f"`{column}` {'STRING' if types[column] == 'VARCHAR' else 'BIGINT'}"
        for column in extract.columns
    )
    spark.createDataFrame(list(extract.rows), schema=schema).createOrReplaceTempView(TABLE)


def run_spark(spark: Any, spec: AggregateSpec) -> list[ExactCell]:
    """The exact cells of ``spec`` on the view :func:`spark_table` registered."""
    rows = spark.sql(compile_sql(spec, "spark", TABLE)).collect()
    return exact_cells(spec, [row.asDict() for row in rows])
