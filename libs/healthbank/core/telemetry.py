"""OpenTelemetry traces and metrics for one service, built from config and passed around.

:func:`setup_telemetry` builds a tracer provider and a meter provider. They export over OTLP/gRPC
only when an endpoint is configured; without one they still work (spans get real ids for log
correlation) but nothing leaves the process. The global OpenTelemetry providers are not touched
unless asked for, so tests and several services in one process do not interfere.

Span and metric attributes must never carry identifiers: use person tokens and record ids.
:func:`attributes_are_safe` checks a set of attributes against the same patterns the log filter
uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from healthbank.core.phi import value_contains_phi

INSTRUMENTATION_NAME = "healthbank"
SERVICE_NAMESPACE = "healthbank"


@dataclass(frozen=True)
class Telemetry:
    """The providers of one service, and the tracer and meter to instrument it with."""

    service: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: trace.Tracer
    meter: metrics.Meter

    def shutdown(self) -> None:
        """Flush pending spans and metrics and stop exporting; call once at process exit.

        Bounded by the export timeout given to :func:`setup_telemetry` (per signal), so an
        unreachable collector does not hold up a shutdown for long.
        """
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    service: str,
    otlp_endpoint: str | None,
    *,
    service_version: str = "0.1.0",
    set_global: bool = False,
    export_timeout_seconds: float = 5.0,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Build the tracing and metrics providers for ``service``.

    ``otlp_endpoint`` (e.g. ``http://otel-collector:4317``; an ``http`` scheme means plaintext)
    enables the OTLP/gRPC exporters; None disables export. ``export_timeout_seconds`` bounds
    one export including its retries (and so the flush at shutdown). ``span_processors`` and
    ``metric_readers`` add more (in-memory ones in tests). ``set_global`` also installs the
    providers as the OpenTelemetry globals, for libraries that only look there.
    """
    resource = Resource.create(
        {
            "service.name": service,
            "service.namespace": SERVICE_NAMESPACE,
            "service.version": service_version,
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    readers = list(metric_readers)
    if otlp_endpoint:
        span_exporter = OTLPSpanExporter(endpoint=otlp_endpoint, timeout=export_timeout_seconds)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        metric_exporter = OTLPMetricExporter(endpoint=otlp_endpoint, timeout=export_timeout_seconds)
        readers.append(
            PeriodicExportingMetricReader(
                metric_exporter, export_timeout_millis=export_timeout_seconds * 1000
            )
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(
        service=service,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracer=tracer_provider.get_tracer(INSTRUMENTATION_NAME, service_version),
        meter=meter_provider.get_meter(INSTRUMENTATION_NAME, service_version),
    )


def attributes_are_safe(attrs: Mapping[str, object]) -> bool:
    """Tell whether no attribute value looks like a national ID, phone number or long number.

    Checks strings, integers and sequences of them, as OpenTelemetry allows. Names are not
    detectable by pattern, so a True here is necessary, not sufficient.
    """
    return not any(value_contains_phi(value) for value in attrs.values())
