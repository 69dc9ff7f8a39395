"""Every file of pydicom's bundled test data through ingest's DICOM parser (issue 7, point 2).

tests/fixtures/pydicom_testdata_outcomes.tsv lists each file with its expected outcome; a
file missing from the table, or a table row without its file, fails. The refusals, by kind:

- ``INVALID_DICOM`` on ``content`` when pydicom itself refuses the file (no Part 10 header:
  README, JSON, ICC profile, gzip, raw datasets without preamble and meta) -- "must be a
  DICOM Part 10 file"; or when pydicom reads it but the data ends before an element's
  declared length (MR_truncated, rtplan_truncated) -- "is truncated".
- ``DICOMDIR_NOT_AN_INSTANCE`` for media directories.
- ``INVALID_DICOM`` naming ``PatientID`` (no hospital record number to file the image
  under: anonymised test files), ``StudyInstanceUID`` and ``Modality`` (type 1 attributes
  the file lacks), or ``PixelData`` when the image attributes that size it are missing or
  not numbers (nested_priv_SQ has no Rows; badVR's NumberOfFrames is "1A").

Every file pydicom reads completely and that names its patient, study and modality is
accepted -- whatever its photometric interpretation, subsampling or transfer syntax.
"""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom_outcomes import TEST_FILES, pydicom_outcomes

from services.ingest.dicom import parse_dicom
from services.ingest.model import Category, InvalidMessage

NOT_PART_10 = "must be a DICOM Part 10 file (preamble and DICM prefix)"
TRUNCATED = "is truncated: an element claims more bytes than the file holds"


EXPECTED = pydicom_outcomes()


def _pydicom_reads(content: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(io.BytesIO(content))
        except Exception:
            return False
    return True


def test_the_table_covers_every_bundled_file() -> None:
    bundled = {
        path.relative_to(TEST_FILES).as_posix() for path in TEST_FILES.rglob("*") if path.is_file()
    }
    bundled.discard("__init__.py")
    assert set(EXPECTED) == bundled - {name for name in bundled if name.endswith(".pyc")}
    assert sum(outcome == "accepted" for outcome, _ in EXPECTED.values()) >= 100


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_file_outcome(name: str) -> None:
    content = (TEST_FILES / name).read_bytes()
    outcome, fields = EXPECTED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if outcome == "accepted":
            message = parse_dicom(content)
            assert [entry.category for entry in message.entries] == [Category.IMAGING]
            assert message.imaging is not None and message.imaging.data == content
            assert _pydicom_reads(content)
            return
        with pytest.raises(InvalidMessage) as refused:
            parse_dicom(content)
    assert refused.value.reason == outcome
    assert list(dict.fromkeys(f for f, _ in refused.value.violations)) == fields
    if fields == ["content"] and outcome == "INVALID_DICOM":
        # The reason agrees with pydicom: what it cannot read is not Part 10; what it reads
        # is cut short.
        description = refused.value.violations[0][1]
        assert description == (TRUNCATED if _pydicom_reads(content) else NOT_PART_10)
