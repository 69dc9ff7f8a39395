"""Unit tests for telemetry setup and the attribute safety check."""

from __future__ import annotations

import threading
from importlib import metadata

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from healthbank.core.config import ConfigError, load_settings, otlp_endpoint_url
from healthbank.core.telemetry import (
    BusinessMetrics,
    attributes_are_safe,
    run_bounded,
    setup_telemetry,
)


def test_without_an_endpoint_or_processor_spans_keep_their_ids_but_are_not_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    tracer = setup_telemetry("consent", None).tracer
    with (
        tracer.start_as_current_span("Check") as parent,
        tracer.start_as_current_span("cache get") as child,
    ):
        pass
    assert not parent.is_recording() and not child.is_recording()
    # Log lines and outgoing calls still carry the trace.
    assert parent.get_span_context().is_valid
    assert child.get_span_context().trace_id == parent.get_span_context().trace_id
    # The SDK's own setting, when a deployment gives one, decides instead.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    with setup_telemetry("consent", None).tracer.start_as_current_span("Check") as span:
        assert span.is_recording()


def test_spans_and_metrics_without_an_endpoint() -> None:
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry(
        "consent", None, span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader]
    )
    global_provider = trace.get_tracer_provider()
    with telemetry.tracer.start_as_current_span("Check", attributes={"grant": "g-1"}):
        pass
    telemetry.meter.create_counter("healthbank.consent.checks").add(1, {"decision": "permit"})
    (span,) = exporter.get_finished_spans()
    assert span.name == "Check"
    assert span.resource.attributes["service.name"] == "consent"
    assert span.resource.attributes["service.namespace"] == "healthbank"
    metrics = reader.get_metrics_data()
    assert metrics is not None
    names = [
        metric.name
        for resource_metrics in metrics.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
    ]
    assert names[0] == "healthbank.consent.checks"
    # Runtime gauges come with every provider.
    assert {"process.cpu.time", "process.memory.max_rss"} <= set(names)
    assert trace.get_tracer_provider() is global_provider  # globals untouched
    telemetry.shutdown()


def test_otlp_exporters_are_built_only_with_an_endpoint() -> None:
    local = setup_telemetry("audit", None)
    assert local.logger_provider is None and local.log_handler() is None
    local.shutdown()
    # Nothing listens there; building and shutting down must still be quick and quiet.
    telemetry = setup_telemetry("audit", "http://127.0.0.1:1", export_timeout_seconds=0.5)
    assert telemetry.logger_provider is not None and telemetry.log_handler() is not None
    with telemetry.tracer.start_as_current_span("x") as span:
        assert span.is_recording()  # a span that is exported is recorded
    telemetry.meter.create_counter("c").add(1)
    telemetry.shutdown()  # returns (pytest-timeout fails the test if it hangs)


def test_a_shutdown_step_that_never_ends_is_abandoned() -> None:
    never = threading.Event()
    finished: list[str] = []
    assert not run_bounded([never.wait, lambda: finished.append("after")], 0.05)
    assert finished == []
    assert run_bounded([lambda: finished.append("quick")], 5)
    assert finished == ["quick"]


def test_attributes_are_safe() -> None:
    assert attributes_are_safe({"person_token": "ab" * 32, "records": 12, "ok": True})
    assert attributes_are_safe({"codes": ["8867-4", "718-7"], "ratio": 0.5})
    assert not attributes_are_safe({"query": "id=11010519491231002X"})
    assert not attributes_are_safe({"phones": ["x", "13812345678"]})
    assert not attributes_are_safe({"number": 13812345678})
    assert not attributes_are_safe({"raw": b"pid=11010519491231002X"})


def test_service_version_is_the_installed_package_version() -> None:
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry("audit", None, span_processors=[SimpleSpanProcessor(exporter)])
    with telemetry.tracer.start_as_current_span("x"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.version"] == metadata.version("healthbank")
    telemetry.shutdown()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("otel-collector:4317", "http://otel-collector:4317"),
        ("http://otel-collector:4317", "http://otel-collector:4317"),
        ("https://otel.example:4317/", "https://otel.example:4317"),
        ("[::1]:4317", "http://[::1]:4317"),
    ],
)
def test_every_endpoint_form_becomes_one_url(given: str, url: str) -> None:
    assert otlp_endpoint_url(given) == url
    assert load_settings({"HEALTHBANK_OTLP_ENDPOINT": given}).otlp_endpoint == url


@pytest.mark.parametrize(
    "bad",
    ["otel-collector", "grpc://otel:4317", "http://otel:4317/v1/traces", "otel:99999", "http://"],
)
def test_an_unusable_endpoint_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"HEALTHBANK_OTLP_ENDPOINT": bad})
    ((variable, reason),) = refused.value.problems
    assert variable == "HEALTHBANK_OTLP_ENDPOINT"
    assert reason and bad not in reason
    with pytest.raises(ValueError):
        setup_telemetry("audit", bad)


def test_shutdown_gives_up_on_a_flush_that_hangs() -> None:
    released = threading.Event()
    finished: list[str] = []
    # A flush stuck on an unreachable collector: the wait is abandoned, never joined.
    assert run_bounded([released.wait, lambda: finished.append("done")], 0.05) is False
    assert finished == []
    released.set()
    assert run_bounded([lambda: finished.append("quick")], 5) is True
    assert "quick" in finished


def test_business_metrics_are_counted_with_safe_attributes() -> None:
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry("ingest", None, metric_readers=[reader])
    business = BusinessMetrics.from_meter(telemetry.meter)
    business.messages_ingested.add(2, {"outcome": "stored"})
    business.records_stored.add(5)
    business.audit_appends.add(1)
    business.cache_lookups.add(1, {"result": "hit"})
    data = reader.get_metrics_data()
    assert data is not None
    sums = {
        metric.name: sum(point.value for point in metric.data.data_points)
        for resource_metrics in data.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name.startswith("healthbank.")
    }
    assert sums == {
        "healthbank.messages.ingested": 2,
        "healthbank.records.stored": 5,
        "healthbank.audit.appends": 1,
        "healthbank.cache.lookups": 1,
    }
    telemetry.shutdown()
