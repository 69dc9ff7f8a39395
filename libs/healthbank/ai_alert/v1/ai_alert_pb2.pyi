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

class AlertLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_LEVEL_UNSPECIFIED: _ClassVar[AlertLevel]
    ALERT_LEVEL_NORMAL: _ClassVar[AlertLevel]
    ALERT_LEVEL_WATCH: _ClassVar[AlertLevel]
    ALERT_LEVEL_WARNING: _ClassVar[AlertLevel]

class AggregateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_KIND_UNSPECIFIED: _ClassVar[AggregateKind]
    AGGREGATE_KIND_COUNT: _ClassVar[AggregateKind]
    AGGREGATE_KIND_SUM: _ClassVar[AggregateKind]
    AGGREGATE_KIND_MEAN: _ClassVar[AggregateKind]
    AGGREGATE_KIND_QUANTILES: _ClassVar[AggregateKind]
    AGGREGATE_KIND_HISTOGRAM: _ClassVar[AggregateKind]

class SyntheticFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNTHETIC_FORMAT_UNSPECIFIED: _ClassVar[SyntheticFormat]
    SYNTHETIC_FORMAT_CSV: _ClassVar[SyntheticFormat]
    SYNTHETIC_FORMAT_PARQUET: _ClassVar[SyntheticFormat]
ALERT_LEVEL_UNSPECIFIED: AlertLevel
ALERT_LEVEL_NORMAL: AlertLevel
ALERT_LEVEL_WATCH: AlertLevel
ALERT_LEVEL_WARNING: AlertLevel
AGGREGATE_KIND_UNSPECIFIED: AggregateKind
AGGREGATE_KIND_COUNT: AggregateKind
AGGREGATE_KIND_SUM: AggregateKind
AGGREGATE_KIND_MEAN: AggregateKind
AGGREGATE_KIND_QUANTILES: AggregateKind
AGGREGATE_KIND_HISTOGRAM: AggregateKind
SYNTHETIC_FORMAT_UNSPECIFIED: SyntheticFormat
SYNTHETIC_FORMAT_CSV: SyntheticFormat
SYNTHETIC_FORMAT_PARQUET: SyntheticFormat

class GetForecastRequest(_message.Message):
    __slots__ = ("horizon_days", "history_days", "as_of")
    HORIZON_DAYS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_DAYS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    horizon_days: int
    history_days: int
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, horizon_days: _Optional[int] = ..., history_days: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("horizon_days", "history_days")
    HORIZON_DAYS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_DAYS_FIELD_NUMBER: _ClassVar[int]
    horizon_days: int
    history_days: int
    def __init__(self, horizon_days: _Optional[int] = ..., history_days: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("day", "level", "explanation", "alarms")
    DAY_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    level: AlertLevel
    explanation: str
    alarms: _containers.RepeatedCompositeFieldContainer[DetectorAlarm]
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[_Union[AlertLevel, str]] = ..., explanation: _Optional[str] = ..., alarms: _Optional[_Iterable[_Union[DetectorAlarm, _Mapping]]] = ...) -> None: ...

class DailyCount(_message.Message):
    __slots__ = ("day", "count", "upper", "lower")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    count: float
    upper: float
    lower: float
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[float] = ..., upper: _Optional[float] = ..., lower: _Optional[float] = ...) -> None: ...

class DetectorAlarm(_message.Message):
    __slots__ = ("district", "detector", "level", "day", "observed", "expected", "statistic", "threshold", "evidence")
    DISTRICT_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    district: str
    detector: str
    level: AlertLevel
    day: _timestamp_pb2.Timestamp
    observed: float
    expected: float
    statistic: float
    threshold: float
    evidence: str
    def __init__(self, district: _Optional[str] = ..., detector: _Optional[str] = ..., level: _Optional[_Union[AlertLevel, str]] = ..., day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed: _Optional[float] = ..., expected: _Optional[float] = ..., statistic: _Optional[float] = ..., threshold: _Optional[float] = ..., evidence: _Optional[str] = ...) -> None: ...

