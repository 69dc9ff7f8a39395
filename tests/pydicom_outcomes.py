"""The expected outcome of every file of pydicom's bundled test data (a reviewed table).

tests/fixtures/pydicom_testdata_outcomes.tsv: path under pydicom's test_files, then
``accepted`` or the ErrorInfo reason, then the violated fields. Why each kind is refused:
tests/unit/services/ingest/test_ingest_dicom_testdata.py.

``python tests/pydicom_outcomes.py`` rewrites the table from what ingest's DICOM parser
answers today; review every changed row (``git diff``) before committing it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from repo_paths import REPO

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
TABLE = REPO / "tests" / "fixtures" / "pydicom_testdata_outcomes.tsv"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_HEADER = (
    "# Expected outcome of ingesting each file of pydicom's bundled test data (pydicom 3.0.x).\n"
    "# Reviewed by hand: see tests/unit/services/ingest/test_ingest_dicom_testdata.py"
    " for why each kind is refused.\n"
    "# path\toutcome (accepted or the ErrorInfo reason)\tviolated fields\n"
)


def pydicom_outcomes() -> dict[str, tuple[str, list[str]]]:
    """path → (``accepted`` or the refusal reason, the violated fields in order)."""
    rows = [line.split("\t") for line in TABLE.read_text().splitlines() if not line.startswith("#")]
    return {path: (outcome, [f for f in fields.split(",") if f]) for path, outcome, fields in rows}


def bundled_files() -> list[str]:
    """Every file of pydicom's test data, as paths under :data:`TEST_FILES`."""
    return sorted(
        path.relative_to(TEST_FILES).as_posix()
        for path in TEST_FILES.rglob("*")
        if path.is_file() and path.name != "__init__.py" and path.suffix != ".pyc"
    )


def pydicom_reads_completely(content: bytes) -> bool:
    """Whether pydicom reads the whole file: what "reads completely" means in issue 7.

    ``dcmread`` (without ``force``) succeeds; every element, in the file meta and the
    dataset and in every item of every sequence, holds as many bytes as its header declares
    (pydicom returns a value cut short at the end of the file without a word); and every
    value can be accessed. A value pydicom reads with a warning (badVR's NumberOfFrames
    "1A") counts as read.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(io.BytesIO(content))
            return _whole(dataset.file_meta) and _whole(dataset)
        except Exception:
            return False


def _whole(dataset: Dataset) -> bool:
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)  # before conversion: the bytes as read from the file
        if (
            isinstance(raw, RawDataElement)
            and raw.length != _UNDEFINED_LENGTH
            and raw.value is not None
            and len(raw.value) < raw.length
        ):
            return False
        element = dataset[tag]
        if element.VR == "SQ" and not all(_whole(item) for item in element.value):
            return False
    return True


def write_table() -> None:
    """Rewrite the table from the outcomes of ingest's DICOM parser on every bundled file."""
    from services.ingest.dicom import parse_dicom
    from services.ingest.model import InvalidMessage

    rows = []
    for name in bundled_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                parse_dicom((TEST_FILES / name).read_bytes())
                rows.append(f"{name}\taccepted\t")
            except InvalidMessage as refused:
                fields = dict.fromkeys(field for field, _ in refused.violations)
                rows.append(f"{name}\t{refused.reason}\t{','.join(fields)}")
    TABLE.write_text(_HEADER + "\n".join(rows) + "\n")


if __name__ == "__main__":
    write_table()
