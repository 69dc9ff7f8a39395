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

class ResearchOutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESEARCH_OUTPUT_KIND_UNSPECIFIED: _ClassVar[ResearchOutputKind]
    RESEARCH_OUTPUT_KIND_AGGREGATES: _ClassVar[ResearchOutputKind]
    RESEARCH_OUTPUT_KIND_SYNTHETIC: _ClassVar[ResearchOutputKind]

class ResearchRequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESEARCH_REQUEST_STATE_UNSPECIFIED: _ClassVar[ResearchRequestState]
    RESEARCH_REQUEST_STATE_UNDER_REVIEW: _ClassVar[ResearchRequestState]
    RESEARCH_REQUEST_STATE_REJECTED_BY_SCREENING: _ClassVar[ResearchRequestState]
    RESEARCH_REQUEST_STATE_APPROVED: _ClassVar[ResearchRequestState]
    RESEARCH_REQUEST_STATE_REJECTED: _ClassVar[ResearchRequestState]

class VoteChoice(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_CHOICE_UNSPECIFIED: _ClassVar[VoteChoice]
    VOTE_CHOICE_APPROVE: _ClassVar[VoteChoice]
    VOTE_CHOICE_REJECT: _ClassVar[VoteChoice]
    VOTE_CHOICE_VETO: _ClassVar[VoteChoice]
DECISION_UNSPECIFIED: Decision
DECISION_PERMIT: Decision
DECISION_DENY: Decision
RESEARCH_OUTPUT_KIND_UNSPECIFIED: ResearchOutputKind
RESEARCH_OUTPUT_KIND_AGGREGATES: ResearchOutputKind
RESEARCH_OUTPUT_KIND_SYNTHETIC: ResearchOutputKind
RESEARCH_REQUEST_STATE_UNSPECIFIED: ResearchRequestState
RESEARCH_REQUEST_STATE_UNDER_REVIEW: ResearchRequestState
RESEARCH_REQUEST_STATE_REJECTED_BY_SCREENING: ResearchRequestState
RESEARCH_REQUEST_STATE_APPROVED: ResearchRequestState
RESEARCH_REQUEST_STATE_REJECTED: ResearchRequestState
VOTE_CHOICE_UNSPECIFIED: VoteChoice
VOTE_CHOICE_APPROVE: VoteChoice
VOTE_CHOICE_REJECT: VoteChoice
VOTE_CHOICE_VETO: VoteChoice

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

class CohortDefinition(_message.Message):
    __slots__ = ("code_system", "codes")
    CODE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    code_system: str
    codes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code_system: _Optional[str] = ..., codes: _Optional[_Iterable[str]] = ...) -> None: ...

