"""Synthetic cohorts (ADR 26): a Gaussian copula fitted inside the black room, with a
utility report and a privacy report. numpy and scipy only.

**Model.** The real rows are split: 80 % fit the model, 20 % are held out (for the
membership-inference check and the train-on-synthetic-test-on-real score). Each column
becomes normal scores through its ranks (ties broken at random), the correlation of the
scores is the copula, and a draw maps correlated normals back through each column's
marginal: categories by their frequencies, numbers by their empirical quantile function
interpolated between observed values, smoothed by a Gaussian kernel of Silverman's width
(so a draw is not restricted to, nor clustered on, values some fitted person has), clipped
to the observed range and rounded.

**Privacy.** Distances are Gower's: numeric differences scaled by the field's catalog
range, categories 0 or 1, averaged over the columns. A drawn row equal to, or nearer than
:data:`DISTANCE_THRESHOLD` to, any real row is discarded and redrawn. The report gives the
closest and median distances, the exact copies (0 by construction, and checked), and a
membership-inference AUC: how well the distance to the synthetic cohort tells the rows
the model was fitted on from held-out ones (0.5 is chance), with the one-sided
Mann-Whitney p-value of "fitted rows are nearer". The report passes when no row is nearer
than the threshold, none is a copy, and the AUC is not both above
:data:`MAX_MEMBERSHIP_AUC` and significant (p below :data:`MEMBERSHIP_ALPHA`). Why the
p-value: with a small cohort the held-out rows are few (12 of 64) and the AUC exceeds 0.65
for about one seed in six by chance alone; refusing those would make the seed a lottery a
researcher could replay. A leaking release is far
above chance and refused at any size.

The release depends on the rows and the seed only, not on the extract's row order.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from healthbank.contracts.research import EXTRACT_FIELDS
from services.ai_alert.research_extract import Extract

MIN_COHORT = 50
MAX_ROWS = 100_000
DISTANCE_THRESHOLD = 0.001
MAX_MEMBERSHIP_AUC = 0.65
MEMBERSHIP_ALPHA = 0.001
HOLDOUT_SHARE = 0.2
_MAX_DRAW_ROUNDS = 20
_BLOCK_FLOATS = 2_000_000


@dataclass(frozen=True)
class Marginal:
    """One numeric field, real beside synthetic."""

    field: str
    real_mean: float
    synthetic_mean: float
    real_sd: float
    synthetic_sd: float
    ks_statistic: float


@dataclass(frozen=True)
class UtilityReport:
    """How the synthetic cohort compares with the real one."""

    marginals: tuple[Marginal, ...]
    max_correlation_difference: float
    tstr_target: str
    tstr_accuracy: float
    trtr_accuracy: float


@dataclass(frozen=True)
class PrivacyReport:
    """How far the synthetic cohort stays from real persons."""

    min_distance_to_real: float
    median_distance_to_real: float
    exact_copies: int
    distance_threshold: float
    membership_inference_auc: float
    membership_inference_p_value: float
    passed: bool


@dataclass(frozen=True)
class SyntheticRelease:
    """The drawn rows, encoded, with the reports."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | int, ...], ...]
    content: bytes
    media_type: str
    utility: UtilityReport
    privacy: PrivacyReport

    @property
    def row_count(self) -> int:
        """Rows drawn."""
        return len(self.rows)


@dataclass(frozen=True)
class _Table:
    """Extract columns (without the person key) as arrays: categories coded 0..k-1."""

    columns: tuple[str, ...]
    values: np.ndarray  # float, rows x columns
    categories: dict[str, list[str]]

    def numeric(self) -> list[int]:
        return [i for i, name in enumerate(self.columns) if name not in self.categories]


def synthesize(extract: Extract, row_count: int, seed: int, parquet: bool) -> SyntheticRelease:
    """Fit on ``extract`` and draw ``row_count`` rows (at most :data:`MAX_ROWS`)."""
    rng = np.random.default_rng(seed or None)
    table = _table(extract)
    order = rng.permutation(len(table.values))
    holdout_size = max(1, int(len(order) * HOLDOUT_SHARE))
    holdout = table.values[order[:holdout_size]]
    train = table.values[order[holdout_size:]]
    scale = _scales(table)
    correlation = _copula(train, rng)
    drawn = _draw(train, table.values, table, correlation, min(row_count, MAX_ROWS), scale, rng)
    privacy = _privacy(table.values, train, holdout, drawn, scale)
    utility = _utility(table, train, holdout, drawn)
    columns = table.columns
    rows = tuple(_decode(row, table) for row in drawn)
    content = _parquet(columns, rows, extract) if parquet else _csv(columns, rows)
    media_type = "application/vnd.apache.parquet" if parquet else "text/csv"
    return SyntheticRelease(columns, rows, content, media_type, utility, privacy)


