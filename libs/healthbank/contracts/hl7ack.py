"""The HL7 v2 acknowledgement (original mode ACK) that ingest and the MLLP gateway agree on.

An ACK answers one submitted ER7 message: ``MSH`` (sending and receiving application and
facility swapped, ``MSH-9`` = ``ACK^<trigger>^ACK``, the original ``MSH-11``/``MSH-12``),
``MSA`` (``AA`` accepted, ``AE`` error in the content, ``AR`` rejected: unsupported message
type or a failure on our side that a resend may fix; ``MSA-2`` = the original ``MSH-10``)
and, for ``AE``/``AR``, one ``ERR`` per reported violation (HL7 v2.5 layout: ``ERR-2``
location, ``ERR-3`` HL7 table 0357 code, ``ERR-4`` severity, ``ERR-5`` our reason,
``ERR-8`` the description). Descriptions name rules, never values, as everywhere else.
The ACK uses the original message's delimiters, so an engine parses it as it parses its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

ACCEPTED = "AA"
ERROR = "AE"
REJECTED = "AR"

_LOCAL = timezone(timedelta(hours=8))
# HL7 table 0357 message error condition codes.
_REQUIRED_MISSING = "101^Required field missing^HL70357"
_DATA_TYPE_ERROR = "102^Data type error^HL70357"
_UNSUPPORTED_TYPE = "200^Unsupported message type^HL70357"
_INTERNAL_ERROR = "207^Application internal error^HL70357"
_LOCATION = re.compile(r"^content\.([A-Z][A-Z0-9]{2})\[(\d+)\](?:\.(\d+))?")


@dataclass(frozen=True)
class MessageHeader:
    """What an ACK needs from the original MSH (defaults when it is unreadable)."""

    field: str = "|"
    encoding: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"


def read_header(message: bytes) -> MessageHeader:
    """The MSH fields of ``message`` an ACK echoes; tolerant of anything (never raises)."""
    text = message.lstrip(b"\x0b").decode("utf-8", errors="replace")
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return MessageHeader()
    separator = first[3]
    fields = first.split(separator)
    encoding = fields[1] if len(fields) > 1 and len(fields[1]) >= 4 else "^~\\&"

    def field(number: int) -> str:
        # fields[1] is MSH-2, so MSH-n is fields[n - 1].
        return fields[number - 1] if len(fields) >= number else ""

    component = encoding[0]
    message_type = field(9).split(component)
    return MessageHeader(
        field=separator,
        encoding=encoding,
        sending_application=field(3),
        sending_facility=field(4),
        receiving_application=field(5),
        receiving_facility=field(6),
        trigger=message_type[1] if len(message_type) > 1 else "",
        control_id=field(10).split(component)[0],
        processing_id=field(11) or "P",
        version=field(12).split(component)[0] or "2.5",
    )


def build_ack(
    original: bytes,
    code: str,
    *,
    control_id: str,
    now: datetime,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
    retryable: bool = False,
) -> bytes:
    """The ER7 ACK (segments separated by CR) for ``original``; ``code`` is AA, AE or AR.

    ``control_id`` is the ACK's own MSH-10. An AE/AR without violations still gets one ERR
    carrying ``reason``.
    """
    header = read_header(original)
    sep, component = header.field, header.encoding[0]
    msh = sep.join(
        [
            "MSH",
            header.encoding,
            header.receiving_application,
            header.receiving_facility,
            header.sending_application,
            header.sending_facility,
            now.astimezone(_LOCAL).strftime("%Y%m%d%H%M%S+0800"),
            "",
            component.join(["ACK", header.trigger, "ACK"]) if header.trigger else "ACK",
            _clean(control_id, header),
            header.processing_id,
            header.version,
        ]
    )
    segments = [msh, sep.join(["MSA", code, header.control_id])]
    if code != ACCEPTED:
        for path, description in violations or [("", reason or "rejected")]:
            segments.append(_err(header, path, description, reason, retryable))
    return ("\r".join(segments) + "\r").encode()


def _err(header: MessageHeader, path: str, description: str, reason: str, retryable: bool) -> str:
    sep, component = header.field, header.encoding[0]
    location = ""
    match = _LOCATION.match(path)
    if match:
        segment, occurrence, number = match.groups()
        location = component.join([segment, str(int(occurrence) + 1), number or ""]).rstrip(
            component
        )
    if retryable:
        condition = _INTERNAL_ERROR
    elif "unsupported message type" in description:
        condition = _UNSUPPORTED_TYPE
    elif description.startswith("is required"):
        condition = _REQUIRED_MISSING
    else:
        condition = _DATA_TYPE_ERROR
    fields = [
        "ERR",
        "",
        location,
        condition.replace("^", component),
        "E",
        _clean(reason, header),
        "",
        "",
        _clean(f"{path} {description}".strip(), header),
    ]
    return sep.join(fields)


def _clean(text: str, header: MessageHeader) -> str:
    """Text made safe for one ER7 field: delimiters and escape become spaces."""
    unsafe = set(header.field + header.encoding) | {"\r", "\n"}
    return "".join(" " if char in unsafe else char for char in text)


def ack_code(*, accepted: bool, retryable: bool, violations: Sequence[tuple[str, str]]) -> str:
    """AA when stored; AR for an unsupported message type or a failure a resend may fix; AE
    otherwise (the content is wrong: resending it unchanged will not help)."""
    if accepted:
        return ACCEPTED
    if retryable or any("unsupported message type" in text for _, text in violations):
        return REJECTED
    return ERROR
