"""What every wire format is parsed into, and the small rules the parsers share.

A parser turns one hospital message into a :class:`ParsedMessage`: who the patient is
(:class:`PatientIdentity`, resolved later by the identity service) and one
:class:`ClinicalEntry` per clinical fact, each carrying the FHIR R4 resource that becomes the
record's sealed payload. A message that cannot be parsed raises :class:`InvalidMessage` with
*every* problem found, each as (field path, description).

Field paths start with ``content`` (the request field holding the message):

- FHIR: JSON paths, ``content.entry[2].resource.code.coding[0].system`` (indexes 0-based).
- HL7 v2: ``content.<SEG>[<i>].<field>[<repetition>]``; ``<i>`` is the 0-based occurrence of
  that segment type, ``<field>`` the 1-based HL7 field number, as HL7 people count them
  (``content.PID[0].3[1]`` is the second identifier of the first PID).
- DICOM: attribute keywords, ``content.OtherPatientIDsSequence[0].PatientID``.

Descriptions say which rule was broken, never the offending value: messages carry names, ID
numbers and phone numbers, and errors travel into logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any

# Hospitals in the city send HL7 v2 and DICOM times without a UTC offset in local time.
# China has one time zone and no daylight saving time, so a fixed offset is exact.
HOSPITAL_LOCAL_TZ = timezone(timedelta(hours=8), "CST")
HOSPITAL_LOCAL_OFFSET = "+08:00"

MR_TYPE_CODE = "MR"
"""Identifier type code (HL7 table 0203) of a hospital's medical record number."""


class Category(IntEnum):
    """Clinical category of a record; the numbers of ``healthbank.common.v1.RecordCategory``."""

    ALLERGY = 1
    CONDITION = 2
    PROCEDURE = 3
    OBSERVATION = 4
    IMAGING = 5
    MEDICATION = 6
    ENCOUNTER = 7
    DOCUMENT = 8


class SourceFormat(IntEnum):
    """Wire format of a message; the numbers of ``healthbank.common.v1.SourceFormat``."""

    FHIR_R4_JSON = 1
    HL7V2 = 2
    DICOM = 3
    FHIR_R4_NDJSON = 4


class Disposition(IntEnum):
    """What became of one resource of a FHIR message; ``ingest.v1.ResourceDisposition``."""

    RECORD = 1  # a mapped type: a canonical record of its category
    DOCUMENT = 2  # any other type: a document record under the patient
    DIRECTORY = 3  # Organization, Practitioner, Location ...: the hospital's directory
    SKIPPED = 4  # not stored, and the outcome says why


@dataclass(frozen=True)
class Coding:
    """A coded concept. ``system`` and ``code`` are empty for a text-only concept."""

    system: str
    code: str
    display: str = ""


@dataclass(frozen=True)
class Demographics:
    """Demographics as the hospital sent them (for identity matching; never logged)."""

    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""  # YYYY-MM-DD, or empty
    sex: str = ""  # male, female, other, unknown, or empty
    phone: str = ""
    # Home address as one line, largest part first (province, city, district, street), so
    # two hospitals' registrations compare alike; identity normalizes it for matching.
    address: str = ""

    def __repr__(self) -> str:
        # Dataclass reprs end up in tracebacks and debug logs: never show the values.
        return "Demographics(<redacted>)"


def address_line(*parts: str) -> str:
    """An address's parts, largest first, as one line: empty parts left out, line breaks
    and runs of spaces made one space (identity refuses what is not printable)."""
    return " ".join(word for part in parts for word in part.split())