class Forecast(_message.Message):
    __slots__ = ("history", "forecast", "level", "explanation", "alarms")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[DailyCount]
    forecast: _containers.RepeatedCompositeFieldContainer[DailyCount]
    level: AlertLevel
    explanation: str
    alarms: _containers.RepeatedCompositeFieldContainer[DetectorAlarm]
    def __init__(self, history: _Optional[_Iterable[_Union[DailyCount, _Mapping]]] = ..., forecast: _Optional[_Iterable[_Union[DailyCount, _Mapping]]] = ..., level: _Optional[_Union[AlertLevel, str]] = ..., explanation: _Optional[str] = ..., alarms: _Optional[_Iterable[_Union[DetectorAlarm, _Mapping]]] = ...) -> None: ...

class GetPersonalInsightsRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class Trend(_message.Message):
    __slots__ = ("code", "unit", "sample_count", "latest_value", "slope_per_year", "threshold", "projected_crossing_time", "reminder", "reminder_zh", "p_value", "significant")
    CODE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOPE_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROJECTED_CROSSING_TIME_FIELD_NUMBER: _ClassVar[int]
    REMINDER_FIELD_NUMBER: _ClassVar[int]
    REMINDER_ZH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.Code
    unit: str
    sample_count: int
    latest_value: float
    slope_per_year: float
    threshold: float
    projected_crossing_time: _timestamp_pb2.Timestamp
    reminder: str
    reminder_zh: str
    p_value: float
    significant: bool
    def __init__(self, code: _Optional[_Union[_common_pb2.Code, _Mapping]] = ..., unit: _Optional[str] = ..., sample_count: _Optional[int] = ..., latest_value: _Optional[float] = ..., slope_per_year: _Optional[float] = ..., threshold: _Optional[float] = ..., projected_crossing_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reminder: _Optional[str] = ..., reminder_zh: _Optional[str] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ...) -> None: ...

class PersonalInsights(_message.Message):
    __slots__ = ("trends", "opted_in")
    TRENDS_FIELD_NUMBER: _ClassVar[int]
    OPTED_IN_FIELD_NUMBER: _ClassVar[int]
    trends: _containers.RepeatedCompositeFieldContainer[Trend]
    opted_in: bool
    def __init__(self, trends: _Optional[_Iterable[_Union[Trend, _Mapping]]] = ..., opted_in: _Optional[bool] = ...) -> None: ...

class AggregateSpec(_message.Message):
    __slots__ = ("kind", "field", "group_by", "quantiles", "bin_edges")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    kind: AggregateKind
    field: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    bin_edges: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kind: _Optional[_Union[AggregateKind, str]] = ..., field: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ..., quantiles: _Optional[_Iterable[float]] = ..., bin_edges: _Optional[_Iterable[int]] = ...) -> None: ...

class RunAggregateRequest(_message.Message):
    __slots__ = ("grant_name", "spec", "epsilon", "query_id")
    GRANT_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    grant_name: str
    spec: AggregateSpec
    epsilon: float
    query_id: str
    def __init__(self, grant_name: _Optional[str] = ..., spec: _Optional[_Union[AggregateSpec, _Mapping]] = ..., epsilon: _Optional[float] = ..., query_id: _Optional[str] = ...) -> None: ...

class AggregateCell(_message.Message):
    __slots__ = ("group_values", "bin", "suppressed", "value", "quantile_values")
    GROUP_VALUES_FIELD_NUMBER: _ClassVar[int]
    BIN_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_VALUES_FIELD_NUMBER: _ClassVar[int]
    group_values: _containers.RepeatedScalarFieldContainer[str]
    bin: str
    suppressed: bool
    value: float
    quantile_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, group_values: _Optional[_Iterable[str]] = ..., bin: _Optional[str] = ..., suppressed: _Optional[bool] = ..., value: _Optional[float] = ..., quantile_values: _Optional[_Iterable[float]] = ...) -> None: ...

