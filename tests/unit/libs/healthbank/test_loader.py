"""The bulk loader's pure parts: finding files, message ids, the report."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from healthbank.common.v1 import common_pb2
from healthbank.loader import (
    FileOutcome,
    LoadReport,
    Progress,
    Source,
    discover,
    format_report,
    group_ndjson,
    message_id_for,
    message_pieces,
)


def test_folders_and_zips_are_read_in_name_order_with_formats_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.json").write_bytes(b"{}")
    (tmp_path / "sub" / "a.ndjson").write_bytes(b"{}\n")
    (tmp_path / "notes.txt").write_bytes(b"x")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as archive:
        archive.writestr("msg.hl7", b"MSH|")
        archive.writestr("img.dcm", b"DICM")
    found = list(discover([tmp_path]))
    sources = [(item.name, item.format) for item in found if isinstance(item, Source)]
    assert sources == [
        (str(tmp_path / "b.json"), common_pb2.SOURCE_FORMAT_FHIR_R4_JSON),
        (str(tmp_path / "sub" / "a.ndjson"), common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON),
        (f"{tmp_path / 'z.zip'}!img.dcm", common_pb2.SOURCE_FORMAT_DICOM),
        (f"{tmp_path / 'z.zip'}!msg.hl7", common_pb2.SOURCE_FORMAT_HL7V2),
    ]
    skipped = [item for item in found if isinstance(item, FileOutcome)]
    assert [(s.name, s.outcome) for s in skipped] == [(str(tmp_path / "notes.txt"), "SKIPPED")]
    member = next(item for item in found if isinstance(item, Source) and "msg.hl7" in item.name)
    assert member.read() == b"MSH|"


def test_message_ids_are_stable_per_content_and_fit_the_limit() -> None:
    assert message_id_for("a/b.json", b"1") == message_id_for("c/b.json", b"1")
    assert message_id_for("b.json", b"1") != message_id_for("b.json", b"2")
    assert len(message_id_for("x" * 400 + ".json", b"1")) <= 256


def test_the_summary_counts_files_messages_and_reasons() -> None:
    report = LoadReport(
        [
            FileOutcome("a", "STORED", records=3),
            FileOutcome("b", "DUPLICATE", records=3),
            FileOutcome("f", "STORED", records=1, unidentified=True),
            FileOutcome("c", "REJECTED", reason="INVALID_FHIR"),
            FileOutcome("d", "REJECTED", reason="INVALID_FHIR"),
            FileOutcome("e", "SKIPPED"),
            FileOutcome("g", "PARTIAL", reason="INVALID_FHIR", records=2),
        ]
    )
    assert report.summary() == {
        "files": 7,
        "messages": 6,
        "accepted": 3,
        "rejected": 2,
        "partial": 1,
        "reasons": {"INVALID_FHIR": 3},
        "skipped": 1,
        "records": 6,
        "unidentified": 1,
    }
    table = format_report(report)
    assert "REJECTED  c  INVALID_FHIR" in table
    assert "PARTIAL   g  INVALID_FHIR" in table
    assert table.splitlines()[-1].split() == ["INVALID_FHIR", "3"]


def test_the_progress_bar_is_silent_unless_stderr_is_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream)
    progress.step(FileOutcome("a", "STORED"))
    progress.close()
    assert stream.getvalue() == ""


def _ndjson(*resources: dict[str, object]) -> bytes:
    return b"".join(json.dumps(resource).encode() + b"\n" for resource in resources)


def test_bulk_data_ndjson_is_regrouped_one_message_per_patient() -> None:
    patients = _ndjson(
        {"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"}
    )
    conditions = _ndjson(
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p2"}},
        {"resourceType": "Claim", "id": "x1", "patient": {"reference": "Patient/p1"}},
        {"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/nobody"}},
        {"resourceType": "Organization", "id": "o1"},
    )
    sources = [
        Source("Condition.ndjson", common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON, lambda: conditions),
        Source("Patient.ndjson", common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON, lambda: patients),
    ]
    grouped, skipped = group_ndjson(sources)
    contents = {
        source.name: [json.loads(line)["id"] for line in source.read().splitlines()]
        for source in grouped
    }
    assert contents == {
        "Condition.ndjson#directory": ["o1"],
        "Condition.ndjson#Patient/p2": ["p2", "c1"],
        "Condition.ndjson#Patient/p1": ["p1", "x1"],
    }
    assert [(s.name, s.outcome) for s in skipped] == [("Condition.ndjson:3", "SKIPPED")]


def test_a_file_larger_than_a_piece_goes_in_pieces_only_the_last_unmarked() -> None:
    content = bytes(range(256)) * 40  # 10,240 bytes
    pieces = message_pieces("hospital-a", "m-1", 1, content, piece_bytes=4096)
    assert [len(p.content) for p in pieces] == [4096, 4096, 2048]
    assert [p.more_content for p in pieces] == [True, True, False]
    assert b"".join(p.content for p in pieces) == content
    assert {(p.hospital_id, p.message_id, p.format) for p in pieces} == {("hospital-a", "m-1", 1)}
    (whole,) = message_pieces("hospital-a", "m-2", 1, b"small")
    assert (whole.content, whole.more_content) == (b"small", False)
