"""The HL7 ACK that ingest returns and the MLLP gateway forwards."""

from __future__ import annotations

from datetime import UTC, datetime

from healthbank.contracts.hl7ack import ack_code, build_ack, read_header

ORIGINAL = (
    b"MSH|^~\\&|HIS|hospital-b|HEALTHBANK|CITY|20261102091500||ADT^A04^ADT_A01|CTRL-1|P|2.5\r"
    b"PID|1||M-9^^^hospital-b^MR||Abernathy^Juniper\r"
)
NOW = datetime(2026, 11, 2, 1, 16, tzinfo=UTC)


def _segments(ack: bytes) -> list[list[str]]:
    assert ack.endswith(b"\r")
    return [segment.split("|") for segment in ack.decode().strip("\r").split("\r")]


def test_accepted_ack_swaps_the_parties_and_echoes_the_control_id() -> None:
    msh, msa = _segments(build_ack(ORIGINAL, "AA", control_id="ACK-1", now=NOW))
    assert msh[:12] == [
        "MSH", "^~\\&", "HEALTHBANK", "CITY", "HIS", "hospital-b", "20261102091600+0800", "",
        "ACK^A04^ACK", "ACK-1", "P", "2.5",
    ]  # fmt: skip
    assert msa == ["MSA", "AA", "CTRL-1"]


def test_error_ack_has_one_err_per_violation_and_no_values() -> None:
    violations = [
        ("content.PID[0].7", "must be an HL7 timestamp"),
        ("content.OBX[2].3", "is required"),
    ]
    ack = build_ack(
        ORIGINAL, "AE", control_id="A", now=NOW, reason="INVALID_HL7V2", violations=violations
    )
    _, msa, first, second = _segments(ack)
    assert msa == ["MSA", "AE", "CTRL-1"]
    assert first[2] == "PID^1^7"
    assert first[3] == "102^Data type error^HL70357"
    assert first[4:6] == ["E", "INVALID_HL7V2"]
    assert first[8] == "content.PID[0].7 must be an HL7 timestamp"
    assert second[2:4] == ["OBX^3^3", "101^Required field missing^HL70357"]
    assert b"Abernathy" not in ack


def test_custom_delimiters_are_kept() -> None:
    original = b"MSH#@$!%#HIS#H#HB#C#20261102##ORU@R01#C-9#P#2.3\rPID###M-9\r"
    ack = build_ack(original, "AR", control_id="A", now=NOW, reason="IDENTITY_UNAVAILABLE")
    msh, msa, err = (segment.split("#") for segment in ack.decode().strip("\r").split("\r"))
    assert msh[1] == "@$!%" and msh[8] == "ACK@R01@ACK"
    assert msa == ["MSA", "AR", "C-9"]
    assert err[5] == "IDENTITY_UNAVAILABLE"


def test_unreadable_header_still_gets_an_ack() -> None:
    assert read_header(b"garbage").control_id == ""
    _, msa, _ = _segments(build_ack(b"garbage", "AE", control_id="A", now=NOW, reason="X"))
    assert msa == ["MSA", "AE", ""]


def test_ack_code_rule() -> None:
    assert ack_code(accepted=True, retryable=False, violations=[]) == "AA"
    assert ack_code(accepted=False, retryable=True, violations=[]) == "AR"
    unsupported = [("content.MSH[0].9", "unsupported message type; supported: ...")]
    assert ack_code(accepted=False, retryable=False, violations=unsupported) == "AR"
    assert ack_code(accepted=False, retryable=False, violations=[("a", "is required")]) == "AE"
