"""OpenTelemetry traces and metrics for one service, built from config and passed around.

:func:`setup_telemetry` builds a tracer provider and a meter provider. They export over OTLP/gRPC
only when an endpoint is configured; without one they still work (spans get real ids for log
correlation) but nothing leaves the process, and spans are not recorded unless a processor
takes them or ``OTEL_TRACES_SAMPLER`` asks for it. The global OpenTelemetry providers are not
touched unless asked for, so tests and several services in one process do not interfere.

The endpoint is ``host:port`` (plaintext) or ``http(s)://host:port``; anything else is refused
(:func:`healthbank.core.config.otlp_endpoint_url`). ``service.version`` is the installed
package's version. :meth:`Telemetry.shutdown` returns within its timeout even when the
collector is away: what cannot be flushed by then is dropped, never waited for.

Besides the RPC metrics of the interceptors, :class:`BusinessMetrics` counts what the city
cares about (messages ingested, records stored, audit appends, cache lookups) and
:func:`setup_telemetry` registers process runtime gauges (CPU time, resident memory).

Span and metric attributes must never carry identifiers: use person tokens and record ids.
:func:`attributes_are_safe` checks a set of attributes against the same patterns the log filter
uses.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from itertools import islice

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import Link

from healthbank.core.config import otlp_endpoint_url
from healthbank.core.group_commit import batch_callers
from healthbank.core.logs import PhiRedactingFilter
from healthbank.core.phi import value_contains_phi

INSTRUMENTATION_NAME = "healthbank"
SERVICE_NAMESPACE = "healthbank"
# An SRE expects a pod to stop within its grace period, collector or not.
SHUTDOWN_TIMEOUT_SECONDS = 1.5
# Got once, not per span (a get costs about half a span): before a provider is installed
# this is a proxy that finds it on first use, so it may be got at import.
_TRACER = trace.get_tracer(INSTRUMENTATION_NAME)


@functools.cache
def package_version() -> str:
    """The installed healthbank distribution's version (service.version of every signal)."""
    try:
        return metadata.version("healthbank")
    except metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "0+unknown"


@dataclass(frozen=True)
class Telemetry:
    """The providers of one service, and the tracer and meter to instrument it with."""

    service: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: trace.Tracer
    meter: metrics.Meter
    # Log export over OTLP, only when an endpoint is configured.
    logger_provider: LoggerProvider | None = None

    def log_handler(self) -> logging.Handler | None:
        """A logging handler exporting records over OTLP (None without an endpoint).

        Records are PHI-redacted first, as on stderr; the OpenTelemetry SDK's own records
        stay local so an export failure cannot feed itself.
        """
        if self.logger_provider is None:
            return None
        # Code attributes (file, function, line) as the SDK's handler always gave them.
        handler = LoggingHandler(logger_provider=self.logger_provider, log_code_attributes=True)
        handler.addFilter(PhiRedactingFilter())
        handler.addFilter(lambda record: not record.name.startswith("opentelemetry"))
        return handler

    def shutdown(self, timeout_seconds: float = SHUTDOWN_TIMEOUT_SECONDS) -> bool:
        """Flush pending spans and metrics and stop exporting; call once at process exit.

        Returns within ``timeout_seconds`` whatever the collector does: the flush runs in a
        daemon thread that is abandoned at the deadline (the process is exiting anyway).
        Returns whether the flush finished in time.
        """
        steps: list[object] = [self.tracer_provider.shutdown, self.meter_provider.shutdown]
        if self.logger_provider is not None:
            steps.append(self.logger_provider.shutdown)
        return run_bounded(steps, timeout_seconds)


