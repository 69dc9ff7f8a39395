"""The expected outcome of every file of pydicom's bundled test data (a reviewed table).

tests/fixtures/pydicom_testdata_outcomes.tsv: path under pydicom's test_files, then
``accepted`` or the ErrorInfo reason, then the violated fields. Why each kind is refused:
tests/unit/services/ingest/test_ingest_dicom_testdata.py.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from repo_paths import REPO

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
TABLE = REPO / "tests" / "fixtures" / "pydicom_testdata_outcomes.tsv"


def pydicom_outcomes() -> dict[str, tuple[str, list[str]]]:
    """path → (``accepted`` or the refusal reason, the violated fields in order)."""
    rows = [line.split("\t") for line in TABLE.read_text().splitlines() if not line.startswith("#")]
    return {path: (outcome, [f for f in fields.split(",") if f]) for path, outcome, fields in rows}
