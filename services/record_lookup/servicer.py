"""The RecordLookupService gRPC edge: request validation, the flow, response protos.

The reads themselves (consent → audit → read → decrypt) are :mod:`services.record_lookup.flow`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import cast

from google.protobuf import timestamp_pb2

from healthbank.common.v1 import common_pb2
from healthbank.contracts.facts import Fact
from healthbank.contracts.names import (
    PERSON_NAME_RULE,
    RECORD_NAME_RULE,
    parse_person_name,
    parse_record_name,
)
from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from healthbank.contracts.principal import Principal
from healthbank.contracts.records import fill_record
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.rpc import ServiceError, Violations, require_principal
from services.record_lookup import domain
from services.record_lookup.flow import (
    EmergencyReport,
    HistoryEntry,
    ImageNotFound,
    OrderedExam,
    RecordLookupFlow,
)

SERVICE = "record-lookup"
# Records per GetHistoryPages message: one message per record cost half of the service's time.
HISTORY_PAGE_SIZE = 100

# Image chunks stay well under gRPC's default 4 MiB message limit.
IMAGE_CHUNK_BYTES = 1024 * 1024

# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


class RecordLookupServicer(record_lookup_pb2_grpc.RecordLookupServiceServicer):
    """Serves GetHistory and GetEmergencySummary over a :class:`RecordLookupFlow`."""

    def __init__(self, flow: RecordLookupFlow, *, now: Callable[[], datetime]) -> None:
        """Serve ``flow``; ``now`` (UTC) is the day national IDs are validated against."""
        self._flow = flow
        self._now = now

    async def GetHistory(
        self, request: record_lookup_pb2.GetHistoryRequest, context: object
    ) -> AsyncIterator[record_lookup_pb2.HistoryItem]:
        """Stream a person's records, oldest first, after consent and audit."""
        principal = require_principal()
        for entry in await self._history(request, principal):
            item = record_lookup_pb2.HistoryItem()
            _fill_item(item, entry)
            yield item

    async def GetHistoryPages(
        self, request: record_lookup_pb2.GetHistoryRequest, context: object
    ) -> AsyncIterator[record_lookup_pb2.HistoryPage]:
        """GetHistory in pages of up to HISTORY_PAGE_SIZE records (one gRPC message each)."""
        principal = require_principal()
        entries = await self._history(request, principal)
        for start in range(0, len(entries), HISTORY_PAGE_SIZE):
            page = record_lookup_pb2.HistoryPage()
            for entry in entries[start : start + HISTORY_PAGE_SIZE]:
                _fill_item(page.items.add(), entry)
            yield page

    async def _history(
        self, request: record_lookup_pb2.GetHistoryRequest, principal: Principal
    ) -> list[HistoryEntry]:
        person_token, start, end = _validate_history(request)
        # The flow reads and opens everything first: no silently truncated history.
        return await self._flow.history(
            principal, person_token, list(request.categories), start, end
        )

    async def GetImage(
        self, request: record_lookup_pb2.GetImageRequest, context: object
    ) -> AsyncIterator[record_lookup_pb2.ImageChunk]:
        """Stream a record's image after consent (IMAGING) and audit; metadata first."""
        principal = require_principal()
        violations = Violations()
        parsed = violations.parse(request.name, "name", parse_record_name, RECORD_NAME_RULE)
        violations.raise_if_any()
        assert parsed is not None
        person_token, record_id = parsed
        try:
            image = await self._flow.image(principal, person_token, record_id)
        except ImageNotFound:
            raise ServiceError.not_found(
                "the record does not exist or carries no image", reason="IMAGE_NOT_FOUND"
            ) from None
        content = image.content
        for offset in range(0, max(len(content), 1), IMAGE_CHUNK_BYTES):
            chunk = record_lookup_pb2.ImageChunk(chunk=content[offset : offset + IMAGE_CHUNK_BYTES])
            if offset == 0:
                chunk.record_name = image.record_name
                chunk.blob_name = image.blob_name
                chunk.content_type = image.content_type
                chunk.size_bytes = len(content)
            yield chunk

    async def FindRecentExams(
        self, request: record_lookup_pb2.FindRecentExamsRequest, context: object
    ) -> record_lookup_pb2.FindRecentExamsResponse:
        """Equivalent exams within the window, for an order about to be placed."""
        principal = require_principal()
        person_token, ordered, window_days = _validate_recent_exams(request)
        since = self._now() - timedelta(days=window_days)
        found = await self._flow.recent_exams(principal, person_token, ordered, since)
        response = record_lookup_pb2.FindRecentExamsResponse()
        for exam in found:
            item = response.exams.add(
                record_name=exam.record.name,
                hospital_id=exam.record.source_hospital,
                code_system=exam.record.code_system,
                code=exam.record.code,
                display=exam.record.code_display,
                rule=exam.rule,
                is_cold=exam.is_cold,
            )
            item.effective_time.FromDatetime(exam.record.effective_time)
        return response

    async def GetEmergencySummary(
        self, request: record_lookup_pb2.GetEmergencySummaryRequest, context: object
    ) -> record_lookup_pb2.EmergencySummary:
        """Break the glass for a national ID and return the traffic light."""
        principal = require_principal()
        national_id, justification = _validate_emergency(request, self._now())
        report = await self._flow.emergency_summary(principal, national_id, justification)
        return _summary_proto(report)


