"""The health weather as a PNG chart (`healthbank weather --png FILE`, ADR 30).

One picture of a GetForecast answer: the observed daily counts, the forecast's expected
counts with their 95% prediction band, and the detectors' alarms marked on the day they
judged. matplotlib is loaded only here, with its file-only backend (no display needed).
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from google.protobuf import timestamp_pb2

from healthbank.ai_alert.v1 import ai_alert_pb2

# One marker per detector, so the GLM-CUSUM's and C2's alarms can be told apart.
_ALARM_MARKERS = {"GLM-CUSUM": "v", "EARS C2": "^"}


def _day_number(stamp: timestamp_pb2.Timestamp) -> float:
    """matplotlib's number for the day (its date axis reads these)."""
    from matplotlib import dates

    return float(dates.date2num(stamp.ToDatetime(tzinfo=UTC)))


def write_png(forecast: ai_alert_pb2.Forecast, path: Path) -> None:
    """Draw ``forecast`` (observed, expected, band, alarms) into the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    level = ai_alert_pb2.AlertLevel.Name(forecast.level).removeprefix("ALERT_LEVEL_")
    figure, axes = pyplot.subplots(figsize=(10, 4.5), dpi=100)
    try:
        observed_days = [_day_number(day.day) for day in forecast.history]
        axes.plot(
            observed_days, [day.count for day in forecast.history], color="black", label="observed"
        )
        forecast_days = [_day_number(day.day) for day in forecast.forecast]
        axes.fill_between(
            forecast_days,
            [day.lower for day in forecast.forecast],
            [day.upper for day in forecast.forecast],
            color="tab:blue",
            alpha=0.25,
            label="95% prediction band",
        )
        axes.plot(
            forecast_days,
            [day.count for day in forecast.forecast],
            color="tab:blue",
            linestyle="--",
            label="expected",
        )
        for alarm in forecast.alarms:
            if alarm.level != ai_alert_pb2.ALERT_LEVEL_WARNING:
                continue
            axes.scatter(
                [_day_number(alarm.day)],
                [alarm.observed],
                color="tab:red",
                marker=_ALARM_MARKERS.get(alarm.detector, "o"),
                s=80,
                zorder=3,
                label=f"{alarm.detector} alarm ({alarm.district})",
            )
        axes.xaxis_date()
        axes.set_title(f"Health weather: {level}")
        axes.set_ylabel("ILI cases per day")
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left")
        figure.autofmt_xdate()
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)
