"""The MLLP listener: one asyncio server, one gRPC channel to ingest.

Per connection, messages are handled in order (MLLP is send-and-wait): each is submitted
with ``Submit`` (message id = MSH-10, format HL7V2, as a HOSPITAL_ENGINE principal of the
configured hospital) and answered with ingest's ACK (``SubmitResponse.hl7_ack``), or, when
the call fails, with the AE/AR ACK built from the status details by the same contract
(:mod:`healthbank.contracts.hl7ack`). Nothing is acknowledged AA that ingest did not store:
an unreachable ingest gives AR (resend later). A message over the size limit is answered
AR (``MESSAGE_TOO_LARGE``) without being buffered whole, and the connection goes on;
broken framing closes it unanswered (the stream cannot be resynchronised).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.common.v1 import common_pb2
from healthbank.contracts.hl7ack import REJECTED, ack_code, build_ack, read_header
from healthbank.contracts.principal import Principal, PrincipalKind, encode_token
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.rpc import ClientFactory, error_details
from healthbank.rpc.errors import TRANSIENT_CODES
from services.mllp_gateway.framing import (
    FramingError,
    MessageTooLarge,
    frame,
    read_frame,
    reader_limit,
)

_log = logging.getLogger(__name__)

SUBJECT = "mllp-gateway"
DEFAULT_PORT = 2575  # the IANA port registered for HL7 over MLLP
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SUBMIT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class GatewayConfig:
    """Which hospital the gateway speaks for, and where it listens."""

    hospital_id: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


class MllpGateway:
    """Answers each framed message with the ACK of its submission to ingest."""

    def __init__(
        self, config: GatewayConfig, ingest: ingest_pb2_grpc.IngestServiceAsyncStub
    ) -> None:
        """Serve ``config.hospital_id`` through the ``ingest`` stub."""
        self._config = config
        self._ingest = ingest

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One MLLP connection: read, submit, answer, until the peer closes."""
        try:
            while True:
                try:
                    message = await read_frame(reader)
                except MessageTooLarge as too_large:
                    writer.write(frame(self._too_large(too_large.head)))
                    await writer.drain()
                    continue
                if message is None:
                    break
                writer.write(frame(await self.acknowledge(message)))
                await writer.drain()
        except FramingError as broken:
            _log.warning("mllp connection closed: %s", broken)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    def _too_large(self, head: bytes) -> bytes:
        limit = self._config.max_message_bytes
        _log.warning("mllp message over %d bytes refused", limit)
        return _ack(
            head, REJECTED, "MESSAGE_TOO_LARGE", [("content", f"must be at most {limit} bytes")]
        )

    async def acknowledge(self, message: bytes) -> bytes:
        """Submit one message to ingest and return the HL7 ACK to send back."""
        request = ingest_pb2.SubmitRequest(
            hospital_id=self._config.hospital_id,
            message_id=read_header(message).control_id,
            format=common_pb2.SOURCE_FORMAT_HL7V2,
            content=message,
        )
        try:
            response = await self._ingest.Submit(request, timeout=SUBMIT_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as failed:
            details = error_details(failed)
            retryable = details.code in TRANSIENT_CODES
            code = ack_code(
                accepted=False, retryable=retryable, violations=details.field_violations
            )
            if details.code == grpc.StatusCode.INTERNAL:
                code = REJECTED  # our failure, not the message's: the engine may resend
            _log.info("mllp message answered %s reason=%s", code, details.reason or "-")
            return _ack(
                message, code, details.reason or details.code.name, details.field_violations
            )
        _log.info("mllp message answered outcome=%s", ingest_pb2.Outcome.Name(response.outcome))
        return bytes(response.hl7_ack)


def _ack(message: bytes, code: str, reason: str, violations: list[tuple[str, str]]) -> bytes:
    return build_ack(
        message,
        code,
        control_id=new_ulid(),
        now=datetime.now(UTC),
        reason=reason,
        violations=violations,
        retryable=code == REJECTED,
    )


@asynccontextmanager
async def open_gateway(settings: Settings, config: GatewayConfig) -> AsyncIterator[asyncio.Server]:
    """The listening MLLP server (port 0 picks a free one), closed on exit."""
    principal = Principal(PrincipalKind.HOSPITAL_ENGINE, SUBJECT, config.hospital_id)
    secret = settings.auth_secret.get_secret_value().encode()
    clients = ClientFactory(settings, token=lambda: encode_token(principal, secret))
    stub: ingest_pb2_grpc.IngestServiceAsyncStub = ingest_pb2_grpc.IngestServiceStub(
        clients.channel("ingest")
    )
    gateway = MllpGateway(config, stub)
    server = await asyncio.start_server(
        gateway.handle, config.host, config.port, limit=reader_limit(config.max_message_bytes)
    )
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()
        await clients.close()
