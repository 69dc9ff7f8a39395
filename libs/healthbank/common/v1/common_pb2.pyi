import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrincipalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRINCIPAL_KIND_UNSPECIFIED: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_CLINICIAN: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_PATIENT: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_EMERGENCY: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_COMMITTEE: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_RESEARCHER: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_SERVICE: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_HOSPITAL_ENGINE: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_PRIVACY_OFFICER: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_AUDITOR: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_PROXY: _ClassVar[PrincipalKind]

class PurposeOfUse(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_OF_USE_UNSPECIFIED: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_TREATMENT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_EMERGENCY: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_RESEARCH: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_PATIENT_ACCESS: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_OPERATIONS: _ClassVar[PurposeOfUse]

class SourceFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_FORMAT_UNSPECIFIED: _ClassVar[SourceFormat]
    SOURCE_FORMAT_FHIR_R4_JSON: _ClassVar[SourceFormat]
    SOURCE_FORMAT_HL7V2: _ClassVar[SourceFormat]
    SOURCE_FORMAT_DICOM: _ClassVar[SourceFormat]
    SOURCE_FORMAT_FHIR_R4_NDJSON: _ClassVar[SourceFormat]

class RecordCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_CATEGORY_UNSPECIFIED: _ClassVar[RecordCategory]
    RECORD_CATEGORY_ALLERGY: _ClassVar[RecordCategory]
    RECORD_CATEGORY_CONDITION: _ClassVar[RecordCategory]
    RECORD_CATEGORY_PROCEDURE: _ClassVar[RecordCategory]
    RECORD_CATEGORY_OBSERVATION: _ClassVar[RecordCategory]
    RECORD_CATEGORY_IMAGING: _ClassVar[RecordCategory]
    RECORD_CATEGORY_MEDICATION: _ClassVar[RecordCategory]
    RECORD_CATEGORY_ENCOUNTER: _ClassVar[RecordCategory]
    RECORD_CATEGORY_DOCUMENT: _ClassVar[RecordCategory]
    RECORD_CATEGORY_PERSONAL_INSIGHTS: _ClassVar[RecordCategory]

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_HOT: _ClassVar[Tier]
    TIER_COLD: _ClassVar[Tier]
PRINCIPAL_KIND_UNSPECIFIED: PrincipalKind
PRINCIPAL_KIND_CLINICIAN: PrincipalKind
PRINCIPAL_KIND_PATIENT: PrincipalKind
PRINCIPAL_KIND_EMERGENCY: PrincipalKind
PRINCIPAL_KIND_COMMITTEE: PrincipalKind
PRINCIPAL_KIND_RESEARCHER: PrincipalKind
PRINCIPAL_KIND_SERVICE: PrincipalKind
PRINCIPAL_KIND_HOSPITAL_ENGINE: PrincipalKind
PRINCIPAL_KIND_PRIVACY_OFFICER: PrincipalKind
PRINCIPAL_KIND_AUDITOR: PrincipalKind
PRINCIPAL_KIND_PROXY: PrincipalKind
PURPOSE_OF_USE_UNSPECIFIED: PurposeOfUse
PURPOSE_OF_USE_TREATMENT: PurposeOfUse
PURPOSE_OF_USE_EMERGENCY: PurposeOfUse
PURPOSE_OF_USE_RESEARCH: PurposeOfUse
PURPOSE_OF_USE_PATIENT_ACCESS: PurposeOfUse
PURPOSE_OF_USE_OPERATIONS: PurposeOfUse
SOURCE_FORMAT_UNSPECIFIED: SourceFormat
SOURCE_FORMAT_FHIR_R4_JSON: SourceFormat
SOURCE_FORMAT_HL7V2: SourceFormat
SOURCE_FORMAT_DICOM: SourceFormat
SOURCE_FORMAT_FHIR_R4_NDJSON: SourceFormat
RECORD_CATEGORY_UNSPECIFIED: RecordCategory
RECORD_CATEGORY_ALLERGY: RecordCategory
RECORD_CATEGORY_CONDITION: RecordCategory
RECORD_CATEGORY_PROCEDURE: RecordCategory
RECORD_CATEGORY_OBSERVATION: RecordCategory
RECORD_CATEGORY_IMAGING: RecordCategory
RECORD_CATEGORY_MEDICATION: RecordCategory
RECORD_CATEGORY_ENCOUNTER: RecordCategory
RECORD_CATEGORY_DOCUMENT: RecordCategory
RECORD_CATEGORY_PERSONAL_INSIGHTS: RecordCategory
TIER_UNSPECIFIED: Tier
TIER_HOT: Tier
TIER_COLD: Tier

class Principal(_message.Message):
    __slots__ = ("kind", "subject", "hospital_id", "roles", "purpose")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    kind: PrincipalKind
    subject: str
    hospital_id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    purpose: PurposeOfUse
    def __init__(self, kind: _Optional[_Union[PrincipalKind, str]] = ..., subject: _Optional[str] = ..., hospital_id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., purpose: _Optional[_Union[PurposeOfUse, str]] = ...) -> None: ...

class Code(_message.Message):
    __slots__ = ("system", "code", "display")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    system: str
    code: str
    display: str
    def __init__(self, system: _Optional[str] = ..., code: _Optional[str] = ..., display: _Optional[str] = ...) -> None: ...

class RecordSource(_message.Message):
    __slots__ = ("format", "message_id", "version", "content_hash")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    format: SourceFormat
    message_id: str
    version: str
    content_hash: str
    def __init__(self, format: _Optional[_Union[SourceFormat, str]] = ..., message_id: _Optional[str] = ..., version: _Optional[str] = ..., content_hash: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("name", "record_id", "person_token", "source_hospital", "source", "category", "code", "effective_time", "status", "tier", "fhir_json", "blob_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FHIR_JSON_FIELD_NUMBER: _ClassVar[int]
    BLOB_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    record_id: str
    person_token: str
    source_hospital: str
    source: RecordSource
    category: RecordCategory
    code: Code
    effective_time: _timestamp_pb2.Timestamp
    status: str
    tier: Tier
    fhir_json: bytes
    blob_name: str
    def __init__(self, name: _Optional[str] = ..., record_id: _Optional[str] = ..., person_token: _Optional[str] = ..., source_hospital: _Optional[str] = ..., source: _Optional[_Union[RecordSource, _Mapping]] = ..., category: _Optional[_Union[RecordCategory, str]] = ..., code: _Optional[_Union[Code, _Mapping]] = ..., effective_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., fhir_json: _Optional[bytes] = ..., blob_name: _Optional[str] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
