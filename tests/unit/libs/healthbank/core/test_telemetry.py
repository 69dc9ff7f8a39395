"""Unit tests for telemetry setup and the attribute safety check."""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from healthbank.core.telemetry import attributes_are_safe, setup_telemetry


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
    assert names == ["healthbank.consent.checks"]
    assert trace.get_tracer_provider() is global_provider  # globals untouched
    telemetry.shutdown()


def test_otlp_exporters_are_built_only_with_an_endpoint() -> None:
    # Nothing listens there; building and shutting down must still be quick and quiet.
    telemetry = setup_telemetry("audit", "http://127.0.0.1:1", export_timeout_seconds=0.5)
    with telemetry.tracer.start_as_current_span("x"):
        pass
    telemetry.meter.create_counter("c").add(1)
    started = time.monotonic()
    telemetry.shutdown()
    assert time.monotonic() - started < 3


def test_attributes_are_safe() -> None:
    assert attributes_are_safe({"person_token": "ab" * 32, "records": 12, "ok": True})
    assert attributes_are_safe({"codes": ["8867-4", "718-7"], "ratio": 0.5})
    assert not attributes_are_safe({"query": "id=11010519491231002X"})
    assert not attributes_are_safe({"phones": ["x", "13812345678"]})
    assert not attributes_are_safe({"number": 13812345678})
    assert not attributes_are_safe({"raw": b"pid=11010519491231002X"})
