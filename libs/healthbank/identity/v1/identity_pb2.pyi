from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MatchMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_METHOD_UNSPECIFIED: _ClassVar[MatchMethod]
    MATCH_METHOD_NATIONAL_ID: _ClassVar[MatchMethod]
    MATCH_METHOD_HOSPITAL_MRN: _ClassVar[MatchMethod]
    MATCH_METHOD_CREATED: _ClassVar[MatchMethod]
    MATCH_METHOD_DEMOGRAPHICS: _ClassVar[MatchMethod]

class PriorRecordOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIOR_RECORD_OUTCOME_UNSPECIFIED: _ClassVar[PriorRecordOutcome]
    PRIOR_RECORD_OUTCOME_ALREADY_SAME_PERSON: _ClassVar[PriorRecordOutcome]
    PRIOR_RECORD_OUTCOME_LINKED: _ClassVar[PriorRecordOutcome]
    PRIOR_RECORD_OUTCOME_MERGED: _ClassVar[PriorRecordOutcome]
    PRIOR_RECORD_OUTCOME_REVIEW: _ClassVar[PriorRecordOutcome]
MATCH_METHOD_UNSPECIFIED: MatchMethod
MATCH_METHOD_NATIONAL_ID: MatchMethod
MATCH_METHOD_HOSPITAL_MRN: MatchMethod
MATCH_METHOD_CREATED: MatchMethod
MATCH_METHOD_DEMOGRAPHICS: MatchMethod
PRIOR_RECORD_OUTCOME_UNSPECIFIED: PriorRecordOutcome
PRIOR_RECORD_OUTCOME_ALREADY_SAME_PERSON: PriorRecordOutcome
PRIOR_RECORD_OUTCOME_LINKED: PriorRecordOutcome
PRIOR_RECORD_OUTCOME_MERGED: PriorRecordOutcome
PRIOR_RECORD_OUTCOME_REVIEW: PriorRecordOutcome

class Demographics(_message.Message):
    __slots__ = ("family_name", "given_name", "birth_date", "sex", "phone", "address")
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    family_name: str
    given_name: str
    birth_date: str
    sex: str
    phone: str
    address: str
    def __init__(self, family_name: _Optional[str] = ..., given_name: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[str] = ..., phone: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("hospital_id", "mrn", "national_id", "demographics", "prior_mrns")
    HOSPITAL_ID_FIELD_NUMBER: _ClassVar[int]
    MRN_FIELD_NUMBER: _ClassVar[int]
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    DEMOGRAPHICS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_MRNS_FIELD_NUMBER: _ClassVar[int]
    hospital_id: str
    mrn: str
    national_id: str
    demographics: Demographics
    prior_mrns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hospital_id: _Optional[str] = ..., mrn: _Optional[str] = ..., national_id: _Optional[str] = ..., demographics: _Optional[_Union[Demographics, _Mapping]] = ..., prior_mrns: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("person_token", "match_method", "review_pending", "prior_record_outcomes")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MATCH_METHOD_FIELD_NUMBER: _ClassVar[int]
    REVIEW_PENDING_FIELD_NUMBER: _ClassVar[int]
    PRIOR_RECORD_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    match_method: MatchMethod
    review_pending: bool
    prior_record_outcomes: _containers.RepeatedScalarFieldContainer[PriorRecordOutcome]
    def __init__(self, person_token: _Optional[str] = ..., match_method: _Optional[_Union[MatchMethod, str]] = ..., review_pending: _Optional[bool] = ..., prior_record_outcomes: _Optional[_Iterable[_Union[PriorRecordOutcome, str]]] = ...) -> None: ...

class ResolveBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ResolveRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ResolveRequest, _Mapping]]] = ...) -> None: ...

class ResolveBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ResolveResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ResolveResult, _Mapping]]] = ...) -> None: ...

class ResolveResult(_message.Message):
    __slots__ = ("resolution", "failure")
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    resolution: ResolveResponse
    failure: ResolveFailure
    def __init__(self, resolution: _Optional[_Union[ResolveResponse, _Mapping]] = ..., failure: _Optional[_Union[ResolveFailure, _Mapping]] = ...) -> None: ...

class ResolveFailure(_message.Message):
    __slots__ = ("code", "reason", "message", "field_violations")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    message: str
    field_violations: _containers.RepeatedCompositeFieldContainer[ResolveFieldViolation]
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., field_violations: _Optional[_Iterable[_Union[ResolveFieldViolation, _Mapping]]] = ...) -> None: ...

class ResolveFieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class LookupByNationalIdRequest(_message.Message):
    __slots__ = ("national_id",)
    NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    national_id: str
    def __init__(self, national_id: _Optional[str] = ...) -> None: ...

class LookupByNationalIdResponse(_message.Message):
    __slots__ = ("person_token", "merged_person_tokens")
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MERGED_PERSON_TOKENS_FIELD_NUMBER: _ClassVar[int]
    person_token: str
    merged_person_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, person_token: _Optional[str] = ..., merged_person_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPersonRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListMergedPersonsRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListMergedPersonsResponse(_message.Message):
    __slots__ = ("merged_person_tokens",)
    MERGED_PERSON_TOKENS_FIELD_NUMBER: _ClassVar[int]
    merged_person_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, merged_person_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class HospitalLink(_message.Message):
    __slots__ = ("hospital_id", "mrn")
    HOSPITAL_ID_FIELD_NUMBER: _ClassVar[int]
    MRN_FIELD_NUMBER: _ClassVar[int]
    hospital_id: str
    mrn: str
    def __init__(self, hospital_id: _Optional[str] = ..., mrn: _Optional[str] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("name", "person_token", "links")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    person_token: str
    links: _containers.RepeatedCompositeFieldContainer[HospitalLink]
    def __init__(self, name: _Optional[str] = ..., person_token: _Optional[str] = ..., links: _Optional[_Iterable[_Union[HospitalLink, _Mapping]]] = ...) -> None: ...

class ListMatchReviewsRequest(_message.Message):
    __slots__ = ("include_decided",)
    INCLUDE_DECIDED_FIELD_NUMBER: _ClassVar[int]
    include_decided: bool
    def __init__(self, include_decided: _Optional[bool] = ...) -> None: ...

class MatchReview(_message.Message):
    __slots__ = ("review_id", "person_token", "candidate_token", "probability", "field_levels", "status", "merge_id")
    class FieldLevelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FIELD_LEVELS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MERGE_ID_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    person_token: str
    candidate_token: str
    probability: float
    field_levels: _containers.ScalarMap[str, str]
    status: str
    merge_id: str
    def __init__(self, review_id: _Optional[str] = ..., person_token: _Optional[str] = ..., candidate_token: _Optional[str] = ..., probability: _Optional[float] = ..., field_levels: _Optional[_Mapping[str, str]] = ..., status: _Optional[str] = ..., merge_id: _Optional[str] = ...) -> None: ...

class ListMatchReviewsResponse(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedCompositeFieldContainer[MatchReview]
    def __init__(self, reviews: _Optional[_Iterable[_Union[MatchReview, _Mapping]]] = ...) -> None: ...

class DecideMatchReviewRequest(_message.Message):
    __slots__ = ("review_id", "accept")
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    accept: bool
    def __init__(self, review_id: _Optional[str] = ..., accept: _Optional[bool] = ...) -> None: ...

class MergePersonsRequest(_message.Message):
    __slots__ = ("survivor", "absorbed")
    SURVIVOR_FIELD_NUMBER: _ClassVar[int]
    ABSORBED_FIELD_NUMBER: _ClassVar[int]
    survivor: str
    absorbed: str
    def __init__(self, survivor: _Optional[str] = ..., absorbed: _Optional[str] = ...) -> None: ...

class Merge(_message.Message):
    __slots__ = ("merge_id", "survivor_token", "absorbed_token", "moved_links", "moved_national_id", "undone")
    MERGE_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ABSORBED_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MOVED_LINKS_FIELD_NUMBER: _ClassVar[int]
    MOVED_NATIONAL_ID_FIELD_NUMBER: _ClassVar[int]
    UNDONE_FIELD_NUMBER: _ClassVar[int]
    merge_id: str
    survivor_token: str
    absorbed_token: str
    moved_links: int
    moved_national_id: bool
    undone: bool
    def __init__(self, merge_id: _Optional[str] = ..., survivor_token: _Optional[str] = ..., absorbed_token: _Optional[str] = ..., moved_links: _Optional[int] = ..., moved_national_id: _Optional[bool] = ..., undone: _Optional[bool] = ...) -> None: ...

class UnmergePersonsRequest(_message.Message):
    __slots__ = ("merge_id",)
    MERGE_ID_FIELD_NUMBER: _ClassVar[int]
    merge_id: str
    def __init__(self, merge_id: _Optional[str] = ...) -> None: ...