def run_bounded(steps: Iterable[object], timeout_seconds: float) -> bool:
    """Run callables one after another in a daemon thread; wait at most ``timeout_seconds``.

    Returns True when all of them finished in time.
    """
    calls = list(steps)

    def run_all() -> None:
        for call in calls:
            call()  # type: ignore[operator]

    worker = threading.Thread(target=run_all, name="telemetry-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_seconds)
    return not worker.is_alive()


@dataclass(frozen=True)
class BusinessMetrics:
    """The counters of what the services do, with attributes that never hold identifiers."""

    messages_ingested: metrics.Counter
    records_stored: metrics.Counter
    audit_appends: metrics.Counter
    cache_lookups: metrics.Counter

    @classmethod
    def from_meter(cls, meter: metrics.Meter) -> BusinessMetrics:
        """Create the counters on ``meter``."""
        return cls(
            messages_ingested=meter.create_counter(
                "healthbank.messages.ingested",
                unit="{message}",
                description="Hospital messages answered by ingest, by outcome",
            ),
            records_stored=meter.create_counter(
                "healthbank.records.stored",
                unit="{record}",
                description="Clinical records written to the hot store",
            ),
            audit_appends=meter.create_counter(
                "healthbank.audit.appends",
                unit="{event}",
                description="Access events appended to the audit log",
            ),
            cache_lookups=meter.create_counter(
                "healthbank.cache.lookups",
                unit="{lookup}",
                description="Cache reads, by result (hit or miss)",
            ),
        )


@functools.cache
def business_metrics() -> BusinessMetrics:
    """The counters on the global meter provider (what `healthbank serve` installs).

    Made once per process; before the provider is installed they are no-op proxies that
    start counting once it is.
    """
    return BusinessMetrics.from_meter(metrics.get_meter(INSTRUMENTATION_NAME))


def _register_runtime_metrics(meter: metrics.Meter) -> None:
    """Process CPU time and peak resident memory, read when a collection happens."""

    def cpu_time(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        yield metrics.Observation(usage.ru_utime, {"cpu.mode": "user"})
        yield metrics.Observation(usage.ru_stime, {"cpu.mode": "system"})

    def max_rss(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        # Linux reports kilobytes.
        yield metrics.Observation(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    meter.create_observable_counter("process.cpu.time", [cpu_time], unit="s")
    meter.create_observable_gauge("process.memory.max_rss", [max_rss], unit="By")


def setup_telemetry(
    service: str,
    otlp_endpoint: str | None,
    *,
    service_version: str | None = None,
    set_global: bool = False,
    export_timeout_seconds: float = 5.0,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Build the tracing and metrics providers for ``service``.

    ``otlp_endpoint`` (``otel-collector:4317`` or ``http://...`` plaintext, ``https://...``
    TLS) enables the OTLP/gRPC exporters; None disables export; another form raises
    ValueError. ``service_version`` defaults to :func:`package_version`.
    ``export_timeout_seconds`` bounds one export including its retries. ``span_processors`` and
    ``metric_readers`` add more (in-memory ones in tests). ``set_global`` also installs the
    providers as the OpenTelemetry globals, for libraries that only look there.
    """
    service_version = service_version or package_version()
    resource = Resource.create(
        {
            "service.name": service,
            "service.namespace": SERVICE_NAMESPACE,
            "service.version": service_version,
        }
    )
    # shutdown() is the one, bounded, exit path: no unbounded atexit flush after it.
    tracer_provider = TracerProvider(
        resource=resource,
        sampler=_sampler(exported=bool(otlp_endpoint or span_processors)),
        shutdown_on_exit=False,
    )
    readers = list(metric_readers)
    logger_provider = None
    if otlp_endpoint:
        otlp_endpoint = otlp_endpoint_url(otlp_endpoint)
        # Imported here: they load grpc, which modules that only count things must not.
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=otlp_endpoint, timeout=export_timeout_seconds)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=otlp_endpoint, timeout=export_timeout_seconds)
            )
        )
        metric_exporter = OTLPMetricExporter(endpoint=otlp_endpoint, timeout=export_timeout_seconds)
        readers.append(
            PeriodicExportingMetricReader(
                metric_exporter, export_timeout_millis=export_timeout_seconds * 1000
            )
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )
    meter = meter_provider.get_meter(INSTRUMENTATION_NAME, service_version)
    _register_runtime_metrics(meter)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(
        service=service,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracer=tracer_provider.get_tracer(INSTRUMENTATION_NAME, service_version),
        meter=meter,
        logger_provider=logger_provider,
    )


def _sampler(*, exported: bool) -> Sampler | None:
    """None (the SDK's choice: ``OTEL_TRACES_SAMPLER``, else every span of a sampled
    parent) when spans go somewhere; else none is recorded, as nothing would read it.

    An unrecorded span still has its trace and span ids, so log lines carry them and calls
    pass the trace on; recording one that no processor takes cost ~11 us against ~5 us."""
    if exported or os.environ.get(OTEL_TRACES_SAMPLER):
        return None
    return ALWAYS_OFF


# Links a span of a batch's work carries at most (OpenTelemetry's default limit per span).
MAX_CALLER_LINKS = 128


def links_to_other_callers() -> list[Link]:
    """Inside a batch (ADR 57), links to the spans of the callers it serves besides the one
    whose trace the new span is part of: each caller's trace leads to the work done for it
    (an outgoing call, or storage, key or cache work)."""
    parent_span = trace.get_current_span()
    # A span not recorded (no exporter, or not sampled) keeps no links: none to work out.
    callers = batch_callers() if parent_span.is_recording() else None
    if not callers:
        return []
    parent = parent_span.get_span_context()
    others = (caller for caller in callers if caller != parent)
    return [Link(caller) for caller in islice(others, MAX_CALLER_LINKS)]


@contextmanager
def traced(
    name: str, attributes: Mapping[str, str | int | bool] | None = None
) -> Iterator[trace.Span]:
    """An INTERNAL span around storage, key or cache work, on the global tracer; inside a
    batch serving several callers it links to the others (:func:`links_to_other_callers`).

    A failure marks the span an error with the exception's type only: messages may hold
    PHI. Attributes must be sizes, counts and names of things, never identifiers.
    """
    with _TRACER.start_as_current_span(
        name,
        attributes=dict(attributes or {}),
        links=links_to_other_callers(),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
            raise


def attributes_are_safe(attrs: Mapping[str, object]) -> bool:
    """Tell whether no attribute value looks like a national ID, phone number or long number.

    Checks strings, integers and sequences of them, as OpenTelemetry allows. Names are not
    detectable by pattern, so a True here is necessary, not sufficient.
    """
    return not any(value_contains_phi(value) for value in attrs.values())
