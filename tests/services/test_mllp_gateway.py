"""`healthbank mllp`: the MLLP listener in front of a real ingest, spoken to by a real client.

Ingest, identity, audit and archive run in-process on the embedded backend; the gateway
listens on a free port and python-hl7's ``MLLPClient`` (a third-party MLLP implementation)
sends framed messages. Raw sockets cover what a polite client never does: broken framing
and oversized messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from hl7.client import MLLPClient
from repo_paths import HL7_SAMPLES
from repo_paths import message as fixture
from service_support import RunningServices, service_settings

from healthbank.core.config import Settings
from healthbank.records import RecordStore, open_record_store
from healthbank.rpc import service_client_factory
from services.archive.app import open_service as open_archive
from services.audit.app import open_service as open_audit
from services.identity.app import open_service as open_identity
from services.ingest.app import SERVICE
from services.ingest.app import open_service as open_ingest
from services.mllp_gateway.app import GatewayConfig, open_gateway
from services.mllp_gateway.framing import END_BLOCK, START_BLOCK

HOSPITAL = "hospital-b"


@dataclass
class Gateway:
    port: int
    records: RecordStore

    def send(self, message: bytes) -> list[list[str]]:
        """Send with python-hl7's MLLP client; the ACK's segments split into fields."""
        with MLLPClient("127.0.0.1", self.port) as client:
            answer: bytes = client.send_message(message)
        return _segments(answer)


def _segments(framed: bytes) -> list[list[str]]:
    assert framed.startswith(START_BLOCK) and framed.endswith(END_BLOCK)
    text = framed[1:-2].decode()
    return [segment.split("|") for segment in text.strip("\r").split("\r")]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = service_settings(tmp_path)
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        for name, opener in (
            ("identity", open_identity),
            ("audit", open_audit),
            ("archive", open_archive),
        ):
            await running.start(name, opener(settings))
        clients = service_client_factory(settings, SERVICE, addresses=dict(running.addresses))
        exits.push_async_callback(clients.close)
        await running.start("ingest", open_ingest(settings, clients=clients))
        gateway_settings: Settings = settings.model_copy(
            update={"ingest_addr": running.addresses["ingest"]}
        )
        config = GatewayConfig(hospital_id=HOSPITAL, port=0, max_message_bytes=64 * 1024)
        server = await exits.enter_async_context(open_gateway(gateway_settings, config))
        records = await open_record_store(settings)
        exits.push_async_callback(records.close)
        yield Gateway(server.sockets[0].getsockname()[1], records)


async def test_a_stored_message_is_answered_aa_with_its_control_id(gateway: Gateway) -> None:
    msh, msa = await asyncio.to_thread(gateway.send, fixture("hl7_adt_a01.er7"))
    assert msh[8] == "ACK^A01^ACK"
    assert msa == ["MSA", "AA", "ADT-B-000917"]
    receipt = await gateway.records.get_receipt(HOSPITAL, "ADT-B-000917")
    assert receipt is not None and len(receipt.record_ids) == 7
    # A resend (the engine lost our ACK) is acknowledged again and stored once.
    _, again = await asyncio.to_thread(gateway.send, fixture("hl7_adt_a01.er7"))
    assert again == ["MSA", "AA", "ADT-B-000917"]
    assert await gateway.records.get_receipt(HOSPITAL, "ADT-B-000917") == receipt


async def test_a_message_breaking_the_standard_is_answered_ae_naming_it(gateway: Gateway) -> None:
    sample = (HL7_SAMPLES / "python-hl7" / "samples_0.er7").read_bytes()
    _, msa, err = await asyncio.to_thread(gateway.send, sample)
    assert msa == ["MSA", "AE", "CNTRL-3456"]
    assert err[2] == "PID^1^7"
    assert err[5] == "INVALID_HL7V2"
    assert "EVERYWOMAN" not in "|".join(err)
    assert await gateway.records.get_receipt(HOSPITAL, "CNTRL-3456") is None


async def test_several_messages_on_one_connection_in_order(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    first = fixture("hl7_adt_a01.er7")
    second = fixture("hl7_oru_r01.er7")
    writer.write(START_BLOCK + first + END_BLOCK + b"\n" + START_BLOCK + second + END_BLOCK)
    await writer.drain()
    answers = [await reader.readuntil(END_BLOCK) for _ in range(2)]
    assert [_segments(answer)[1][1] for answer in answers] == ["AA", "AA"]
    assert _segments(answers[0])[1][2] == "ADT-B-000917"
    writer.close()


async def test_broken_framing_closes_the_connection(gateway: Gateway) -> None:
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", START_BLOCK + b"MSH|^~\\&|x" + START_BLOCK):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(garbage)
        await writer.drain()
        if garbage.startswith(START_BLOCK):
            writer.write(b"more" + END_BLOCK)
            await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()


async def test_an_oversized_message_is_refused_ar_and_the_connection_goes_on(
    gateway: Gateway,
) -> None:
    header = b"MSH|^~\\&|HIS|hospital-b|HB|CITY|20260305143000||ORU^R01|BIG-1|P|2.5\r"
    huge = header + b"OBX|1|TX|x^y^LN||" + b"a" * (200 * 1024) + b"\r"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        START_BLOCK + huge + END_BLOCK + START_BLOCK + fixture("hl7_adt_a01.er7") + END_BLOCK
    )
    await writer.drain()
    refused = _segments(await reader.readuntil(END_BLOCK))
    assert refused[1] == ["MSA", "AR", "BIG-1"]
    assert refused[2][5] == "MESSAGE_TOO_LARGE"
    accepted = _segments(await reader.readuntil(END_BLOCK))
    assert accepted[1] == ["MSA", "AA", "ADT-B-000917"]
    writer.close()
