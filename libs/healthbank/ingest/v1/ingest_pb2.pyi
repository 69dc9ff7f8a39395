from healthbank.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_STORED: _ClassVar[Outcome]
    OUTCOME_DUPLICATE: _ClassVar[Outcome]
    OUTCOME_REJECTED: _ClassVar[Outcome]
    OUTCOME_PARTIALLY_STORED: _ClassVar[Outcome]

class ResourceDisposition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_DISPOSITION_UNSPECIFIED: _ClassVar[ResourceDisposition]
    RESOURCE_DISPOSITION_RECORD: _ClassVar[ResourceDisposition]
    RESOURCE_DISPOSITION_DOCUMENT: _ClassVar[ResourceDisposition]
    RESOURCE_DISPOSITION_DIRECTORY: _ClassVar[ResourceDisposition]
    RESOURCE_DISPOSITION_SKIPPED: _ClassVar[ResourceDisposition]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_STORED: Outcome
OUTCOME_DUPLICATE: Outcome
OUTCOME_REJECTED: Outcome
OUTCOME_PARTIALLY_STORED: Outcome
RESOURCE_DISPOSITION_UNSPECIFIED: ResourceDisposition
RESOURCE_DISPOSITION_RECORD: ResourceDisposition
RESOURCE_DISPOSITION_DOCUMENT: ResourceDisposition
RESOURCE_DISPOSITION_DIRECTORY: ResourceDisposition
RESOURCE_DISPOSITION_SKIPPED: ResourceDisposition

class SubmitRequest(_message.Message):
    __slots__ = ("hospital_id", "message_id", "format", "content", "more_content")
    HOSPITAL_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MORE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    hospital_id: str
    message_id: str
    format: _common_pb2.SourceFormat
    content: bytes
    more_content: bool
    def __init__(self, hospital_id: _Optional[str] = ..., message_id: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.SourceFormat, str]] = ..., content: _Optional[bytes] = ..., more_content: _Optional[bool] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("reason", "message", "field_violations", "retryable", "violations_total")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    field_violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    retryable: bool
    violations_total: int
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., field_violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ..., retryable: _Optional[bool] = ..., violations_total: _Optional[int] = ...) -> None: ...

class ResourceOutcome(_message.Message):
    __slots__ = ("resource_type", "resource_id", "disposition", "record_name", "reason")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPOSITION_FIELD_NUMBER: _ClassVar[int]
    RECORD_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    resource_type: str
    resource_id: str
    disposition: ResourceDisposition
    record_name: str
    reason: str
    def __init__(self, resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., disposition: _Optional[_Union[ResourceDisposition, str]] = ..., record_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("message_id", "outcome", "person_token", "record_names", "rejection", "hl7_ack", "resources", "patient_unidentified", "patients")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECORD_NAMES_FIELD_NUMBER: _ClassVar[int]
    REJECTION_FIELD_NUMBER: _ClassVar[int]
    HL7_ACK_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PATIENT_UNIDENTIFIED_FIELD_NUMBER: _ClassVar[int]
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    outcome: Outcome
    person_token: str
    record_names: _containers.RepeatedScalarFieldContainer[str]
    rejection: Rejection
    hl7_ack: bytes
    resources: _containers.RepeatedCompositeFieldContainer[ResourceOutcome]
    patient_unidentified: bool
    patients: _containers.RepeatedCompositeFieldContainer[SubmitResponse]
    def __init__(self, message_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., person_token: _Optional[str] = ..., record_names: _Optional[_Iterable[str]] = ..., rejection: _Optional[_Union[Rejection, _Mapping]] = ..., hl7_ack: _Optional[bytes] = ..., resources: _Optional[_Iterable[_Union[ResourceOutcome, _Mapping]]] = ..., patient_unidentified: _Optional[bool] = ..., patients: _Optional[_Iterable[_Union[SubmitResponse, _Mapping]]] = ...) -> None: ...
