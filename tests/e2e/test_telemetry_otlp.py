"""Telemetry as an SRE receives it: the seven services as processes exporting traces, metrics
and logs over OTLP/gRPC to a real receiver (opentelemetry-proto's collector services,
served by this test).

On embedded storage and on the real engines, one user call (a hospital engine's Submit,
with a national ID, a name, a phone number and the MRN smuggled into its request id and
headers) must arrive as one trace of client and server
spans across ingest, identity and audit; the business metrics must arrive; and no
identifier of the patient may appear in any exported byte or log line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import (
    AUTH_SECRET,
    files_containing,
    identifiers,
    real_engine_settings,
    start_stack,
    stop_stack,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from healthbank.common.v1 import common_pb2
from healthbank.dev import synthetic
from healthbank.dev.demo import EMERGENCY_B, DemoClient, engine_principal
from healthbank.dev.devstack import LocalStack
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2

PERSON = synthetic.patient(44)
SUBMIT = "healthbank.ingest.v1.IngestService/Submit"
RESOLVE = "healthbank.identity.v1.IdentityService/Resolve"
EMERGENCY = "healthbank.record_lookup.v1.RecordLookupService/GetEmergencySummary"


@dataclass
class Receiver:
    """What the OTLP receiver was sent: every export request, decoded and as bytes."""

    spans: list[tuple[str, trace_pb2.Span]] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    metric_points: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    logs: list[tuple[str, logs_pb2.LogRecord]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    engines: str = "embedded"
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        with self._receiver.lock:
            self._receiver.raw.append(request.SerializeToString())
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                self._receiver.versions.add(attributes["service.version"])
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self._receiver.spans.append((attributes["service.name"], span))
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        with self._receiver.lock:
            self._receiver.raw.append(request.SerializeToString())
            for resource_metrics in request.resource_metrics:
                service = next(
                    a.value.string_value
                    for a in resource_metrics.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        points = self._receiver.metric_points.setdefault((service, metric.name), [])
                        points.extend(metric.sum.data_points)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        with self._receiver.lock:
            self._receiver.raw.append(request.SerializeToString())
            for resource_logs in request.resource_logs:
                service = next(
                    a.value.string_value
                    for a in resource_logs.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource_logs.scope_logs:
                    self._receiver.logs.extend((service, record) for record in scope.log_records)
        return logs_service_pb2.ExportLogsServiceResponse()


def _start_receiver() -> tuple[grpc.Server, Receiver, int]:
    """A real OTLP/gRPC receiver (traces, metrics, logs) on a free port."""
    received = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(received), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(received), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, received, port


@pytest.fixture(
    scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.engines)]
)
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Receiver, ingest_pb2.SubmitResponse, str, Path]]:
    """Run the stack (embedded, then on the real engines) exporting to its own receiver
    (the host:port form), make one call, stop it.

    Stopping flushes every service's spans, metrics and logs, so everything is there after.
    """
    env: dict[str, str] = {}
    if request.param == "real":
        engines = request.getfixturevalue("engines")
        env = real_engine_settings(engines, request.getfixturevalue("module_keyspace_prefix"))
    server, received, port = _start_receiver()
    received.engines = request.param
    data_dir = tmp_path_factory.mktemp(f"otlp-stack-{request.param}")
    try:
        env["HEALTHBANK_OTLP_ENDPOINT"] = f"127.0.0.1:{port}"
        stack: LocalStack = start_stack(data_dir, env)
        try:
            response, echoed = _submit_with_identifiers_in_metadata(stack)
        finally:
            stop_stack(stack)
        yield received, response, echoed, data_dir
    finally:
        server.stop(grace=None)


def _submit_with_identifiers_in_metadata(
    stack: LocalStack,
) -> tuple[ingest_pb2.SubmitResponse, str]:
    import asyncio

    async def call() -> tuple[ingest_pb2.SubmitResponse, str]:
        client = DemoClient(stack.addresses, AUTH_SECRET.encode())
        try:
            request = ingest_pb2.SubmitRequest(
                hospital_id=synthetic.HOSPITAL_A.hospital_id,
                message_id="otlp-1",
                format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                content=synthetic.emergency_history_bundle(PERSON, "otlp-1"),
            )
            metadata = (
                *client.auth(engine_principal(synthetic.HOSPITAL_A)),
                ("x-request-id", PERSON.national_id),
                ("x-patient-name", f"{PERSON.given_name} {PERSON.family_name}"),
                ("x-callback-phone", PERSON.phone),
                ("x-mrn", PERSON.mrn),
            )
            submitted = client.ingest.Submit(request, metadata=metadata, timeout=30)
            response: ingest_pb2.SubmitResponse = await submitted
            echoed = dict(await submitted.trailing_metadata())["x-request-id"]
            # Then an emergency read of the patient: its summary goes through the cache.
            await client.lookup.GetEmergencySummary(
                record_lookup_pb2.GetEmergencySummaryRequest(
                    national_id=PERSON.national_id, justification="unconscious on arrival"
                ),
                metadata=client.auth(EMERGENCY_B),
                timeout=30,
            )
            return response, str(echoed)
        finally:
            await client.close()

    return asyncio.run(call())


def _needles() -> list[bytes]:
    return [*identifiers([PERSON]), PERSON.mrn.encode()]


def test_one_call_is_one_trace_of_client_and_server_spans(
    exported: tuple[Receiver, ingest_pb2.SubmitResponse, str, Path],
) -> None:
    received, response, _, _ = exported
    assert response.outcome == ingest_pb2.OUTCOME_STORED
    (submit,) = [
        span
        for service, span in received.spans
        if service == "ingest"
        and span.name == SUBMIT
        and span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    ]
    in_trace = [
        (service, span) for service, span in received.spans if span.trace_id == submit.trace_id
    ]
    clients = [
        span
        for service, span in in_trace
        if service == "ingest"
        and span.kind == trace_pb2.Span.SPAN_KIND_CLIENT
        and span.name == RESOLVE
    ]
    assert clients, "ingest made no traced call to identity.Resolve"
    (served,) = [
        span
        for service, span in in_trace
        if service == "identity"
        and span.kind == trace_pb2.Span.SPAN_KIND_SERVER
        and span.name == RESOLVE
    ]
    # identity's server span is the child of ingest's client span, in the caller's trace.
    assert served.parent_span_id in {client.span_id for client in clients}
    services = {service for service, _ in in_trace}
    assert {"ingest", "identity", "audit"} <= services
    client_attributes = {a.key: a.value for a in clients[0].attributes}
    assert client_attributes["rpc.system"].string_value == "grpc"
    assert client_attributes["server.address"].string_value == "127.0.0.1"
    assert received.versions == {metadata.version("healthbank")}
    # Key and cache work has spans of its own inside the call's trace.
    internal = {
        (service, span.name)
        for service, span in in_trace
        if span.kind == trace_pb2.Span.SPAN_KIND_INTERNAL
    }
    assert ("ingest", "seal") in internal, sorted(internal)
    # Cache work as well: the emergency read looks the summary up in the cache and fills it.
    (summary,) = [
        span
        for service, span in received.spans
        if span.name == EMERGENCY and span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    ]
    cache_work = {
        span.name
        for _, span in received.spans
        if span.trace_id == summary.trace_id and span.name.startswith("cache ")
    }
    assert {"cache get", "cache set"} <= cache_work, sorted(cache_work)
    if received.engines == "real":
        # Key work on OpenBao is traced too: its data keys come from Transit.
        vault_calls = {
            name for service, span in received.spans if (name := span.name).startswith("vault ")
        }
        assert vault_calls, sorted(internal)
        # So is each request to Cassandra: the receipt's claim, the records' batch, ...
        statements = {
            (service, span.name): {a.key: a.value for a in span.attributes}
            for service, span in in_trace
            if any(
                a.key == "db.system" and a.value.string_value == "cassandra"
                for a in span.attributes
            )
        }
        assert ("ingest", "INSERT receipts") in statements, sorted(statements)
        assert any(name.startswith("BATCH") for _, name in statements), sorted(statements)
        claim = statements[("ingest", "INSERT receipts")]
        assert claim["healthbank.lwt"].bool_value
        assert claim["db.namespace"].string_value.endswith("_records")
        assert {service for service, _ in statements} >= {"ingest", "identity"}


def test_business_metrics_arrive(
    exported: tuple[Receiver, ingest_pb2.SubmitResponse, str, Path],
) -> None:
    received, _, _, _ = exported

    def total(service: str, name: str) -> float:
        return sum(point.as_int for point in received.metric_points.get((service, name), []))

    assert total("ingest", "healthbank.messages.ingested") >= 1
    assert total("ingest", "healthbank.records.stored") >= 1
    assert total("audit", "healthbank.audit.appends") >= 1
    assert ("ingest", "rpc.server.duration") in received.metric_points or any(
        name == "rpc.server.duration" for _, name in received.metric_points
    )


def test_no_identifier_in_any_export_log_or_echoed_request_id(
    exported: tuple[Receiver, ingest_pb2.SubmitResponse, str, Path],
) -> None:
    received, _, echoed, data_dir = exported
    assert received.raw
    # The national ID sent as the request id was replaced, not echoed.
    assert echoed != PERSON.national_id and len(echoed) == 32
    leaks = [needle for needle in _needles() for raw in received.raw if needle in raw]
    assert leaks == []
    assert files_containing(data_dir / "logs", _needles()) == []
    # Every log line written while serving the call carries the span it belongs to.
    ingest_log = (data_dir / "logs" / "ingest.log").read_text()
    assert f'"request_id": "{echoed}"' in ingest_log
    assert '"span_id": "' in ingest_log


def test_logs_arrive_over_otlp_inside_the_calls_trace(
    exported: tuple[Receiver, ingest_pb2.SubmitResponse, str, Path],
) -> None:
    received, _, _, _ = exported
    (submit,) = [
        span
        for service, span in received.spans
        if service == "ingest"
        and span.name == SUBMIT
        and span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    ]
    access_lines = [
        record
        for service, record in received.logs
        if service == "ingest" and SUBMIT in record.body.string_value
    ]
    assert access_lines, "ingest's access log line of the Submit was not exported"
    assert all(record.trace_id == submit.trace_id for record in access_lines)
    assert all(len(record.span_id) == 8 for record in access_lines)
