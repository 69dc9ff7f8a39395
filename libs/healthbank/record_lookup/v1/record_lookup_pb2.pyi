import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from healthbank.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Light(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIGHT_UNSPECIFIED: _ClassVar[Light]
    LIGHT_GREEN: _ClassVar[Light]
    LIGHT_YELLOW: _ClassVar[Light]
    LIGHT_RED: _ClassVar[Light]
LIGHT_UNSPECIFIED: Light
LIGHT_GREEN: Light
LIGHT_YELLOW: Light
LIGHT_RED: Light

class FindRecentExamsRequest(_message.Message):
    __slots__ = ("parent", "modality", "body_site", "loinc_code", "window_days")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    BODY_SITE_FIELD_NUMBER: _ClassVar[int]
    LOINC_CODE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    modality: str
    body_site: str
    loinc_code: str
    window_days: int
    def __init__(self, parent: _Optional[str] = ..., modality: _Optional[str] = ..., body_site: _Optional[str] = ..., loinc_code: _Optional[str] = ..., window_days: _Optional[int] = ...) -> None: ...

class RecentExam(_message.Message):
    __slots__ = ("record_name", "hospital_id", "effective_time", "code_system", "code", "display", "rule", "is_cold")
    RECORD_NAME_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_ID_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    CODE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    IS_COLD_FIELD_NUMBER: _ClassVar[int]
    record_name: str
    hospital_id: str
    effective_time: _timestamp_pb2.Timestamp
    code_system: str
    code: str
    display: str
    rule: str
    is_cold: bool
    def __init__(self, record_name: _Optional[str] = ..., hospital_id: _Optional[str] = ..., effective_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_system: _Optional[str] = ..., code: _Optional[str] = ..., display: _Optional[str] = ..., rule: _Optional[str] = ..., is_cold: _Optional[bool] = ...) -> None: ...

class FindRecentExamsResponse(_message.Message):
    __slots__ = ("exams",)
    EXAMS_FIELD_NUMBER: _ClassVar[int]
    exams: _containers.RepeatedCompositeFieldContainer[RecentExam]
    def __init__(self, exams: _Optional[_Iterable[_Union[RecentExam, _Mapping]]] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("parent", "categories", "effective")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.RecordCategory]
    effective: _common_pb2.Interval
    def __init__(self, parent: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.RecordCategory, str]]] = ..., effective: _Optional[_Union[_common_pb2.Interval, _Mapping]] = ...) -> None: ...

class HistoryItem(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _common_pb2.Record
    def __init__(self, record: _Optional[_Union[_common_pb2.Record, _Mapping]] = ...) -> None: ...

class GetImageRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("record_name", "blob_name", "content_type", "size_bytes", "chunk")
    RECORD_NAME_FIELD_NUMBER: _ClassVar[int]
    BLOB_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    record_name: str
    blob_name: str
    content_type: str
    size_bytes: int
    chunk: bytes
    def __init__(self, record_name: _Optional[str] = ..., blob_name: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class HistoryPage(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[HistoryItem]
    def __init__(self, items: _Optional[_Iterable[_Union[HistoryItem, _Mapping]]] = ...) -> None: ...

class GetEmergencySummaryRequest(_message.Message):
    __slots__ = ("national_id", "justification")
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    national_id: str
    justification: str
    def __init__(self, national_id: _Optional[str] = ..., justification: _Optional[str] = ...) -> None: ...

class Fact(_message.Message):
    __slots__ = ("category", "code", "severity", "effective_time", "source_hospital", "record_name")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    RECORD_NAME_FIELD_NUMBER: _ClassVar[int]
    category: _common_pb2.RecordCategory
    code: _common_pb2.Code
    severity: str
    effective_time: _timestamp_pb2.Timestamp
    source_hospital: str
    record_name: str
    def __init__(self, category: _Optional[_Union[_common_pb2.RecordCategory, str]] = ..., code: _Optional[_Union[_common_pb2.Code, _Mapping]] = ..., severity: _Optional[str] = ..., effective_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_hospital: _Optional[str] = ..., record_name: _Optional[str] = ...) -> None: ...

class EmergencySummary(_message.Message):
    __slots__ = ("person_token", "light", "light_reason", "allergies", "surgeries", "conditions", "audit_leaf_index", "break_glass_name", "generate_time", "medications", "devices")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    LIGHT_REASON_FIELD_NUMBER: _ClassVar[int]
    ALLERGIES_FIELD_NUMBER: _ClassVar[int]
    SURGERIES_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MEDICATIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    light: Light
    light_reason: str
    allergies: _containers.RepeatedCompositeFieldContainer[Fact]
    surgeries: _containers.RepeatedCompositeFieldContainer[Fact]
    conditions: _containers.RepeatedCompositeFieldContainer[Fact]
    audit_leaf_index: int
    break_glass_name: str
    generate_time: _timestamp_pb2.Timestamp
    medications: _containers.RepeatedCompositeFieldContainer[Fact]
    devices: _containers.RepeatedCompositeFieldContainer[Fact]
    def __init__(self, person_token: _Optional[str] = ..., light: _Optional[_Union[Light, str]] = ..., light_reason: _Optional[str] = ..., allergies: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ..., surgeries: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ..., conditions: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ..., audit_leaf_index: _Optional[int] = ..., break_glass_name: _Optional[str] = ..., generate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., medications: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ..., devices: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ...) -> None: ...
