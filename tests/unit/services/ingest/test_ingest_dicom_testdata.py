"""Every file of pydicom's bundled test data through ingest's DICOM parser (issue 7, point 2).

tests/fixtures/pydicom_testdata_outcomes.tsv lists each file with its expected outcome
(written by ``python tests/pydicom_outcomes.py``, reviewed by hand); a file missing from
the table, or a table row without its file, fails.

"pydicom reads completely" (:func:`pydicom_outcomes.pydicom_reads_completely`): ``dcmread``
succeeds without ``force``, every element, in every item of every sequence, holds as many
bytes as its header declares, and every value can be accessed (a value read with a warning,
badVR's NumberOfFrames "1A", counts as read). The rule the table keeps:

- Every file pydicom reads completely is ``accepted`` -- whatever its photometric
  interpretation, subsampling or transfer syntax, and also without PatientID (an anonymised
  file is filed under its study's unidentified patient), StudyInstanceUID (a stand-in: the
  SOPInstanceUID, else a UID of the content hash) or Modality (``OT``), and with pixel data
  its attributes cannot size (nested_priv_SQ has no Rows; badVR's NumberOfFrames is "1A"),
  kept as opaque bytes -- except a media directory, ``DICOMDIR_NOT_AN_INSTANCE``.
- Every other file is ``INVALID_DICOM`` on ``content``: "must be a DICOM Part 10 file" when
  pydicom refuses it (README, JSON, ICC profile, gzip, raw datasets without preamble and
  meta), "is truncated" when pydicom reads it but the data ends before an element's
  declared length (MR_truncated, rtplan_truncated).
"""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom_outcomes import TEST_FILES, bundled_files, pydicom_outcomes, pydicom_reads_completely

from services.ingest.dicom import DICOMDIR_REASON, MEDIA_DIRECTORY_SOP_CLASS, parse_dicom
from services.ingest.model import Category, InvalidMessage

NOT_PART_10 = "must be a DICOM Part 10 file (preamble and DICM prefix)"
TRUNCATED = "is truncated: an element claims more bytes than the file holds"


EXPECTED = pydicom_outcomes()


def _pydicom_opens(content: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(io.BytesIO(content))
        except Exception:
            return False
    return True


def _is_media_directory(content: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True).file_meta
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY_SOP_CLASS


def test_the_table_covers_every_bundled_file() -> None:
    assert set(EXPECTED) == set(bundled_files())
    assert sum(outcome == "accepted" for outcome, _ in EXPECTED.values()) >= 100


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_table_accepts_exactly_what_pydicom_reads_completely(name: str) -> None:
    content = (TEST_FILES / name).read_bytes()
    outcome, fields = EXPECTED[name]
    if not pydicom_reads_completely(content):
        assert (outcome, fields) == ("INVALID_DICOM", ["content"])
    elif _is_media_directory(content):
        assert (outcome, fields) == (DICOMDIR_REASON, ["content"])
    else:
        assert (outcome, fields) == ("accepted", [])


def test_the_truncated_files_are_read_by_pydicom_but_not_completely() -> None:
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        content = (TEST_FILES / name).read_bytes()
        assert _pydicom_opens(content) and not pydicom_reads_completely(content)
        assert EXPECTED[name] == ("INVALID_DICOM", ["content"])


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
            assert message.patient is not None
            has_patient_id = bool(str(pydicom.dcmread(io.BytesIO(content)).get("PatientID", "")))
            assert message.patient.unidentified == (not has_patient_id)
            return
        with pytest.raises(InvalidMessage) as refused:
            parse_dicom(content)
    assert refused.value.reason == outcome
    assert list(dict.fromkeys(f for f, _ in refused.value.violations)) == fields
    if fields == ["content"] and outcome == "INVALID_DICOM":
        # The reason agrees with pydicom: what it cannot open is not Part 10; what it opens
        # but does not read completely is cut short.
        description = refused.value.violations[0][1]
        assert description == (TRUNCATED if _pydicom_opens(content) else NOT_PART_10)