class AggregateResult(_message.Message):
    __slots__ = ("query_id", "cells", "epsilon", "epsilon_remaining", "min_cell_size", "mechanism")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    EPSILON_REMAINING_FIELD_NUMBER: _ClassVar[int]
    MIN_CELL_SIZE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    cells: _containers.RepeatedCompositeFieldContainer[AggregateCell]
    epsilon: float
    epsilon_remaining: float
    min_cell_size: int
    mechanism: str
    def __init__(self, query_id: _Optional[str] = ..., cells: _Optional[_Iterable[_Union[AggregateCell, _Mapping]]] = ..., epsilon: _Optional[float] = ..., epsilon_remaining: _Optional[float] = ..., min_cell_size: _Optional[int] = ..., mechanism: _Optional[str] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("grant_name", "row_count", "format", "seed")
    GRANT_NAME_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    grant_name: str
    row_count: int
    format: SyntheticFormat
    seed: int
    def __init__(self, grant_name: _Optional[str] = ..., row_count: _Optional[int] = ..., format: _Optional[_Union[SyntheticFormat, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class MarginalComparison(_message.Message):
    __slots__ = ("field", "real_mean", "synthetic_mean", "real_sd", "synthetic_sd", "ks_statistic")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REAL_MEAN_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_MEAN_FIELD_NUMBER: _ClassVar[int]
    REAL_SD_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_SD_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    field: str
    real_mean: float
    synthetic_mean: float
    real_sd: float
    synthetic_sd: float
    ks_statistic: float
    def __init__(self, field: _Optional[str] = ..., real_mean: _Optional[float] = ..., synthetic_mean: _Optional[float] = ..., real_sd: _Optional[float] = ..., synthetic_sd: _Optional[float] = ..., ks_statistic: _Optional[float] = ...) -> None: ...

class UtilityReport(_message.Message):
    __slots__ = ("marginals", "max_correlation_difference", "tstr_target", "tstr_accuracy", "trtr_accuracy")
    MARGINALS_FIELD_NUMBER: _ClassVar[int]
    MAX_CORRELATION_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    TSTR_TARGET_FIELD_NUMBER: _ClassVar[int]
    TSTR_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRTR_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    marginals: _containers.RepeatedCompositeFieldContainer[MarginalComparison]
    max_correlation_difference: float
    tstr_target: str
    tstr_accuracy: float
    trtr_accuracy: float
    def __init__(self, marginals: _Optional[_Iterable[_Union[MarginalComparison, _Mapping]]] = ..., max_correlation_difference: _Optional[float] = ..., tstr_target: _Optional[str] = ..., tstr_accuracy: _Optional[float] = ..., trtr_accuracy: _Optional[float] = ...) -> None: ...

class PrivacyReport(_message.Message):
    __slots__ = ("min_distance_to_real", "median_distance_to_real", "exact_copies", "distance_threshold", "membership_inference_auc", "membership_inference_p_value", "passed")
    MIN_DISTANCE_TO_REAL_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_DISTANCE_TO_REAL_FIELD_NUMBER: _ClassVar[int]
    EXACT_COPIES_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_INFERENCE_AUC_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_INFERENCE_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    min_distance_to_real: float
    median_distance_to_real: float
    exact_copies: int
    distance_threshold: float
    membership_inference_auc: float
    membership_inference_p_value: float
    passed: bool
    def __init__(self, min_distance_to_real: _Optional[float] = ..., median_distance_to_real: _Optional[float] = ..., exact_copies: _Optional[int] = ..., distance_threshold: _Optional[float] = ..., membership_inference_auc: _Optional[float] = ..., membership_inference_p_value: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class SyntheticCohort(_message.Message):
    __slots__ = ("content", "media_type", "columns", "row_count", "utility", "privacy")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    UTILITY_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    media_type: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    row_count: int
    utility: UtilityReport
    privacy: PrivacyReport
    def __init__(self, content: _Optional[bytes] = ..., media_type: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., row_count: _Optional[int] = ..., utility: _Optional[_Union[UtilityReport, _Mapping]] = ..., privacy: _Optional[_Union[PrivacyReport, _Mapping]] = ...) -> None: ...