_HAN = re.compile(r"[\u3400-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
# Scripts whose names are written family name first: Han, Japanese kana, Korean Hangul.
_FAMILY_FIRST = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
# Between a transliterated given and family name (约翰·史密斯) or a Uyghur personal and
# father's name: the middle dot and its look-alikes.
_NAME_DOTS = re.compile(r"\s*[\u00b7\u2027\u30fb\u2022\uff0e]\s*")
# Two-character family names, Chinese (复姓, simplified and traditional) and Korean: the
# rest of a name written whole is the given name.
_COMPOUND_SURNAMES = frozenset(
    (  # noqa: SIM905 (a list literal would take a line a name)
        "欧阳 歐陽 司马 司馬 上官 诸葛 諸葛 东方 東方 皇甫 尉迟 尉遲 公孙 公孫 慕容 长孙 長孫"
        " 宇文 司徒 夏侯 轩辕 軒轅 令狐 端木 独孤 獨孤 南宫 南宮 西门 西門 百里 呼延 澹台"
        " 公冶 太史 申屠 闻人 聞人 赫连 赫連 濮阳 濮陽 钟离 鍾離 宗政 万俟 萬俟 单于 單于"
        " 仲孙 仲孫 鲜于 鮮于 闾丘 閭丘 东郭 東郭 公羊 拓跋 司空 左丘 第五 梁丘 谷梁 穀梁"
        " 微生 羊舌 乐正 樂正 漆雕 巫马 巫馬 公西 亓官 司寇 太叔"
        " 남궁 황보 제갈 선우 독고 사공 서문"
    ).split()
)


def full_name_parts(text: str) -> tuple[str, str]:
    """(family, given) of a name written whole, as FHIR's ``HumanName.text`` or a Chinese
    hospital's one-field name carries it.

    - "Family, Given": the comma says which is which.
    - Han, kana or Hangul: family name first. Written with a space (山田 太郎), the first
      word; a transliterated name with a middle dot (约翰·史密斯, ジョン・スミス) ends with
      it; written together in Han or Hangul (张伟, 김민수), a two-character family name
      such as 欧阳 or 남궁 when it is one, else the first character; kana together are
      left whole (no rule says where a Japanese family name ends).
    - Otherwise the last word is the family name ("Liora Quarnby").

    Identity's matching compares the names both ways round and as one string too, so a
    wrong guess costs little; what it needs is a given name to tell twins apart.
    """
    text = " ".join(text.replace("，", ",").split())
    if "," in text:
        family, _, given = text.partition(",")
        return family.strip(), given.strip()
    if _FAMILY_FIRST.search(text):
        parts = _NAME_DOTS.split(text)
        if len(parts) > 1:
            return parts[-1], " ".join(parts[:-1])
        if " " in text:
            family, _, given = text.partition(" ")
            return family, given
        if not (_HAN.match(text) or _HANGUL.match(text)):
            return text, ""
        cut = 2 if text[:2] in _COMPOUND_SURNAMES else 1
        return text[:cut], text[cut:]
    family_first, _, family = text.rpartition(" ")
    return family, family_first


def one_field_name(family: str, given: str) -> tuple[str, str]:
    """(family, given) as an HL7 or DICOM message sent them, except an East Asian name
    written whole into the family component (PID-5.1 "张伟", no given name), which is split
    as :func:`full_name_parts` does. A Latin family name alone stays one: "Smith" is a
    family name."""
    if family and not given and _FAMILY_FIRST.search(family):
        return full_name_parts(family)
    return family, given


@dataclass(frozen=True)
class PatientIdentity:
    """The patient a message is about, as the hospital identifies them.

    ``field_paths`` maps identity request fields ("mrn", "national_id", "prior_mrns",
    "demographics.birth_date" ...) to where they came from in the message, so a rejection by
    the identity service can point at the offending part of the content; "identifiers" is
    where the patient's identifiers are (or should be). ``unidentified`` marks a message
    that does not say who the patient is: ``mrn`` is then a placeholder the parser derived
    (a DICOM file without PatientID), and the acknowledgement says so.
    """

    mrn: str
    national_id: str  # normalized, validated; empty when the message carries none
    demographics: Demographics
    field_paths: Mapping[str, str] = field(default_factory=dict)
    unidentified: bool = False
    # The hospital's earlier record numbers of this patient merged into ``mrn`` (ADT^A40):
    # identity makes their persons this one (ADR 33).
    prior_mrns: tuple[str, ...] = ()
    # The district of the patient's home address as sent (FHIR Patient.address.district,
    # HL7 PID-11.9), for surveillance counts (ADR 30); empty when the message says none.
    district: str = ""

    def __repr__(self) -> str:
        return "PatientIdentity(<redacted>)"


@dataclass(frozen=True)
class ClinicalEntry:
    """One clinical fact of a message: becomes one canonical record.

    ``resource`` is the FHIR R4 JSON object of the record (the original resource for FHIR
    input, a mapped one for HL7 v2 and DICOM); it is sealed before storage. ``severity`` is
    the allergy criticality or the condition severity, lower case, or empty.
    """

    category: Category
    code: Coding
    effective_time: datetime | None
    status: str
    resource: Mapping[str, Any]
    path: str
    severity: str = ""
    source_version: str = ""

    def __repr__(self) -> str:
        return f"ClinicalEntry({self.category.name}, {self.path})"


@dataclass(frozen=True)
class ResourceOutcome:
    """What became of one resource of a message, for the acknowledgement.

    ``entry_index`` is the index in :attr:`ParsedMessage.entries` of the record the resource
    became (RECORD and DOCUMENT), else None; ``reason`` says why a resource was skipped.
    """

    resource_type: str
    resource_id: str
    disposition: Disposition
    entry_index: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class DirectoryEntry:
    """A resource of the hospital's directory (Organization, Practitioner, Location ...).

    Not about a patient: stored in ingest's own store per hospital, replacing an earlier
    version of the same (type, id).
    """

    resource_type: str
    resource_id: str
    resource: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class ImagingContent:
    """Bytes that go to the archive blob store (sealed) instead of the hot store."""

    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ParsedMessage:
    """A hospital message, parsed and validated, not yet resolved to a person.

    ``message_time`` (when the hospital produced the message, if it says) is the fallback
    effective time of entries that carry no time of their own. ``patient`` is None only for
    a directory message (FHIR resources describing the hospital, no patient): then
    ``entries`` is empty and ``directory`` holds its resources. ``outcomes`` (FHIR input)
    says what became of each resource, in message order.
    """

    patient: PatientIdentity | None
    entries: tuple[ClinicalEntry, ...]
    message_time: datetime | None = None
    imaging: ImagingContent | None = None
    outcomes: tuple[ResourceOutcome, ...] = ()
    directory: tuple[DirectoryEntry, ...] = ()


@dataclass(frozen=True)
class PatientPart:
    """One patient's part of a message of several patients, stored as a message of its own.

    ``ordinal`` is the Patient's place among the message's Patients (1-based), which names
    the part (:meth:`message_id`); ``content_hash`` covers the part's resources, so a retry
    of the message finds each part's receipt. ``message`` is the part parsed, or ``problem``
    says why it cannot be accepted (the other parts are unaffected).
    """

    ordinal: int
    content_hash: str
    message: ParsedMessage | None
    problem: InvalidMessage | None = None

    def message_id(self, message_id: str) -> str:
        """The part's message id, derived from the whole message's id."""
        return f"{message_id}#patient-{self.ordinal}"


@dataclass(frozen=True)
class ParsedBatch:
    """A FHIR batch, transaction or collection Bundle (or NDJSON) about several patients.

    Each patient's part (their Patient and the resources that are theirs) is stored
    all-or-nothing on its own (:class:`PatientPart`); ``directory`` and ``outcomes`` are
    the message's resources that are nobody's: the hospital's directory and the envelope.
    """

    parts: tuple[PatientPart, ...]
    outcomes: tuple[ResourceOutcome, ...] = ()
    directory: tuple[DirectoryEntry, ...] = ()


Parsed = ParsedMessage | ParsedBatch
"""What parsing a submission gives: one patient's (or the directory's) message, or several."""


class InvalidMessage(Exception):
    """The message cannot be accepted; ``violations`` lists every (field path, description)."""

    def __init__(self, reason: str, violations: list[tuple[str, str]]) -> None:
        super().__init__(f"{reason}: {', '.join(dict.fromkeys(f for f, _ in violations))}")
        self.reason = reason
        self.violations = list(violations)

    def __reduce__(self) -> tuple[type[InvalidMessage], tuple[str, list[tuple[str, str]]]]:
        # Raised in a parse worker process and re-raised here: rebuilt from its fields.
        return (InvalidMessage, (self.reason, self.violations))


class Problems:
    """Collects what is wrong with a message, so the hospital learns everything at once."""

    def __init__(self, reason: str) -> None:
        """Start an empty list; ``reason`` is the ErrorInfo reason if anything is added."""
        self.reason = reason
        self._items: list[tuple[str, str]] = []

    def add(self, path: str, description: str) -> None:
        """Record that the element at ``path`` breaks the rule ``description``."""
        self._items.append((path, description))

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_any(self) -> None:
        """Raise :class:`InvalidMessage` listing every problem, if there is any."""
        if self._items:
            raise InvalidMessage(self.reason, self._items)


# FHIR R4 dateTime: YYYY, YYYY-MM, YYYY-MM-DD, or a full time with seconds and a zone.
_FHIR_DATETIME = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?P<fraction>\.\d+)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2}))?)?)?$"
)
# HL7 v2 TS/DTM: YYYY[MM[DD[HH[MM[SS[.S{1,4}]]]]]][+/-ZZZZ].
_HL7_TIMESTAMP = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?P<fraction>\.\d{1,6})?(?P<zone>[+-]\d{4})?$"
)


