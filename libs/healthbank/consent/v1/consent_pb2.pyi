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

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_PERMIT: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_PERMIT: Decision
DECISION_DENY: Decision

class Grant(_message.Message):
    __slots__ = ("name", "person_token", "grantee_hospital_id", "grantee_clinician_id", "categories", "valid_from", "expire_time", "revoke_time", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_HOSPITAL_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_CLINICIAN_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    person_token: str
    grantee_hospital_id: str
    grantee_clinician_id: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.RecordCategory]
    valid_from: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., person_token: _Optional[str] = ..., grantee_hospital_id: _Optional[str] = ..., grantee_clinician_id: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.RecordCategory, str]]] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateGrantRequest(_message.Message):
    __slots__ = ("parent", "grant", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    grant: Grant
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., grant: _Optional[_Union[Grant, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeGrantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "next_page_token")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    next_page_token: str
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("person_token", "accessor", "categories")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCESSOR_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    accessor: _common_pb2.Principal
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.RecordCategory]
    def __init__(self, person_token: _Optional[str] = ..., accessor: _Optional[_Union[_common_pb2.Principal, _Mapping]] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.RecordCategory, str]]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision", "basis", "authority_name", "permitted_categories")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_NAME_FIELD_NUMBER: _ClassVar[int]
    PERMITTED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    basis: str
    authority_name: str
    permitted_categories: _containers.RepeatedScalarFieldContainer[_common_pb2.RecordCategory]
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., basis: _Optional[str] = ..., authority_name: _Optional[str] = ..., permitted_categories: _Optional[_Iterable[_Union[_common_pb2.RecordCategory, str]]] = ...) -> None: ...

class BreakGlassRequest(_message.Message):
    __slots__ = ("person_token", "justification")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    justification: str
    def __init__(self, person_token: _Optional[str] = ..., justification: _Optional[str] = ...) -> None: ...

class BreakGlassResponse(_message.Message):
    __slots__ = ("name", "expire_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Proxy(_message.Message):
    __slots__ = ("name", "person_token", "proxy_id", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    person_token: str
    proxy_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., person_token: _Optional[str] = ..., proxy_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterProxyRequest(_message.Message):
    __slots__ = ("parent", "proxy_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    proxy_id: str
    def __init__(self, parent: _Optional[str] = ..., proxy_id: _Optional[str] = ...) -> None: ...

class RemoveProxyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListProxiesRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies",)
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[Proxy]
    def __init__(self, proxies: _Optional[_Iterable[_Union[Proxy, _Mapping]]] = ...) -> None: ...