def _fill_item(item: record_lookup_pb2.HistoryItem, entry: HistoryEntry) -> None:
    tier = common_pb2.TIER_COLD if entry.is_cold else common_pb2.TIER_HOT
    fill_record(item.record, entry.record, tier=tier, fhir_json=entry.fhir_json)


# --- validation -----------------------------------------------------------------------------


def _validate_history(
    request: record_lookup_pb2.GetHistoryRequest,
) -> tuple[str, datetime | None, datetime | None]:
    violations = Violations()
    person_token = _check_parent(violations, request.parent, "parent")
    for index, category in enumerate(request.categories):
        violations.check(
            category in domain.KNOWN_CATEGORIES,
            f"categories[{index}]",
            "must be a known record category",
        )
    effective = request.effective if request.HasField("effective") else None
    start, end = _check_interval(violations, effective, "effective")
    violations.raise_if_any()
    assert person_token is not None
    return person_token, start, end


MAX_EXAM_WINDOW_DAYS = 3650
LOINC_CODE = re.compile(r"[0-9]{1,7}-[0-9]")


def _validate_recent_exams(
    request: record_lookup_pb2.FindRecentExamsRequest,
) -> tuple[str, OrderedExam, int]:
    violations = Violations()
    person_token = _check_parent(violations, request.parent, "parent")
    imaging = bool(request.modality or request.body_site)
    if request.loinc_code:
        violations.check(
            not imaging, "loinc_code", "give either loinc_code or modality and body_site"
        )
        violations.check(
            LOINC_CODE.fullmatch(request.loinc_code) is not None,
            "loinc_code",
            "must be a LOINC code (digits, a hyphen, a check digit)",
        )
    else:
        violations.require(request.modality, "modality")
        violations.require(request.body_site, "body_site")
        modality = request.modality
        violations.check(
            not modality or (len(modality) <= 16 and modality.isascii() and modality.isalnum()),
            "modality",
            "must be a DICOM modality code (letters, e.g. CT)",
        )
        violations.check(len(request.body_site) <= 64, "body_site", "must be at most 64 characters")
    violations.check(
        1 <= request.window_days <= MAX_EXAM_WINDOW_DAYS,
        "window_days",
        f"must be 1 to {MAX_EXAM_WINDOW_DAYS}",
    )
    violations.raise_if_any()
    assert person_token is not None
    ordered = OrderedExam(request.modality, request.body_site, request.loinc_code)
    return person_token, ordered, request.window_days


def _check_parent(violations: Violations, parent: str, field: str) -> str | None:
    return violations.parse(parent, field, parse_person_name, PERSON_NAME_RULE)


def _check_interval(
    violations: Violations, interval: common_pb2.Interval | None, field: str
) -> tuple[datetime | None, datetime | None]:
    """Validate an optional ``Interval`` field; returns its (start, end), None where open."""
    if interval is None:
        return None, None
    start = _timestamp(violations, interval, "start", f"{field}.start")
    end = _timestamp(violations, interval, "end", f"{field}.end")
    if start is not None and end is not None:
        violations.check(start < end, f"{field}.end", f"must be after {field}.start")
    return start, end


def _timestamp(
    violations: Violations, interval: common_pb2.Interval, name: str, field: str
) -> datetime | None:
    if not interval.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(interval, name)
    valid = _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000
    if not violations.check(valid, field, "must be a valid timestamp"):
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def _validate_emergency(
    request: record_lookup_pb2.GetEmergencySummaryRequest, now: datetime
) -> tuple[str, str]:
    """(national ID, justification), or INVALID_ARGUMENT listing every bad field."""
    violations = Violations()
    national_id = ""
    if violations.require(request.national_id, "national_id"):
        try:
            national_id = validate_national_id(request.national_id, today=now.date())
        except InvalidNationalId as error:
            # The reason describes the rule that failed, never the number.
            violations.add("national_id", error.reason)
    justification = request.justification.strip()
    if violations.require(justification, "justification"):
        violations.check(
            len(justification) >= domain.MIN_JUSTIFICATION_LENGTH,
            "justification",
            f"must be at least {domain.MIN_JUSTIFICATION_LENGTH} characters",
        )
    violations.raise_if_any()
    return national_id, justification


# --- protos ---------------------------------------------------------------------------------


def _summary_proto(report: EmergencyReport) -> record_lookup_pb2.EmergencySummary:
    summary = report.summary
    message = record_lookup_pb2.EmergencySummary(
        person_token=report.person_token,
        light=cast(record_lookup_pb2.Light, int(summary.light.light)),
        light_reason=summary.light.reason,
        allergies=[_fact_proto(fact) for fact in summary.allergies],
        surgeries=[_fact_proto(fact) for fact in summary.surgeries],
        conditions=[_fact_proto(fact) for fact in summary.conditions],
        medications=[_fact_proto(fact) for fact in summary.medications],
        devices=[_fact_proto(fact) for fact in summary.devices],
        audit_leaf_index=report.audit_leaf_index,
        break_glass_name=report.break_glass_name,
    )
    message.generate_time.FromDatetime(report.generate_time)
    return message


def _fact_proto(fact: Fact) -> record_lookup_pb2.Fact:
    message = record_lookup_pb2.Fact(
        category=fact.category,  # type: ignore[arg-type]
        code=common_pb2.Code(system=fact.system, code=fact.code, display=fact.display),
        severity=fact.severity,
        source_hospital=fact.source_hospital,
        record_name=fact.record_name,
    )
    if fact.effective_time is not None:
        message.effective_time.FromDatetime(fact.effective_time)
    return message