def parse_fhir_datetime(text: str) -> datetime:
    """A FHIR ``date``, ``dateTime`` or ``instant`` as a UTC datetime.

    Partial dates mean the start of the period (``2019`` → 2019-01-01T00:00Z); a date without
    a time is taken as midnight UTC so that it keeps its calendar day. Raises ValueError
    with a description that does not contain the value.
    """
    match = _FHIR_DATETIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            "must be a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a zone)"
        )
    zone = match["zone"]
    tz = UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return _build(match, tz)


def compact_timestamp_as_fhir(text: str) -> str:
    """An HL7 v2 TS/DTM (or DICOM DA+TM / DT) value as a FHIR dateTime, keeping its precision.

    ``20200301`` → ``2020-03-01``; ``202611020915`` → ``2026-11-02T09:15:00+08:00``. A value
    with a time but no offset is hospital local time (:data:`HOSPITAL_LOCAL_TZ`). Raises
    ValueError (without the value) when the text is not a valid timestamp.
    """
    match = _HL7_TIMESTAMP.match(text)
    if match is None:
        raise ValueError("must be an HL7 timestamp YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ]")
    if match["day"] is None or match["hour"] is None:
        # A date (or part of one): FHIR dates carry no zone.
        parts = [match["year"], match["month"], match["day"]]
        rendered = "-".join(part for part in parts if part)
    else:
        zone = match["zone"]
        offset = f"{zone[:3]}:{zone[3:]}" if zone else HOSPITAL_LOCAL_OFFSET
        rendered = (
            f"{match['year']}-{match['month']}-{match['day']}T{match['hour']}:"
            f"{match['minute'] or '00'}:{match['second'] or '00'}{match['fraction'] or ''}{offset}"
        )
    parse_fhir_datetime(rendered)  # rejects impossible dates such as 20230231
    return rendered


def _build(match: re.Match[str], tz: timezone) -> datetime:
    try:
        fraction = match["fraction"]
        moment = datetime(
            int(match["year"]),
            int(match["month"] or 1),
            int(match["day"] or 1),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            min(int(match["second"] or 0), 59),  # a leap second is clamped, not rejected
            min(int(float(fraction) * 1_000_000), 999_999) if fraction else 0,
            tzinfo=tz,
        )
    except ValueError:
        raise ValueError("is not a valid calendar date or time") from None
    return moment.astimezone(UTC)


def birth_date_iso(value: date) -> str:
    """A birth date as Demographics wants it: YYYY-MM-DD."""
    return value.isoformat()


def mr_reference(mrn: str) -> dict[str, Any]:
    """A FHIR Reference to the patient by hospital record number.

    Used as ``subject`` of resources built from HL7 v2 and DICOM, which have no Patient
    resource to point at. The payload is sealed, so the number stays confidential.
    """
    return {
        "identifier": {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": MR_TYPE_CODE,
                    }
                ]
            },
            "value": mrn,
        }
    }
