"""`healthbank weather`: its arguments and the text it prints for a forecast."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from google.protobuf import timestamp_pb2

from healthbank import cli, weather_chart
from healthbank.ai_alert.v1 import ai_alert_pb2

TODAY = datetime(2026, 1, 15, tzinfo=UTC)


def day(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_the_weather_text_shows_level_history_and_forecast() -> None:
    forecast = ai_alert_pb2.Forecast(
        history=[
            ai_alert_pb2.DailyCount(day=day(TODAY - timedelta(days=3 - k)), count=count)
            for k, count in enumerate([2.0, 4.0, 8.0])
        ],
        forecast=[ai_alert_pb2.DailyCount(day=day(TODAY), count=12.5, upper=20.25)],
        level=ai_alert_pb2.ALERT_LEVEL_WARNING,
        explanation="Daily ILI diagnoses are expected to exceed 9.0.",
    )
    lines = cli.weather_text(forecast).splitlines()
    assert lines[0] == "health weather: WARNING"
    assert lines[1] == "Daily ILI diagnoses are expected to exceed 9.0."
    # The sparkline's bars grow with the counts; the largest is full height.
    assert lines[2] == "2026-01-12 ▂▄█ 2026-01-14 (max 8/day)"
    assert lines[3] == "  2026-01-15  expected   12.5  up to   20.2"


def test_an_empty_history_prints_no_sparkline() -> None:
    forecast = ai_alert_pb2.Forecast(level=ai_alert_pb2.ALERT_LEVEL_NORMAL, explanation="Quiet.")
    assert cli.weather_text(forecast).splitlines() == ["health weather: NORMAL", "Quiet."]


def test_weather_arguments() -> None:
    args = cli.build_parser().parse_args(
        ["weather", "--as-of", "2025-12-01", "--horizon-days", "3"]
    )
    assert args.run is cli.cmd_weather
    assert (args.as_of, args.horizon_days, args.history_days) == (date(2025, 12, 1), 3, 0)


def chart_forecast(*alarms: ai_alert_pb2.DetectorAlarm) -> ai_alert_pb2.Forecast:
    return ai_alert_pb2.Forecast(
        history=[
            ai_alert_pb2.DailyCount(day=day(TODAY - timedelta(days=28 - k)), count=8.0 + k % 3)
            for k in range(28)
        ],
        forecast=[
            ai_alert_pb2.DailyCount(
                day=day(TODAY + timedelta(days=k)), count=10.0, upper=16.0, lower=4.0
            )
            for k in range(7)
        ],
        level=ai_alert_pb2.ALERT_LEVEL_WARNING if alarms else ai_alert_pb2.ALERT_LEVEL_NORMAL,
        explanation="",
        alarms=alarms,
    )


def red_pixels(path: Path) -> int:
    from matplotlib import image

    pixels = image.imread(path)
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    return int(red.sum())


def test_the_chart_is_a_png_with_the_band_and_the_alarms(tmp_path: Path) -> None:
    from matplotlib import image

    quiet = tmp_path / "quiet.png"
    weather_chart.write_png(chart_forecast(), quiet)
    assert quiet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(quiet)
    assert pixels.shape[:2] == (450, 1000)
    # The band is drawn: pale blue pixels exist.
    band = (pixels[..., 2] > 0.8) & (pixels[..., 0] < 0.85) & (pixels[..., 0] > 0.6)
    assert band.sum() > 1000
    assert red_pixels(quiet) == 0

    alarm = ai_alert_pb2.DetectorAlarm(
        district="city",
        detector="GLM-CUSUM",
        level=ai_alert_pb2.ALERT_LEVEL_WARNING,
        day=day(TODAY - timedelta(days=1)),
        observed=10.0,
    )
    alarmed = tmp_path / "alarmed.png"
    weather_chart.write_png(chart_forecast(alarm), alarmed)
    assert red_pixels(alarmed) > 20


def test_weather_png_argument() -> None:
    args = cli.build_parser().parse_args(["weather", "--png", "season.png"])
    assert args.png == Path("season.png")
    assert cli.build_parser().parse_args(["weather"]).png is None
