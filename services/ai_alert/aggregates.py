"""Aggregate specifications, their SQL on DuckDB and Spark, and their private release
(ADR 26).

One :class:`AggregateSpec` compiles (:func:`compile_sql`) to the same query in DuckDB's
and Spark's SQL dialects (only identifier quoting differs), returning per cell the exact
person count, the sum and the discrete quantiles of the field: integers both engines
compute identically, so their answers compare exactly. Means are ``sum / count`` taken
after noise, never a floating average an engine rounds its own way.

:func:`release` turns exact cells into what may leave the black room: cells of fewer
persons than the minimum are suppressed, the rest get OpenDP noise. A person is one row of
the extract, so each is in exactly one cell of a result (parallel composition): a query
costs its epsilon once. Counts and sums get discrete Laplace noise (sensitivity 1 and the
field's clamp bound); a mean splits its epsilon between its sum and its count; quantiles
split it among their levels, each released by OpenDP's private quantile over a grid of
candidates within the field's bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise
from typing import Any, Literal

from healthbank.contracts.research import EXTRACT_FIELDS

Dialect = Literal["duckdb", "spark"]
MAX_QUANTILES = 9
MAX_BIN_EDGES = 50
_QUANTILE_CANDIDATES = 101


class AggregateKind(IntEnum):
    """The numbers of ai_alert.v1.AggregateKind."""

    COUNT = 1
    SUM = 2
    MEAN = 3
    QUANTILES = 4
    HISTOGRAM = 5


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregate: what, of which field, grouped how (validated by :func:`spec_problems`)."""

    kind: AggregateKind
    field: str = ""
    group_by: tuple[str, ...] = ()
    quantiles: tuple[float, ...] = ()
    bin_edges: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExactCell:
    """A cell before noise: never leaves the black room."""

    group: tuple[str, ...]
    bin: int | None
    count: int
    total: int | None = None
    quantiles: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReleasedCell:
    """A cell as released: suppressed, or with its noisy value(s)."""

    group: tuple[str, ...]
    bin_label: str
    suppressed: bool
    value: float = 0.0
    quantile_values: tuple[float, ...] = field(default_factory=tuple)


def spec_problems(spec: AggregateSpec) -> list[tuple[str, str]]:
    """(field path under ``spec``, rule) for everything wrong with ``spec`` itself."""
    problems: list[tuple[str, str]] = []
    numeric = [name for name, column in EXTRACT_FIELDS.items() if not column.dimension]
    if spec.kind == AggregateKind.COUNT:
        if spec.field:
            problems.append(("field", "must be empty for COUNT"))
    elif spec.field not in numeric:
        problems.append(("field", "must be a numeric extract field: " + ", ".join(numeric)))
    if any(
        name not in EXTRACT_FIELDS or not EXTRACT_FIELDS[name].dimension for name in spec.group_by
    ) or len(set(spec.group_by)) != len(spec.group_by):
        problems.append(("group_by", "must be distinct dimension fields of the extract"))
    if spec.kind == AggregateKind.QUANTILES:
        if not 0 < len(spec.quantiles) <= MAX_QUANTILES or not all(
            0 < level < 1 for level in spec.quantiles
        ):
            problems.append(("quantiles", f"must be 1-{MAX_QUANTILES} levels in (0, 1)"))
    elif spec.quantiles:
        problems.append(("quantiles", "only for QUANTILES"))
    if spec.kind == AggregateKind.HISTOGRAM:
        edges = spec.bin_edges
        if not 2 <= len(edges) <= MAX_BIN_EDGES or any(
            low >= high for low, high in pairwise(edges)
        ):
            problems.append(("bin_edges", f"must be 2-{MAX_BIN_EDGES} increasing edges"))
    elif spec.bin_edges:
        problems.append(("bin_edges", "only for HISTOGRAM"))
    return problems


def compile_sql(spec: AggregateSpec, dialect: Dialect, table: str = "extract") -> str:
    """The exact pre-noise query of ``spec`` on ``table`` in ``dialect``.

    Columns: the group fields, ``bin`` (HISTOGRAM), ``n`` (persons), ``total`` (the
    field's sum, not for COUNT), ``q0``.. (QUANTILES); ordered by group and bin.
    """
    quote = (lambda name: f'"{name}"') if dialect == "duckdb" else (lambda name: f"`{name}`")
    keys = [quote(name) for name in spec.group_by]
    selected = list(keys)
    if spec.kind == AggregateKind.HISTOGRAM:
        value = quote(spec.field)
        cases = " ".join(
            f"WHEN {value} < {edge} THEN {index - 1}" for index, edge in enumerate(spec.bin_edges)
        )
        selected.append(f"CASE {cases} ELSE {len(spec.bin_edges) - 1} END AS bin")
        keys.append("bin")
    selected.append("COUNT(*) AS n")
    if spec.kind != AggregateKind.COUNT:
        selected.append(f"SUM({quote(spec.field)}) AS total")
    for index, level in enumerate(spec.quantiles):
        selected.append(
            f"percentile_disc({level!r}) WITHIN GROUP (ORDER BY {quote(spec.field)}) AS q{index}"
        )
    sql = f"SELECT {', '.join(selected)} FROM {table}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}"
    return sql


