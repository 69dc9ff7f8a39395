"""JSON-lines logging for every healthbank process, with a last-line-of-defence PHI filter.

One object per line: ``ts`` (UTC, ISO 8601), ``level``, ``service``, ``logger``, ``msg``,
``request_id`` (from :data:`request_id_var`), ``trace_id`` and ``span_id`` (from the current
OpenTelemetry span),
the keys passed with ``extra=``, and ``exc`` when an exception is attached.

Callers must never log names, national ID numbers, phone numbers or addresses. The
:class:`PhiRedactingFilter` masks what *looks* like an ID or phone number (see
:mod:`healthbank.core.phi`), but names cannot be recognised by pattern: log person tokens, never
people.

Named ``logs`` rather than ``logging`` so that it does not shadow the standard library.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from healthbank.core.phi import redact, redact_value

# The id of the request being served; servers set it per call so every line can be correlated.
request_id_var: ContextVar[str | None] = ContextVar("healthbank_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}

# Marks the handler configure_logging installed, so a second call replaces only that one.
_HANDLER_MARK = "_healthbank_handler"


class PhiRedactingFilter(logging.Filter):
    """Masks identifier-looking text in a record's message, arguments and extra values.

    It merges ``msg % args`` into ``msg`` first, so an argument cannot slip past the check.
    Always returns True: records are masked, never dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; keep it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A malformed format string: keep the pieces so the bug stays visible.
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRIBUTES:
                setattr(record, key, redact_value(value))
        return True


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line (see the module docstring for the keys)."""

    def __init__(self, service: str) -> None:
        """Create a formatter that stamps every line with ``service``."""
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
            **_current_span_ids(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            # Exception messages are free text written by anyone: mask them too.
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's output to ``stream`` (default: stderr) as redacted JSON lines.

    Calling it again replaces the handler it installed before; other handlers (pytest's caplog,
    for instance) are left alone. Returns the installed handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    # On the handler, not the root logger: logger filters skip records from child loggers.
    handler.addFilter(PhiRedactingFilter())
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def _current_span_ids() -> dict[str, str | None]:
    """The current span's trace id (32 hex digits) and span id (16), None outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {"trace_id": None, "span_id": None}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


def stack_without_text(exc: BaseException) -> str:
    """The type names and stack frames of ``exc`` and its causes, never their messages (an
    unexpected error's text may hold a message's content), redacted: for an unhandled error's
    log line."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__module__}.{type(current).__qualname__}\n")
        parts.extend(traceback.format_tb(current.__traceback__))
        current = current.__cause__ or current.__context__
        if current is not None:
            parts.append("while handling / caused by:\n")
    return redact("".join(parts))
