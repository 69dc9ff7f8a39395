import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from healthbank.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutBlobRequest(_message.Message):
    __slots__ = ("person_token", "content_type", "content")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    content_type: str
    content: bytes
    def __init__(self, person_token: _Optional[str] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class Blob(_message.Message):
    __slots__ = ("name", "sha256", "size_bytes", "content_type", "person_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size_bytes: int
    content_type: str
    person_token: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_type: _Optional[str] = ..., person_token: _Optional[str] = ...) -> None: ...

class GetBlobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBlobResponse(_message.Message):
    __slots__ = ("blob", "chunk")
    BLOB_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    blob: Blob
    chunk: bytes
    def __init__(self, blob: _Optional[_Union[Blob, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TierRecordsRequest(_message.Message):
    __slots__ = ("cutoff", "max_records")
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    cutoff: _timestamp_pb2.Timestamp
    max_records: int
    def __init__(self, cutoff: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_records: _Optional[int] = ...) -> None: ...

class TierRecordsResponse(_message.Message):
    __slots__ = ("records_moved", "segment_names")
    RECORDS_MOVED_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_NAMES_FIELD_NUMBER: _ClassVar[int]
    records_moved: int
    segment_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, records_moved: _Optional[int] = ..., segment_names: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchRecordsRequest(_message.Message):
    __slots__ = ("person_token", "effective")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    effective: _common_pb2.Interval
    def __init__(self, person_token: _Optional[str] = ..., effective: _Optional[_Union[_common_pb2.Interval, _Mapping]] = ...) -> None: ...

class FetchRecordsResponse(_message.Message):
    __slots__ = ("record", "sealed_payload")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SEALED_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    record: _common_pb2.Record
    sealed_payload: bytes
    def __init__(self, record: _Optional[_Union[_common_pb2.Record, _Mapping]] = ..., sealed_payload: _Optional[bytes] = ...) -> None: ...