def exact_cells(spec: AggregateSpec, rows: Sequence[Mapping[str, Any]]) -> list[ExactCell]:
    """The cells of a query's result rows (dicts by column name, from either engine)."""
    cells = []
    for row in rows:
        cells.append(
            ExactCell(
                group=tuple(str(row[name]) for name in spec.group_by),
                bin=int(row["bin"]) if spec.kind == AggregateKind.HISTOGRAM else None,
                count=int(row["n"]),
                total=None if spec.kind == AggregateKind.COUNT else int(row["total"]),
                quantiles=tuple(int(row[f"q{i}"]) for i in range(len(spec.quantiles))),
            )
        )
    return cells


def bin_label(spec: AggregateSpec, index: int | None) -> str:
    """The label of histogram bin ``index`` (its lower edge), empty for other kinds."""
    if index is None:
        return ""
    if index < 0:
        return f"<{spec.bin_edges[0]}"
    return str(spec.bin_edges[index])


def release(
    spec: AggregateSpec,
    cells: Sequence[ExactCell],
    epsilon: float,
    min_cell_size: int,
    values_of: Mapping[tuple[str, ...], Sequence[int]] | None = None,
) -> tuple[list[ReleasedCell], str]:
    """The cells that may leave, and the mechanism in words.

    ``values_of`` (QUANTILES only): each group's field values, for the private quantile.
    """
    import opendp.prelude as dp  # loaded only in the black room, where queries run

    dp.enable_features("contrib")
    released = []
    bound = 1
    if spec.field:
        column = EXTRACT_FIELDS[spec.field]
        bound = max(abs(column.lower), abs(column.upper), 1)
    share = epsilon / 2 if spec.kind == AggregateKind.MEAN else epsilon
    count_noise = _integer_laplace(dp, 1 / share)
    sum_noise = _integer_laplace(dp, bound / share)
    for cell in cells:
        label = bin_label(spec, cell.bin)
        if cell.count < min_cell_size:
            released.append(ReleasedCell(cell.group, label, True))
            continue
        if spec.kind in (AggregateKind.COUNT, AggregateKind.HISTOGRAM):
            released.append(ReleasedCell(cell.group, label, False, float(count_noise(cell.count))))
        elif spec.kind == AggregateKind.SUM:
            assert cell.total is not None
            released.append(ReleasedCell(cell.group, label, False, float(sum_noise(cell.total))))
        elif spec.kind == AggregateKind.MEAN:
            assert cell.total is not None
            column = EXTRACT_FIELDS[spec.field]
            mean = sum_noise(cell.total) / max(count_noise(cell.count), 1)
            released.append(
                ReleasedCell(cell.group, label, False, min(max(mean, column.lower), column.upper))
            )
        else:
            assert values_of is not None
            values = values_of[cell.group]
            released.append(
                ReleasedCell(
                    cell.group,
                    label,
                    False,
                    quantile_values=tuple(
                        _private_quantile(
                            dp, spec.field, values, level, epsilon / len(spec.quantiles)
                        )
                        for level in spec.quantiles
                    ),
                )
            )
    return released, _mechanism(spec, epsilon, bound)


def _integer_laplace(dp: Any, scale: float) -> Any:
    measurement = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)
    return measurement


def _private_quantile(
    dp: Any, field_name: str, values: Sequence[int], level: float, epsilon: float
) -> float:
    column = EXTRACT_FIELDS[field_name]
    step = max(1, math.ceil((column.upper - column.lower) / (_QUANTILE_CANDIDATES - 1)))
    candidates = list(range(column.lower, column.upper + step, step))
    clamped = [min(max(int(value), column.lower), column.upper) for value in values]

    def measurement(scale: float) -> Any:
        return dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T=int)),
            dp.symmetric_distance(),
            dp.max_divergence(),
            candidates=candidates,
            alpha=level,
            scale=scale,
        )

    scale = dp.binary_search_param(measurement, d_in=1, d_out=epsilon, T=float)
    return float(measurement(scale)(clamped))


def _mechanism(spec: AggregateSpec, epsilon: float, bound: int) -> str:
    if spec.kind in (AggregateKind.COUNT, AggregateKind.HISTOGRAM):
        return f"discrete Laplace on counts, scale {1 / epsilon:g}"
    if spec.kind == AggregateKind.SUM:
        return f"discrete Laplace on the clamped sum, scale {bound / epsilon:g}"
    if spec.kind == AggregateKind.MEAN:
        return (
            f"noisy sum / noisy count, discrete Laplace scales {2 * bound / epsilon:g} "
            f"and {2 / epsilon:g}"
        )
    return f"OpenDP private quantile, epsilon {epsilon / len(spec.quantiles):g} per level"
