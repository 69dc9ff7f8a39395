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
ALERT_LEVEL_UNSPECIFIED: AlertLevel
ALERT_LEVEL_NORMAL: AlertLevel
ALERT_LEVEL_WATCH: AlertLevel
ALERT_LEVEL_WARNING: AlertLevel

class GetForecastRequest(_message.Message):
    __slots__ = ("horizon_days", "history_days")
    HORIZON_DAYS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_DAYS_FIELD_NUMBER: _ClassVar[int]
    horizon_days: int
    history_days: int
    def __init__(self, horizon_days: _Optional[int] = ..., history_days: _Optional[int] = ...) -> None: ...

class DailyCount(_message.Message):
    __slots__ = ("day", "count", "upper")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    count: float
    upper: float
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class Forecast(_message.Message):
    __slots__ = ("history", "forecast", "level", "explanation")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[DailyCount]
    forecast: _containers.RepeatedCompositeFieldContainer[DailyCount]
    level: AlertLevel
    explanation: str
    def __init__(self, history: _Optional[_Iterable[_Union[DailyCount, _Mapping]]] = ..., forecast: _Optional[_Iterable[_Union[DailyCount, _Mapping]]] = ..., level: _Optional[_Union[AlertLevel, str]] = ..., explanation: _Optional[str] = ...) -> None: ...

class GetPersonalInsightsRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class Trend(_message.Message):
    __slots__ = ("code", "unit", "sample_count", "latest_value", "slope_per_year", "threshold", "projected_crossing_time", "reminder")
    CODE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOPE_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROJECTED_CROSSING_TIME_FIELD_NUMBER: _ClassVar[int]
    REMINDER_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.Code
    unit: str
    sample_count: int
    latest_value: float
    slope_per_year: float
    threshold: float
    projected_crossing_time: _timestamp_pb2.Timestamp
    reminder: str
    def __init__(self, code: _Optional[_Union[_common_pb2.Code, _Mapping]] = ..., unit: _Optional[str] = ..., sample_count: _Optional[int] = ..., latest_value: _Optional[float] = ..., slope_per_year: _Optional[float] = ..., threshold: _Optional[float] = ..., projected_crossing_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reminder: _Optional[str] = ...) -> None: ...

class PersonalInsights(_message.Message):
    __slots__ = ("trends",)
    TRENDS_FIELD_NUMBER: _ClassVar[int]
    trends: _containers.RepeatedCompositeFieldContainer[Trend]
    def __init__(self, trends: _Optional[_Iterable[_Union[Trend, _Mapping]]] = ...) -> None: ...