def _table(extract: Extract) -> _Table:
    columns = tuple(name for name in extract.columns if name != "person_key")
    indexes = [extract.columns.index(name) for name in columns]
    categories: dict[str, list[str]] = {}
    values = np.zeros((len(extract.rows), len(columns)))
    for j, (name, index) in enumerate(zip(columns, indexes, strict=True)):
        column = [row[index] for row in extract.rows]
        if EXTRACT_FIELDS[name].dimension:
            levels = sorted({str(value) for value in column})
            categories[name] = levels
            position = {level: i for i, level in enumerate(levels)}
            values[:, j] = [position[str(value)] for value in column]
        else:
            values[:, j] = [float(value) for value in column]
    # Rows in value order, so the seed alone decides the split and the draws (the
    # extract's order follows per-grant pseudonyms).
    values = values[np.lexsort(values.T[::-1])] if len(values) else values
    return _Table(columns, values, categories)


def _scales(table: _Table) -> np.ndarray:
    """Per column, what a difference is divided by: the real values' range for numbers
    (at least 1), 0 marking a category."""
    return np.array(
        [
            0.0 if name in table.categories else float(max(np.ptp(table.values[:, j]), 1.0))
            for j, name in enumerate(table.columns)
        ]
    )


def _normal_scores(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.random(values.shape)
    scores = np.empty_like(values)
    for j in range(values.shape[1]):
        ranks = np.lexsort((jitter[:, j], values[:, j])).argsort() + 1
        scores[:, j] = stats.norm.ppf(ranks / (len(values) + 1))
    return scores


def _copula(train: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    correlation = np.corrcoef(_normal_scores(train, rng), rowvar=False)
    correlation = np.atleast_2d(np.nan_to_num(correlation))
    np.fill_diagonal(correlation, 1.0)
    # Nearest positive definite: clip eigenvalues, rescale to unit diagonal.
    eigenvalues, vectors = np.linalg.eigh(correlation)
    fixed = vectors @ np.diag(np.clip(eigenvalues, 1e-6, None)) @ vectors.T
    diagonal = np.sqrt(np.diag(fixed))
    return fixed / np.outer(diagonal, diagonal)


def _draw(
    train: np.ndarray,
    real: np.ndarray,
    table: _Table,
    correlation: np.ndarray,
    count: int,
    scale: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(_MAX_DRAW_ROUNDS):
        normals = rng.multivariate_normal(np.zeros(len(table.columns)), correlation, size=count)
        uniforms = stats.norm.cdf(normals)
        rows = np.empty_like(uniforms)
        for j, name in enumerate(table.columns):
            column = np.sort(train[:, j])
            if name in table.categories:
                rows[:, j] = column[
                    np.minimum((uniforms[:, j] * len(column)).astype(int), len(column) - 1)
                ]
            else:
                positions = uniforms[:, j] * (len(column) - 1)
                quantiles = np.interp(positions, np.arange(len(column)), column)
                smoothed = quantiles + rng.normal(0.0, _bandwidth(column), count)
                rows[:, j] = np.rint(np.clip(smoothed, column[0], column[-1]))
        # Every real person counts, held-out ones too.
        far = _nearest_distances(rows, real, scale) >= DISTANCE_THRESHOLD
        kept.append(rows[far])
        total += int(far.sum())
        if total >= count:
            break
    return np.concatenate(kept)[:count]


def _bandwidth(values: np.ndarray) -> float:
    """Silverman's rule of thumb: the kernel width that smooths a numeric marginal, so
    draws do not cluster on the values of the persons the model was fitted on."""
    spread = min(float(np.std(values)), float(np.subtract(*np.percentile(values, [75, 25]))) / 1.34)
    spread = spread or float(np.std(values))
    return 0.9 * spread * len(values) ** -0.2


def _nearest_distances(rows: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Gower distance from each row to its nearest reference row."""
    categorical = scale == 0
    weights = np.where(categorical, 1.0, 1.0 / np.where(categorical, 1.0, scale))
    nearest = np.empty(len(rows))
    # Blocks of rows whose differences with every reference row fit ~16 MB of floats.
    step = max(1, _BLOCK_FLOATS // max(1, reference.size))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        differences = np.abs(block[:, None, :] - reference[None, :, :])
        differences = np.where(categorical, differences > 0, differences * weights)
        nearest[start : start + step] = differences.mean(axis=2).min(axis=1)
    return nearest


def _privacy(
    real: np.ndarray, train: np.ndarray, holdout: np.ndarray, drawn: np.ndarray, scale: np.ndarray
) -> PrivacyReport:
    distances = _nearest_distances(drawn, real, scale)
    real_rows = {tuple(row) for row in real}
    copies = sum(tuple(row) in real_rows for row in drawn)
    # Membership inference: are fitted rows nearer the synthetic cohort than held-out ones?
    train_near = _nearest_distances(train, drawn, scale)
    holdout_near = _nearest_distances(holdout, drawn, scale)
    # AUC of "nearer means member": P(train distance < holdout distance), ties half.
    test = stats.mannwhitneyu(holdout_near, train_near, alternative="greater")
    auc = float(test.statistic / (len(train_near) * len(holdout_near)))
    p_value = float(test.pvalue)
    leaks_membership = auc > MAX_MEMBERSHIP_AUC and p_value < MEMBERSHIP_ALPHA
    minimum = float(distances.min()) if len(distances) else 0.0
    passed = (
        len(drawn) > 0 and minimum >= DISTANCE_THRESHOLD and copies == 0 and not leaks_membership
    )
    return PrivacyReport(
        min_distance_to_real=minimum,
        median_distance_to_real=float(np.median(distances)) if len(distances) else 0.0,
        exact_copies=copies,
        distance_threshold=DISTANCE_THRESHOLD,
        membership_inference_auc=auc,
        membership_inference_p_value=p_value,
        passed=passed,
    )


def _utility(
    table: _Table, train: np.ndarray, holdout: np.ndarray, drawn: np.ndarray
) -> UtilityReport:
    real = np.concatenate([train, holdout])
    marginals = tuple(
        Marginal(
            field=table.columns[j],
            real_mean=float(real[:, j].mean()),
            synthetic_mean=float(drawn[:, j].mean()),
            real_sd=float(real[:, j].std()),
            synthetic_sd=float(drawn[:, j].std()),
            ks_statistic=float(stats.ks_2samp(real[:, j], drawn[:, j]).statistic),
        )
        for j in table.numeric()
    )
    difference = 0.0
    if len(table.columns) > 1:
        real_rho = np.atleast_2d(stats.spearmanr(real).statistic)
        drawn_rho = np.atleast_2d(stats.spearmanr(drawn).statistic)
        difference = float(np.nanmax(np.abs(np.nan_to_num(real_rho) - np.nan_to_num(drawn_rho))))
    target = table.numeric()[0]
    threshold = float(np.median(real[:, target]))
    tstr = _classifier_accuracy(drawn, holdout, target, threshold, table)
    trtr = _classifier_accuracy(train, holdout, target, threshold, table)
    return UtilityReport(marginals, difference, table.columns[target], tstr, trtr)


def _features(rows: np.ndarray, target: int, table: _Table, reference: np.ndarray) -> np.ndarray:
    """Intercept, one-hot categories, numbers standardized by ``reference``'s mean and sd."""
    parts = [np.ones((len(rows), 1))]
    for j, name in enumerate(table.columns):
        if j == target:
            continue
        if name in table.categories:
            levels = len(table.categories[name])
            parts.append(np.eye(levels)[rows[:, j].astype(int)][:, 1:])
        else:
            spread = reference[:, j].std() or 1.0
            parts.append((rows[:, [j]] - reference[:, j].mean()) / spread)
    return np.hstack(parts)


def _classifier_accuracy(
    fit_rows: np.ndarray, test_rows: np.ndarray, target: int, threshold: float, table: _Table
) -> float:
    """Accuracy on ``test_rows`` of a logistic regression (gradient descent) fitted on
    ``fit_rows``, predicting whether ``target`` is above ``threshold``."""
    features = _features(fit_rows, target, table, fit_rows)
    labels = (fit_rows[:, target] > threshold).astype(float)
    weights = np.zeros(features.shape[1])
    for _ in range(500):
        predicted = 1 / (1 + np.exp(-(features @ weights)))
        weights -= 0.5 * features.T @ (predicted - labels) / len(labels)
    test = _features(test_rows, target, table, fit_rows)
    predicted_labels = (test @ weights) > 0
    return float(np.mean(predicted_labels == (test_rows[:, target] > threshold)))


def _decode(row: np.ndarray, table: _Table) -> tuple[str | int, ...]:
    return tuple(
        table.categories[name][int(value)] if name in table.categories else int(value)
        for name, value in zip(table.columns, row, strict=True)
    )


def _csv(columns: tuple[str, ...], rows: tuple[tuple[str | int, ...], ...]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _parquet(
    columns: tuple[str, ...], rows: tuple[tuple[str | int, ...], ...], extract: Extract
) -> bytes:
    import duckdb

    types = extract.column_types()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cohort.parquet"
        connection = duckdb.connect(":memory:")
        try:
            definition = ", ".join(f'"{name}" {types[name]}' for name in columns)
            connection.execute(f"CREATE TABLE cohort ({definition})")
            if rows:
                marks = ", ".join("?" for _ in columns)
                connection.executemany(f"INSERT INTO cohort VALUES ({marks})", list(rows))
            connection.execute(f"COPY cohort TO '{path}' (FORMAT PARQUET)")
        finally:
            connection.close()
        return path.read_bytes()
