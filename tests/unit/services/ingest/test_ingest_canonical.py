"""Canonical records, emergency facts and time parsing (the audit ledger: tests/contract)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from repo_paths import MESSAGES

from healthbank.common.v1 import common_pb2
from healthbank.contracts.facts import Fact, decode_fact
from healthbank.core.ids import is_ulid, ulid_time
from healthbank.records import blob_aad, fact_aad, payload_aad, record_name
from services.ingest.canonical import (
    FACT_CATEGORIES,
    FACT_RESOURCE_TYPES,
    MessageSource,
    content_hash,
    emergency_fact_json,
    plan_records,
    receipt_for,
)
from services.ingest.fhir import parse_fhir
from services.ingest.hl7v2 import parse_hl7v2
from services.ingest.model import (
    Category,
    ClinicalEntry,
    Coding,
    Demographics,
    ParsedMessage,
    PatientIdentity,
    SourceFormat,
    compact_timestamp_as_fhir,
    parse_fhir_datetime,
)

TOKEN = "a" * 64
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SOURCE = MessageSource("hospital-a", "msg-1", SourceFormat.FHIR_R4_JSON, "f" * 64)


def test_local_enums_match_the_proto() -> None:
    for category in Category:
        assert common_pb2.RecordCategory.Value(f"RECORD_CATEGORY_{category.name}") == category
    for source_format in SourceFormat:
        assert common_pb2.SourceFormat.Value(f"SOURCE_FORMAT_{source_format.name}") == (
            source_format
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019", datetime(2019, 1, 1, tzinfo=UTC)),
        ("2019-05", datetime(2019, 5, 1, tzinfo=UTC)),
        ("2019-05-02", datetime(2019, 5, 2, tzinfo=UTC)),
        ("2019-05-02T10:00:00Z", datetime(2019, 5, 2, 10, tzinfo=UTC)),
        ("2019-05-02T10:00:00.25+08:00", datetime(2019, 5, 2, 2, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_fhir_datetimes(text: str, expected: datetime) -> None:
    assert parse_fhir_datetime(text) == expected


@pytest.mark.parametrize(
    "text", ["", "19", "2019-5-2", "2019-02-30", "2019-05-02T10:00", "2019-05-02T10:00:00", 42]
)
def test_bad_fhir_datetimes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fhir_datetime(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020", "2020"),
        ("202003", "2020-03"),
        ("20200301", "2020-03-01"),
        ("2020030114", "2020-03-01T14:00:00+08:00"),
        ("202003011430", "2020-03-01T14:30:00+08:00"),
        ("20200301143005.123", "2020-03-01T14:30:05.123+08:00"),
        ("20200301143005-0500", "2020-03-01T14:30:05-05:00"),
    ],
)
def test_compact_timestamps(text: str, expected: str) -> None:
    assert compact_timestamp_as_fhir(text) == expected


@pytest.mark.parametrize("text", ["2020-03-01", "20200231", "2020030125", "202003011", "x"])
def test_bad_compact_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        compact_timestamp_as_fhir(text)


def test_identity_reprs_hide_patient_data() -> None:
    patient = PatientIdentity(
        "MRN-7", "110105198012131032", Demographics("Quarnby", "Liora", "1980-12-13", "", "139")
    )
    assert "Quarnby" not in repr(patient) and "110105198012131032" not in repr(patient)
    assert "Quarnby" not in repr(patient.demographics)


def test_plan_records_ids_times_and_facts() -> None:
    message = parse_fhir((MESSAGES / "fhir_lab_message_bundle.json").read_bytes())
    planned = plan_records(message, TOKEN, SOURCE, NOW)
    assert len(planned) == 2
    first, second = planned
    assert all(is_ulid(record.record_id) for record in planned)
    # Ids carry the effective time; an entry without one takes the bundle timestamp.
    assert ulid_time(first.record_id) == first.effective_time
    assert second.effective_time == message.message_time
    assert first.fact is None  # observations do not feed the emergency summary
    assert json.loads(first.payload)["resourceType"] == "Observation"
    assert first.payload_aad == payload_aad(TOKEN, first.record_id)
    assert first.name == record_name(TOKEN, first.record_id)
    stored = first.stored(SOURCE, b"sealed", blob_name="blobs/x")
    assert stored.category == common_pb2.RECORD_CATEGORY_OBSERVATION
    assert stored.source_format == common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
    assert stored.code_display == "Hemoglobin A1c"
    assert stored.blob_name == "blobs/x"  # the pipeline says which blob a record names
    receipt = receipt_for(SOURCE, TOKEN, planned)
    assert receipt.record_ids == (first.record_id, second.record_id)
    assert receipt.content_hash == SOURCE.content_hash


def test_entries_without_any_time_take_now_and_old_facts_get_valid_ids() -> None:
    content = (MESSAGES / "hl7_adt_a08_custom_delimiters.er7").read_bytes()
    message = parse_hl7v2(content)
    entry = message.entries[0]
    old = ClinicalEntry(
        Category.PROCEDURE,
        Coding("http://snomed.info/sct", "80146002", "Appendectomy"),
        datetime(1961, 4, 1, tzinfo=UTC),
        "completed",
        {"resourceType": "Procedure"},
        "content",
    )
    untimed = ClinicalEntry(entry.category, entry.code, None, "active", {}, "content")
    bare = ParsedMessage(message.patient, (old, untimed))
    planned = plan_records(bare, TOKEN, SOURCE, NOW)
    assert planned[0].effective_time == datetime(1961, 4, 1, tzinfo=UTC)
    assert ulid_time(planned[0].record_id) == NOW  # a ULID cannot encode 1961
    assert planned[1].effective_time == NOW


def test_emergency_fact_shape() -> None:
    message = parse_fhir((MESSAGES / "fhir_admission_bundle.json").read_bytes())
    planned = plan_records(message, TOKEN, SOURCE, NOW)
    with_facts = [record for record in planned if record.fact is not None]
    # The allergy, condition and procedure, and the MedicationStatement (anticoagulants).
    assert {record.entry.category for record in with_facts} == FACT_CATEGORIES | {
        Category.MEDICATION
    }
    assert all(
        record.entry.category in FACT_CATEGORIES
        or record.entry.resource["resourceType"] in FACT_RESOURCE_TYPES
        for record in with_facts
    )
    allergy = next(r for r in with_facts if r.entry.category == Category.ALLERGY)
    assert allergy.fact is not None
    assert json.loads(allergy.fact) == {
        "v": 1,
        "category": "RECORD_CATEGORY_ALLERGY",
        "system": "http://snomed.info/sct",
        "code": "764146007",
        "display": "Penicillin",
        "severity": "high",
        "status": "active",
        "effective_time": "2009-06-15T00:00:00Z",
        "source_hospital": "hospital-a",
        "record_name": record_name(TOKEN, allergy.record_id),
    }
    # What record-lookup reads back with the one codec.
    assert decode_fact(allergy.fact, category=0) == Fact(
        category=common_pb2.RECORD_CATEGORY_ALLERGY,
        system="http://snomed.info/sct",
        code="764146007",
        display="Penicillin",
        severity="high",
        status="active",
        effective_time=datetime(2009, 6, 15, tzinfo=UTC),
        source_hospital="hospital-a",
        record_name=record_name(TOKEN, allergy.record_id),
    )
    assert allergy.fact_aad == fact_aad(TOKEN, allergy.record_id)
    fact = allergy.emergency_fact(b"sealed")
    assert (fact.category, fact.record_id) == (
        common_pb2.RECORD_CATEGORY_ALLERGY,
        allergy.record_id,
    )
    condition = next(r for r in with_facts if r.entry.category == Category.CONDITION)
    assert condition.fact is not None
    assert json.loads(condition.fact)["severity"] == "severe"


def test_text_only_concept_stays_out_of_the_clear_columns() -> None:
    entry = ClinicalEntry(
        Category.ALLERGY, Coding("", "", "Sulfonamide"), NOW, "active", {}, "content", "low"
    )
    fact = json.loads(emergency_fact_json(entry, NOW, "hospital-b", TOKEN, "01J"))
    assert fact["display"] == "Sulfonamide"  # sealed: fine
    message = ParsedMessage(PatientIdentity("m", "", Demographics()), (entry,))
    planned = plan_records(message, TOKEN, SOURCE, NOW)
    assert planned[0].stored(SOURCE, b"s", "").code_display == ""


def test_hashes_and_aad() -> None:
    assert content_hash(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert blob_aad(TOKEN) == f"blob:{TOKEN}".encode()
