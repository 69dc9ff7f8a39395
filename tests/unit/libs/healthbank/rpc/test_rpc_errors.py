"""Errors, principals and request ids through a real grpc.aio server and channel.

The probe service uses generic handlers with bytes in and bytes out, so no generated
protos are needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import SecretStr

from healthbank.contracts.principal import (
    InvalidToken,
    Principal,
    PrincipalKind,
    Purpose,
    decode_token,
    encode_token,
)
from healthbank.core.config import Settings
from healthbank.core.logs import request_id_var
from healthbank.core.telemetry import setup_telemetry
from healthbank.crypto import KeyProviderError, KeyProviderUnavailable
from healthbank.rpc import (
    ClientFactory,
    ServiceError,
    ServiceHost,
    Violations,
    caller_metadata,
    current_principal,
    default_interceptors,
    error_details,
    inbound_deadline,
    require_principal,
)
from healthbank.rpc.authz import ANY, MethodRule, with_public_methods
from healthbank.rpc.clients import open_channel
from healthbank.rpc.errors import (
    MAX_REPORTED_VIOLATIONS,
    TRANSIENT_CODES,
    VIOLATIONS_TOTAL_KEY,
    fit_violations,
)
from healthbank.storage import StorageRefused, StorageUnavailable

SECRET = "unit-test-secret"
PROBE = "healthbank.test.v1.Probe"
# Shaped like a resident ID (GB 11643) but fake; it must never leave the server.
FAKE_NATIONAL_ID = "110101199003074514"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

CLINICIAN = Principal(
    kind=PrincipalKind.CLINICIAN,
    subject="staff-0042",
    hospital_id="hospital-7",
    roles=("physician",),
    purpose=Purpose.TREATMENT,
)


class ProbeServicer:
    """Behaviours exercising each path of the interceptors."""

    def __init__(self, downstream: ClientFactory | None = None) -> None:
        self.downstream = downstream

    async def validate(self, request: bytes, context: Any) -> bytes:
        violations = Violations()
        violations.require("", "hospital_id")
        violations.require(None, "message_id")
        violations.check(len(request) < 3, "payload", "must be shorter than 3 bytes")
        violations.raise_if_any()
        return b"ok"

    async def flood(self, request: bytes, context: Any) -> bytes:
        """Thousands of violations with long paths, as a badly broken message produces."""
        violations = Violations()
        for index in range(int(request)):
            violations.add(f"content.OBX[{index}].5" + ".x" * 60, "must be a number " * 30)
        violations.raise_if_any(reason="INVALID_HL7V2")
        return b"ok"

    async def crash(self, request: bytes, context: Any) -> bytes:
        raise ValueError(f"no patient with national id {FAKE_NATIONAL_ID}")

    async def engine_down(self, request: bytes, context: Any) -> bytes:
        if request == b"storage":
            raise StorageUnavailable("cassandra keyspace records: NoHostAvailable")
        if request.startswith(b"refused:"):
            cause = request.removeprefix(b"refused:").decode()
            raise StorageRefused("cassandra keyspace records: InvalidRequest", cause=cause)
        if request == b"keys refused":
            raise KeyProviderError("Vault denied the request: permission denied")
        raise KeyProviderUnavailable("vault is sealed")

    async def busy(self, request: bytes, context: Any) -> bytes:
        raise ServiceError.unavailable("store busy", reason="STORE_BUSY", retry_delay=1.5)

    async def who_am_i(self, request: bytes, context: Any) -> bytes:
        principal = require_principal()
        return f"{principal.kind}:{principal.subject}:{principal.hospital_id}".encode()

    async def request_id(self, request: bytes, context: Any) -> bytes:
        return (request_id_var.get() or "").encode()

    async def describe_call(self, request: bytes, context: Any) -> bytes:
        """What the server saw: principal, request id, trace context and deadline."""
        metadata = dict(context.invocation_metadata() or ())
        principal = current_principal.get()
        deadline = inbound_deadline.get()
        return json.dumps(
            {
                "subject": principal.subject if principal else None,
                "request_id": request_id_var.get(),
                "traceparent": metadata.get("traceparent"),
                "remaining": None if deadline is None else deadline - time.monotonic(),
            }
        ).encode()

    async def describe_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """describe_call, answered as a server stream."""
        yield await self.describe_call(request, context)

    async def forward(self, request: bytes, context: Any) -> bytes:
        """Call describe_call on "identity" through the client factory."""
        assert self.downstream is not None
        describe = self.downstream.channel("identity").unary_unary(f"/{PROBE}/DescribeCall")
        as_service = json.loads(await describe(b""))
        as_caller = json.loads(await describe(b"", metadata=caller_metadata()))
        return json.dumps({"service": as_service, "caller": as_caller}).encode()

    async def numbers_then_missing(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"1"
        yield b"2"
        raise ServiceError.not_found("record not found", reason="RECORD_NOT_FOUND")

    async def chat(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        """Echo each message, tagged with the request id seen inside the stream."""
        async for message in requests:
            yield message + b"@" + (request_id_var.get() or "").encode()

    async def ticks(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """An endless stream the client has to cancel."""
        count = 0
        while True:
            count += 1
            yield str(count).encode()
            await asyncio.sleep(0.01)


def probe_handler(servicer: ProbeServicer) -> grpc.GenericRpcHandler:
    unary = {
        "Validate": servicer.validate,
        "Flood": servicer.flood,
        "Crash": servicer.crash,
        "EngineDown": servicer.engine_down,
        "Busy": servicer.busy,
        "WhoAmI": servicer.who_am_i,
        "RequestId": servicer.request_id,
        "DescribeCall": servicer.describe_call,
        "Forward": servicer.forward,
    }
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in unary.items()}
    handlers["NumbersThenMissing"] = grpc.unary_stream_rpc_method_handler(
        servicer.numbers_then_missing
    )
    handlers["Chat"] = grpc.stream_stream_rpc_method_handler(servicer.chat)
    handlers["Ticks"] = grpc.unary_stream_rpc_method_handler(servicer.ticks)
    handlers["DescribeStream"] = grpc.unary_stream_rpc_method_handler(servicer.describe_stream)
    return grpc.method_handlers_generic_handler(PROBE, handlers)


PROBE_METHODS = (
    "Validate",
    "Flood",
    "Crash",
    "EngineDown",
    "Busy",
    "RequestId",
    "DescribeCall",
    "Forward",
    "NumbersThenMissing",
    "Chat",
    "Ticks",
    "DescribeStream",
)
# The probe is open to anyone, so these tests see the interceptors' other paths; only
# WhoAmI is for clinicians and emergency staff, to see the table's refusals.
PROBE_AUTHORIZATION = {
    **with_public_methods(*(f"/{PROBE}/{name}" for name in PROBE_METHODS), why="test probe"),
    f"/{PROBE}/WhoAmI": MethodRule(
        "test probe", callers={PrincipalKind.CLINICIAN: ANY, PrincipalKind.EMERGENCY: ANY}
    ),
}


def probe_host(settings: Settings, servicer: ProbeServicer, telemetry: Any) -> ServiceHost:
    return ServiceHost(
        "ingest",
        settings,
        register=[lambda server: server.add_generic_rpc_handlers((probe_handler(servicer),))],
        service_names=[PROBE],
        port=0,
        telemetry=telemetry,
        interceptors=default_interceptors("ingest", settings, telemetry, PROBE_AUTHORIZATION),
    )


def make_settings() -> Settings:
    return Settings(auth_secret=SecretStr(SECRET), shutdown_grace_seconds=1.0)


@pytest.fixture
async def probe() -> AsyncIterator[tuple[grpc.aio.Channel, ServiceHost]]:
    settings = make_settings()
    servicer = ProbeServicer()
    host = probe_host(settings, servicer, setup_telemetry("ingest", None))
    port = await host.start()
    # The server calls itself as "identity" to exercise the client factory.
    servicer.downstream = ClientFactory(
        settings,
        token=encode_token(_service_principal(), SECRET.encode()),
        addresses={"identity": f"127.0.0.1:{port}"},
    )
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        yield channel, host
    finally:
        await channel.close()
        await servicer.downstream.close()
        await host.stop(grace=0)


def _service_principal() -> Principal:
    return Principal(kind=PrincipalKind.SERVICE, subject="ingest", purpose=Purpose.OPERATIONS)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def call(
    channel: grpc.aio.Channel,
    method: str,
    request: bytes = b"",
    metadata: tuple[tuple[str, str], ...] = (),
    rpc_timeout: float | None = 5.0,
) -> bytes:
    result: bytes = await channel.unary_unary(f"/{PROBE}/{method}")(
        request, metadata=metadata, timeout=rpc_timeout
    )
    return result


async def test_violations_reach_the_client_as_bad_request(probe: Any) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "Validate", b"12345")
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.message == "invalid request: hospital_id, message_id, payload"
    assert details.field_violations == [
        ("hospital_id", "is required"),
        ("message_id", "is required"),
        ("payload", "must be shorter than 3 bytes"),
    ]
    assert details.reason == "INVALID_ARGUMENT"
    assert details.domain == "healthbank.io"
    assert details.retry_delay is None


async def test_thousands_of_violations_fit_a_default_client(probe: Any) -> None:
    """A default gRPC client (16 KiB trailer cap) gets INVALID_ARGUMENT, not RESOURCE_EXHAUSTED."""
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "Flood", b"5000")
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_HL7V2"
    assert 0 < len(details.field_violations) <= MAX_REPORTED_VIOLATIONS
    assert details.field_violations[0][0].startswith("content.OBX[0].5")
    assert details.metadata[VIOLATIONS_TOTAL_KEY] == "5000"
    assert f"{5000 - len(details.field_violations)} more violations not listed" in details.message
    trailer = dict(raised.value.trailing_metadata())["grpc-status-details-bin"]
    assert len(trailer) < 8 * 1024
    assert not ServiceError.invalid_argument([("a", "b")] * 5000).retryable


def test_few_violations_are_reported_whole() -> None:
    violations = [(f"content.PID[0].{n}", "is required") for n in range(3)]
    assert fit_violations(violations) == (violations, 0)
    err = ServiceError.invalid_argument(violations)
    assert err.field_violations == violations
    assert VIOLATIONS_TOTAL_KEY not in err.metadata


def test_a_parsed_field_is_its_value_or_one_violation() -> None:
    def parse_name(value: str) -> str | None:
        return value.removeprefix("persons/") if value.startswith("persons/") else None

    violations = Violations()
    assert violations.parse("persons/p1", "parent", parse_name, "must be persons/{token}") == "p1"
    assert not violations
    assert violations.parse("", "parent", parse_name, "must be persons/{token}") is None
    assert violations.parse("grants/g1", "name", parse_name, "must be persons/{token}") is None
    # A missing field is only missing: its rule is not added as well.
    assert violations.items == [("parent", "is required"), ("name", "must be persons/{token}")]


@pytest.mark.parametrize(
    ("engine", "reason"),
    [(b"storage", "STORAGE_UNAVAILABLE"), (b"keys", "KEY_PROVIDER_UNAVAILABLE")],
)
async def test_engine_outage_is_unavailable_and_retryable(
    probe: Any, engine: bytes, reason: str
) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "EngineDown", engine)
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == reason
    assert details.retry_delay is not None and details.retry_delay > 0


@pytest.mark.parametrize(
    ("cause", "code"),
    [
        ("REQUEST_TOO_LARGE", grpc.StatusCode.INVALID_ARGUMENT),
        ("SCHEMA_MISSING", grpc.StatusCode.FAILED_PRECONDITION),
        ("INVALID_QUERY", grpc.StatusCode.FAILED_PRECONDITION),
        ("CONFIGURATION", grpc.StatusCode.FAILED_PRECONDITION),
        ("UNAUTHORIZED", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_a_refused_storage_request_is_permanent_and_names_its_cause(
    probe: Any, cause: str, code: grpc.StatusCode
) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "EngineDown", f"refused:{cause}".encode())
    details = error_details(raised.value)
    assert details.code == code
    assert code not in TRANSIENT_CODES
    assert details.reason == f"STORAGE_{cause}"
    assert details.retry_delay is None
    assert "InvalidRequest" not in details.message


async def test_a_key_provider_refusal_is_permanent(probe: Any) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "EngineDown", b"keys refused")
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "KEY_PROVIDER_REFUSED"
    assert details.retry_delay is None
    assert "Vault" not in details.message


async def test_unexpected_exception_is_internal_without_its_text(
    probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    channel, _ = probe
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(
            channel, "Crash", metadata=(("x-request-id", "acedacedacedacedacedacedacedac01"),)
        )
    err = raised.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error (request id acedacedacedacedacedacedacedac01)"
    assert FAKE_NATIONAL_ID not in (err.details() or "")
    assert all(FAKE_NATIONAL_ID not in str(value) for _, value in err.trailing_metadata() or ())
    assert dict(err.trailing_metadata() or ())["x-request-id"] == "acedacedacedacedacedacedacedac01"
    # The log names the exception type and where it happened, never its text.
    assert "ValueError" in caplog.text
    assert "acedacedacedacedacedacedacedac01" in caplog.text
    assert FAKE_NATIONAL_ID not in caplog.text


async def test_retry_info_travels_with_unavailable(probe: Any) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "Busy")
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == "STORE_BUSY"
    assert details.retry_delay == pytest.approx(1.5)


async def test_errors_after_streamed_messages_keep_their_status(probe: Any) -> None:
    channel, _ = probe
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in channel.unary_stream(f"/{PROBE}/NumbersThenMissing")(b""):
            received.append(message)
    assert received == [b"1", b"2"]
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "RECORD_NOT_FOUND"


def test_token_round_trip() -> None:
    token = encode_token(CLINICIAN, SECRET.encode())
    assert token.startswith("hb1.")
    assert decode_token(token, SECRET.encode()) == CLINICIAN


def test_token_expiry_and_tampering_are_refused() -> None:
    issued = datetime(2030, 1, 1, tzinfo=UTC)
    token = encode_token(CLINICIAN, SECRET.encode(), ttl_seconds=60, now=issued)
    assert decode_token(token, SECRET.encode(), now=issued + timedelta(seconds=59)) == CLINICIAN

    with pytest.raises(InvalidToken) as expired:
        decode_token(token, SECRET.encode(), now=issued + timedelta(seconds=60))
    assert expired.value.reason == "TOKEN_EXPIRED"

    version, payload, signature = token.split(".")
    forged = encode_token(
        Principal(kind=PrincipalKind.COMMITTEE, subject="staff-0042"), b"wrong", now=issued
    ).split(".")[1]
    for bad in (
        f"{version}.{forged}.{signature}",
        f"{version}.{payload}.{signature[:-2]}AA",
        token[:-1],
        "hb2." + token[4:],
        "not-a-token",
        "",
    ):
        with pytest.raises(InvalidToken) as rejected:
            decode_token(bad, SECRET.encode(), now=issued)
        assert rejected.value.reason == "INVALID_TOKEN"
    with pytest.raises(InvalidToken):
        decode_token(token, b"another-secret", now=issued)


async def test_principal_reaches_the_servicer(probe: Any) -> None:
    channel, _ = probe
    token = encode_token(CLINICIAN, SECRET.encode())
    assert await call(channel, "WhoAmI", metadata=bearer(token)) == (
        b"clinician:staff-0042:hospital-7"
    )


async def test_tampered_token_is_refused_before_the_servicer(probe: Any) -> None:
    channel, _ = probe
    token = encode_token(CLINICIAN, SECRET.encode())
    version, payload, signature = token.split(".")
    tampered = f"{version}.{payload[:-2]}xx.{signature}"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "WhoAmI", metadata=bearer(tampered))
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "INVALID_TOKEN"


async def test_missing_or_wrong_kind_of_principal(probe: Any) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await call(channel, "WhoAmI")
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED

    researcher = Principal(kind=PrincipalKind.RESEARCHER, subject="res-9", purpose=Purpose.RESEARCH)
    token = encode_token(researcher, SECRET.encode())
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await call(channel, "WhoAmI", metadata=bearer(token))
    assert error_details(denied.value).code == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(denied.value).reason == "PRINCIPAL_KIND_NOT_ALLOWED"


async def test_request_id_is_adopted_or_minted_and_sent_back_in_the_trailers(probe: Any) -> None:
    channel, _ = probe
    rpc = channel.unary_unary(f"/{PROBE}/RequestId")
    sent = rpc(b"", metadata=(("x-request-id", "abcabcabcabcabcabcabcabcabcab123"),), timeout=5)
    assert await sent == b"abcabcabcabcabcabcabcabcabcab123"
    # In the trailers, with the status: no batch of its own for the initial metadata (ADR 65).
    assert ("x-request-id", "abcabcabcabcabcabcabcabcabcab123") in list(
        await sent.trailing_metadata()
    )
    assert "x-request-id" not in dict(await sent.initial_metadata())

    minted = rpc(b"", timeout=5)
    seen = (await minted).decode()
    assert len(seen) == 32 and all(c in "0123456789abcdef" for c in seen)
    assert ("x-request-id", seen) in list(await minted.trailing_metadata())

    # A refusal keeps it beside its rich error details.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await channel.unary_unary(f"/{PROBE}/WhoAmI")(
            b"", metadata=(("x-request-id", "abcabcabcabcabcabcabcabcabcab456"),), timeout=5
        )
    trailers = dict(refused.value.trailing_metadata() or ())
    assert trailers["x-request-id"] == "abcabcabcabcabcabcabcabcabcab456"
    assert error_details(refused.value).code == grpc.StatusCode.UNAUTHENTICATED

    # Ids that could forge log fields, bloat logs or carry an identifier (free text, a
    # national ID, one hidden in hex) are replaced, not echoed.
    for unsafe in (
        "id=1 level=ERROR",
        "x" * 200,
        "req-abc-123",
        "jane-doe",
        "11010519491231002X",
        "11010519491231002a" + "b" * 14,
    ):
        replaced = (await rpc(b"", metadata=(("x-request-id", unsafe),), timeout=5)).decode()
        assert replaced != unsafe and len(replaced) == 32


async def test_client_factory_forwards_caller_context(probe: Any) -> None:
    channel, _ = probe
    token = encode_token(CLINICIAN, SECRET.encode())
    described = json.loads(
        await call(
            channel,
            "Forward",
            metadata=(
                *bearer(token),
                ("x-request-id", "fdfdfdfdfdfdfdfdfdfdfdfdfdfdfd07"),
                ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
            ),
            rpc_timeout=3.0,
        )
    )
    # The service calls as itself unless it explicitly acts as its caller.
    assert described["service"]["subject"] == "ingest"
    assert described["caller"]["subject"] == "staff-0042"
    described = described["service"]
    # Request id, deadline and trace travel downstream.
    assert described["request_id"] == "fdfdfdfdfdfdfdfdfdfdfdfdfdfdfd07"
    # grpc rounds the wire timeout up a little, hence the margin.
    assert 0 < described["remaining"] < 3.1
    assert described["traceparent"].split("-")[1] == TRACE_ID


async def test_client_factory_uses_its_own_token_outside_a_call(probe: Any) -> None:
    _, host = probe
    factory = ClientFactory(
        make_settings(),
        token=lambda: encode_token(_service_principal(), SECRET.encode()),
        addresses={"identity": f"127.0.0.1:{host.port}"},
        default_timeout=2.0,
    )
    try:
        described = json.loads(
            await factory.channel("identity").unary_unary(f"/{PROBE}/DescribeCall")(b"")
        )
        assert described["subject"] == "ingest"
        assert len(described["request_id"]) == 32
        # Streaming calls get the same credentials (grpc.aio files interceptors per call type).
        stream = factory.channel("identity").unary_stream(f"/{PROBE}/DescribeStream")(b"")
        streamed = [json.loads(message) async for message in stream]
        assert streamed[0]["subject"] == "ingest"
        assert 0 < described["remaining"] < 2.1
        assert factory.channel("identity") is factory.channel("identity")
    finally:
        await factory.close()


def test_violations_require_semantics() -> None:
    violations = Violations()
    assert violations.require("x", "a")
    assert violations.require(0, "zero_is_a_value")
    assert not violations.require([], "b")
    assert not violations.require(None, "c")
    assert violations.items == [("b", "is required"), ("c", "is required")]
    with pytest.raises(ServiceError) as raised:
        violations.raise_if_any()
    assert raised.value.message == "invalid request: b, c"
    Violations().raise_if_any()  # nothing recorded, nothing raised


async def test_bidi_stream_runs_inside_the_interceptors(probe: Any) -> None:
    channel, _ = probe
    chat = channel.stream_stream(f"/{PROBE}/Chat")(
        metadata=(("x-request-id", "cccccccccccccccccccccccccccccccc"),), timeout=5
    )
    await chat.write(b"a")
    assert await chat.read() == b"a@cccccccccccccccccccccccccccccccc"
    await chat.write(b"b")
    assert await chat.read() == b"b@cccccccccccccccccccccccccccccccc"
    await chat.done_writing()
    assert await chat.read() == grpc.aio.EOF
    assert await chat.code() == grpc.StatusCode.OK


async def test_client_cancelling_a_stream_is_not_an_error(
    probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    channel, _ = probe
    caplog.set_level(logging.INFO)
    ticks = channel.unary_stream(f"/{PROBE}/Ticks")(b"", timeout=5)
    assert await ticks.read() == b"1"
    ticks.cancel()
    # The server is unharmed and nothing was reported as an unhandled error.
    assert await call(
        channel, "RequestId", metadata=(("x-request-id", "afafafafafafafafafafafafafafafaf"),)
    ) == (b"afafafafafafafafafafafafafafafaf")
    await asyncio.sleep(0.1)
    assert "unhandled" not in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_each_rpc_gets_a_span_a_duration_and_an_access_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="healthbank.rpc.access")
    servicer = ProbeServicer()
    spans = InMemorySpanExporter()
    metric_reader = InMemoryMetricReader()
    telemetry = setup_telemetry(
        "ingest",
        None,
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[metric_reader],
    )
    host = probe_host(make_settings(), servicer, telemetry)
    port = await host.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await call(
                channel,
                "RequestId",
                b"secret-payload",
                (("x-request-id", "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0"),),
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await call(
                    channel,
                    "Validate",
                    b"12345",
                    (("x-request-id", "bad0bad0bad0bad0bad0bad0bad0bad0"),),
                )
            # The caller has the refusal as soon as it is sent; the server records it
            # (span, duration, access line) once its task resumes after sending it.
            await _spans_finished(spans, 2)
    finally:
        await host.stop(grace=0)

    by_name = {span.name: span for span in spans.get_finished_spans()}
    ok_span = by_name[f"{PROBE}/RequestId"]
    bad_span = by_name[f"{PROBE}/Validate"]
    assert ok_span.attributes is not None and bad_span.attributes is not None
    assert ok_span.attributes["rpc.system"] == "grpc"
    assert ok_span.attributes["rpc.service"] == PROBE
    assert ok_span.attributes["rpc.method"] == "RequestId"
    assert ok_span.attributes["rpc.grpc.status_code"] == 0
    assert ok_span.attributes["healthbank.request_id"] == "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0"
    assert bad_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # A refusal is an answer, not a fault: no span error, no error.type.
    assert bad_span.status.status_code is StatusCode.UNSET
    assert "error.type" not in bad_span.attributes
    assert all("secret-payload" not in str(value) for value in ok_span.attributes.values())

    metrics_data = metric_reader.get_metrics_data()
    assert metrics_data is not None
    points = [
        point
        for resource in metrics_data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "rpc.server.duration"
        for point in metric.data.data_points
    ]
    labels = {tuple(sorted((point.attributes or {}).items())) for point in points}
    assert labels == {
        (("rpc.grpc.status_code", 0), ("rpc.method", f"{PROBE}/RequestId")),
        (("rpc.grpc.status_code", 3), ("rpc.method", f"{PROBE}/Validate")),
    }

    assert f"rpc method={PROBE}/Validate code=INVALID_ARGUMENT" in caplog.text
    assert "request_id=bad0bad0bad0bad0bad0bad0bad0bad0" in caplog.text


async def _spans_finished(spans: InMemorySpanExporter, count: int, within: float = 5.0) -> None:
    """Wait until ``count`` server spans have ended, at most ``within`` seconds (the
    assertions after say which are missing)."""
    for _ in range(int(within / 0.01)):
        if len(spans.get_finished_spans()) >= count:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ServiceError.unavailable("down", reason="STORAGE_UNAVAILABLE"), True),
        (ServiceError.deadline_exceeded("slow"), True),
        (ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", reason="TOO_BIG"), False),
        (ServiceError(grpc.StatusCode.ABORTED, "conflict", reason="CONFLICT"), False),
        (ServiceError.invalid_argument([("content", "must not be empty")]), False),
    ],
)
def test_only_transient_errors_are_retryable(error: ServiceError, retryable: bool) -> None:
    # One rule for every service: a permanent error is never presented as "retry".
    assert error.retryable is retryable


async def test_a_method_handler_is_wrapped_once_and_a_new_handler_anew() -> None:
    # ADR 65: wrapping each call's handler cost more than the interceptor's own work.
    (interceptor,) = default_interceptors("ingest", make_settings())

    async def behaviour(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    details = _CallDetails("/probe.Probe/Echo")

    async def same(_: Any) -> Any:
        return handler

    first = await interceptor.intercept_service(same, details)
    assert first is not handler and first.unary_unary is not None
    assert await interceptor.intercept_service(same, details) is first

    async def fresh(_: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behaviour)

    assert await interceptor.intercept_service(fresh, details) is not first

    async def unknown(_: Any) -> None:
        return None

    assert await interceptor.intercept_service(unknown, details) is None


class _CallDetails:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()