class ScreeningFinding(_message.Message):
    __slots__ = ("rule", "detail")
    RULE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rule: str
    detail: str
    def __init__(self, rule: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class CommitteeVote(_message.Message):
    __slots__ = ("member_id", "choice", "comment", "cast_time")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CAST_TIME_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    choice: VoteChoice
    comment: str
    cast_time: _timestamp_pb2.Timestamp
    def __init__(self, member_id: _Optional[str] = ..., choice: _Optional[_Union[VoteChoice, str]] = ..., comment: _Optional[str] = ..., cast_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResearchRequest(_message.Message):
    __slots__ = ("name", "researcher_id", "purpose", "protocol", "ethics_approval_reference", "cohort", "fields", "groupings", "output_kind", "period_start", "period_end", "epsilon_budget", "access_until", "state", "screening_findings", "votes", "decision_reasons", "grant_name", "create_time", "decide_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESEARCHER_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    ETHICS_APPROVAL_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    GROUPINGS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    ACCESS_UNTIL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SCREENING_FINDINGS_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASONS_FIELD_NUMBER: _ClassVar[int]
    GRANT_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    researcher_id: str
    purpose: str
    protocol: str
    ethics_approval_reference: str
    cohort: CohortDefinition
    fields: _containers.RepeatedScalarFieldContainer[str]
    groupings: _containers.RepeatedScalarFieldContainer[str]
    output_kind: ResearchOutputKind
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    epsilon_budget: float
    access_until: _timestamp_pb2.Timestamp
    state: ResearchRequestState
    screening_findings: _containers.RepeatedCompositeFieldContainer[ScreeningFinding]
    votes: _containers.RepeatedCompositeFieldContainer[CommitteeVote]
    decision_reasons: _containers.RepeatedScalarFieldContainer[str]
    grant_name: str
    create_time: _timestamp_pb2.Timestamp
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., researcher_id: _Optional[str] = ..., purpose: _Optional[str] = ..., protocol: _Optional[str] = ..., ethics_approval_reference: _Optional[str] = ..., cohort: _Optional[_Union[CohortDefinition, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ..., groupings: _Optional[_Iterable[str]] = ..., output_kind: _Optional[_Union[ResearchOutputKind, str]] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., epsilon_budget: _Optional[float] = ..., access_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ResearchRequestState, str]] = ..., screening_findings: _Optional[_Iterable[_Union[ScreeningFinding, _Mapping]]] = ..., votes: _Optional[_Iterable[_Union[CommitteeVote, _Mapping]]] = ..., decision_reasons: _Optional[_Iterable[str]] = ..., grant_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitResearchRequestRequest(_message.Message):
    __slots__ = ("research_request", "request_id")
    RESEARCH_REQUEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    research_request: ResearchRequest
    request_id: str
    def __init__(self, research_request: _Optional[_Union[ResearchRequest, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetResearchRequestRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListResearchRequestsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: ResearchRequestState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[ResearchRequestState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResearchRequestsResponse(_message.Message):
    __slots__ = ("research_requests", "next_page_token")
    RESEARCH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    research_requests: _containers.RepeatedCompositeFieldContainer[ResearchRequest]
    next_page_token: str
    def __init__(self, research_requests: _Optional[_Iterable[_Union[ResearchRequest, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CastCommitteeVoteRequest(_message.Message):
    __slots__ = ("name", "choice", "comment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    choice: VoteChoice
    comment: str
    def __init__(self, name: _Optional[str] = ..., choice: _Optional[_Union[VoteChoice, str]] = ..., comment: _Optional[str] = ...) -> None: ...

class ResearchGrant(_message.Message):
    __slots__ = ("name", "request_name", "researcher_id", "cohort", "fields", "groupings", "output_kind", "period_start", "period_end", "epsilon_budget", "epsilon_spent", "expire_time", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_NAME_FIELD_NUMBER: _ClassVar[int]
    RESEARCHER_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    GROUPINGS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_name: str
    researcher_id: str
    cohort: CohortDefinition
    fields: _containers.RepeatedScalarFieldContainer[str]
    groupings: _containers.RepeatedScalarFieldContainer[str]
    output_kind: ResearchOutputKind
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    epsilon_budget: float
    epsilon_spent: float
    expire_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., request_name: _Optional[str] = ..., researcher_id: _Optional[str] = ..., cohort: _Optional[_Union[CohortDefinition, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ..., groupings: _Optional[_Iterable[str]] = ..., output_kind: _Optional[_Union[ResearchOutputKind, str]] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., epsilon_budget: _Optional[float] = ..., epsilon_spent: _Optional[float] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetResearchGrantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SpendPrivacyBudgetRequest(_message.Message):
    __slots__ = ("grant_name", "epsilon", "query_id")
    GRANT_NAME_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    grant_name: str
    epsilon: float
    query_id: str
    def __init__(self, grant_name: _Optional[str] = ..., epsilon: _Optional[float] = ..., query_id: _Optional[str] = ...) -> None: ...

class SpendPrivacyBudgetResponse(_message.Message):
    __slots__ = ("epsilon_spent", "epsilon_remaining")
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_REMAINING_FIELD_NUMBER: _ClassVar[int]
    epsilon_spent: float
    epsilon_remaining: float
    def __init__(self, epsilon_spent: _Optional[float] = ..., epsilon_remaining: _Optional[float] = ...) -> None: ...
