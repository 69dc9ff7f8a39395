"""Unit tests for JSON logging, the PHI filter and the shared PHI patterns."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from healthbank.core.logs import configure_logging, request_id_var
from healthbank.core.phi import REDACTED, contains_phi, redact, redact_value

NATIONAL_ID = "11010519491231002X"
MOBILE = "13812345678"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("audit", "INFO", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"id {NATIONAL_ID} seen", f"id {REDACTED} seen"),
        ("id 11010519491231002x.", f"id {REDACTED}."),
        (f"call {MOBILE}", f"call {REDACTED}"),
        (f"手机{MOBILE}\uff0c请回电", f"手机{REDACTED}\uff0c请回电"),
        ("card 6222020200112233445", f"card {REDACTED}"),
        ("mrn=0012345678", f"mrn={REDACTED}"),
        ("port 50051 took 1234 ms", "port 50051 took 1234 ms"),
        ("record 01JD5Z8Q3S0000000000000000", "record 01JD5Z8Q3S0000000000000000"),
        ("token 9f2c1234567890123456789abcdef0", "token 9f2c1234567890123456789abcdef0"),
        ("trace 4bf92f3577b34da6a3ce929d0e0e4736", "trace 4bf92f3577b34da6a3ce929d0e0e4736"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert contains_phi(text) == (text != expected)


def test_redact_value_recurses() -> None:
    value = {"ids": [NATIONAL_ID, 13812345678], "n": 7, "nested": (MOBILE, True, 1.5)}
    assert redact_value(value) == {
        "ids": [REDACTED, REDACTED],
        "n": 7,
        "nested": (REDACTED, True, 1.5),
    }


def test_json_lines_with_context(log_stream: io.StringIO) -> None:
    token = request_id_var.set("req-1")
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("op") as span:
            logging.getLogger("healthbank.audit").info(
                "appended %d leaves", 3, extra={"tree_size": 42}
            )
            trace_id = format(span.get_span_context().trace_id, "032x")
            span_id = format(span.get_span_context().span_id, "016x")
    finally:
        request_id_var.reset(token)
    (entry,) = lines(log_stream)
    assert entry["service"] == "audit"
    assert entry["logger"] == "healthbank.audit"
    assert entry["level"] == "INFO"
    assert entry["msg"] == "appended 3 leaves"
    assert entry["request_id"] == "req-1"
    assert entry["trace_id"] == trace_id
    assert entry["span_id"] == span_id
    assert entry["tree_size"] == 42
    assert str(entry["ts"]).endswith("+00:00")


def test_phi_is_masked_in_message_args_extras_and_exceptions(log_stream: io.StringIO) -> None:
    log = logging.getLogger("healthbank.identity")
    log.warning(f"lookup {NATIONAL_ID}")
    log.warning("lookup %s from %s", NATIONAL_ID, MOBILE)
    log.warning("lookup", extra={"national_id": NATIONAL_ID, "phones": [MOBILE]})
    try:
        raise ValueError(f"no patient {NATIONAL_ID}")
    except ValueError:
        log.exception("failed")
    output = log_stream.getvalue()
    assert NATIONAL_ID not in output and MOBILE not in output
    entries = lines(log_stream)
    assert entries[1]["msg"] == f"lookup {REDACTED} from {REDACTED}"
    assert entries[2]["national_id"] == REDACTED and entries[2]["phones"] == [REDACTED]
    assert REDACTED in str(entries[3]["exc"])


def test_level_and_reconfiguration(log_stream: io.StringIO) -> None:
    logging.getLogger("healthbank").debug("hidden")
    assert log_stream.getvalue() == ""
    second = io.StringIO()
    handler = configure_logging("audit", "debug", stream=second)
    try:
        logging.getLogger("healthbank").debug("shown")
        assert log_stream.getvalue() == ""  # the first handler was replaced, not duplicated
        assert [entry["msg"] for entry in lines(second)] == ["shown"]
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)


def test_bad_format_arguments_do_not_break_logging(log_stream: io.StringIO) -> None:
    logging.getLogger("x").info("two %s %s", "args-missing")
    assert "two" in lines(log_stream)[0]["msg"]  # type: ignore[operator]
