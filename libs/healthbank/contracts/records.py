"""The one conversion between a stored record and the API's ``common.v1.Record``.

The archive writes a record's metadata into cold segments with :func:`record_to_proto`
(no payload); record-lookup shows records with it (payload opened) and reads the archive's
cold records back with :func:`record_from_proto`. The hot store's packed cell (ADR 60) is
the same message with only the descriptive fields (:func:`fill_descriptive`,
:func:`record_from_packed`); a record read from one is shown by copying the cell's bytes
into its message (ADR 63).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import timestamp_pb2

from healthbank.common.v1 import common_pb2
from healthbank.records.model import StoredRecord, packed_fields_of

__all__ = [
    "fill_descriptive",
    "fill_record",
    "record_from_descriptive",
    "record_from_packed",
    "record_from_proto",
    "record_to_proto",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def record_to_proto(
    record: StoredRecord, *, tier: common_pb2.Tier, fhir_json: bytes = b""
) -> common_pb2.Record:
    """The record as the API shows it; ``fhir_json`` is the opened payload, if any."""
    message = common_pb2.Record()
    fill_record(message, record, tier=tier, fhir_json=fhir_json)
    return message


def fill_record(
    message: common_pb2.Record,
    record: StoredRecord,
    *,
    tier: common_pb2.Tier,
    fhir_json: bytes = b"",
) -> None:
    """:func:`record_to_proto` into an empty ``message`` (a page's new item): a message
    passed to a constructor is copied, and a 1,000-record history paid ~5 ms for copies."""
    message.name = record.name
    message.record_id = record.record_id
    message.person_token = record.person_token
    packed = packed_fields_of(record)
    if packed is None:
        fill_descriptive(message, record)
    else:  # the same fields, parsed in C rather than set one by one (ADR 63)
        message.MergeFromString(packed)
    message.tier = tier
    message.fhir_json = fhir_json
    _set_timestamp(message.effective_time, record.effective_time)


def fill_descriptive(message: common_pb2.Record, record: StoredRecord) -> None:
    """The record's descriptive fields (all but its name, ids, time, tier and payload)
    into ``message``."""
    message.source_hospital = record.source_hospital
    source = message.source
    source.format = cast(common_pb2.SourceFormat, record.source_format)
    source.message_id = record.message_id
    source.version = record.source_version
    source.content_hash = record.content_hash
    message.category = cast(common_pb2.RecordCategory, record.category)
    code = message.code
    code.system = record.code_system
    code.code = record.code
    code.display = record.code_display
    message.status = record.status
    message.blob_name = record.blob_name


def _set_timestamp(timestamp: timestamp_pb2.Timestamp, moment: datetime) -> None:
    """``timestamp.FromDatetime(moment)`` (naive: UTC) at a fifth of its cost, which a
    1,000-record history pays per record (ADR 23)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    since_epoch = moment - _EPOCH
    timestamp.seconds = since_epoch.days * 86_400 + since_epoch.seconds
    timestamp.nanos = since_epoch.microseconds * 1000


def record_from_proto(message: common_pb2.Record, sealed_payload: bytes) -> StoredRecord:
    """A record from its API form, with its payload still sealed."""
    return record_from_descriptive(
        message,
        record_id=message.record_id,
        person_token=message.person_token,
        effective_time=message.effective_time.ToDatetime(tzinfo=UTC),
        sealed_payload=sealed_payload,
    )


def record_from_descriptive(
    message: common_pb2.Record,
    *,
    record_id: str,
    person_token: str,
    effective_time: datetime,
    sealed_payload: bytes,
) -> StoredRecord:
    """A record from ``message``'s descriptive fields (:func:`fill_descriptive`) and the
    rest given apart."""
    return StoredRecord.from_fields(
        {
            "record_id": record_id,
            "person_token": person_token,
            "effective_time": effective_time,
            "sealed_payload": sealed_payload,
            **_descriptive_fields(message),
        }
    )


def record_from_packed(
    packed: bytes,
    *,
    record_id: str,
    person_token: str,
    effective_time: datetime,
    sealed_payload: bytes,
) -> StoredRecord:
    """A record from a packed cell (``packed``: a serialized Record with only the
    descriptive fields, as :func:`fill_descriptive` sets them) and the rest given apart;
    the cell is parsed only when a descriptive field is read, and :func:`fill_record`
    copies it whole (ADR 63)."""
    return StoredRecord.with_packed_fields(
        {
            "record_id": record_id,
            "person_token": person_token,
            "effective_time": effective_time,
            "sealed_payload": sealed_payload,
        },
        packed,
        _unpack,
    )


def _unpack(packed: bytes) -> Mapping[str, Any]:
    return _descriptive_fields(common_pb2.Record.FromString(packed))


def _descriptive_fields(message: common_pb2.Record) -> dict[str, Any]:
    """The StoredRecord fields :func:`fill_descriptive` writes into ``message``."""
    source = message.source
    code = message.code
    return {
        "source_hospital": message.source_hospital,
        "source_format": int(source.format),
        "message_id": source.message_id,
        "source_version": source.version,
        "content_hash": source.content_hash,
        "category": int(message.category),
        "code_system": code.system,
        "code": code.code,
        "code_display": code.display,
        "status": message.status,
        "blob_name": message.blob_name,
    }
