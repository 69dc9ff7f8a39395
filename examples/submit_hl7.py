"""Submit one HL7 v2 message to a running healthbank, as a hospital integration engine does.

    healthbank up                                   # in another terminal (or any stack)
    .venv/bin/python examples/submit_hl7.py         # the sample ADT^A01 shipped in tests/
    .venv/bin/python examples/submit_hl7.py my.hl7 --ingest 127.0.0.1:50051

The hospital and the message id come from the message itself (MSH-4 and MSH-10, the
control id): a retry of the same message answers OUTCOME_DUPLICATE and stores nothing
twice, so run it twice to see that. The caller's credential is a development token
signed with ``HEALTHBANK_AUTH_SECRET`` (ADR 5); production engines present their own.
Prints the outcome by name, the patient's pseudonymous token and the stored records;
on failure the status, the reason and the retry delay from the google.rpc details.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, encode_token
from healthbank.core.config import load_settings
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.rpc import error_details

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "messages" / "hl7_adt_a01.er7"


def msh_fields(message: bytes) -> tuple[str, str]:
    """(sending facility MSH-4, message control id MSH-10) of an HL7 v2 message."""
    msh = message.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r", 1)[0].decode()
    if not msh.startswith("MSH") or len(msh) < 4:
        raise ValueError("not an HL7 v2 message: it must start with an MSH segment")
    fields = msh.split(msh[3])  # MSH-1, the field separator, is the character after "MSH"
    if len(fields) < 10:
        raise ValueError("the MSH segment has no MSH-10 (message control id)")
    component = msh[4] if len(msh) > 4 else "^"
    return fields[3].split(component)[0], fields[9]


async def submit(address: str, message: bytes, secret: str) -> int:
    """Submit ``message``; print what healthbank answered; return an exit code."""
    hospital_id, control_id = msh_fields(message)
    engine = Principal(PrincipalKind.HOSPITAL_ENGINE, f"{hospital_id}-engine", hospital_id)
    token = encode_token(engine, secret.encode())
    async with grpc.aio.insecure_channel(address) as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            ack = await ingest.Submit(
                ingest_pb2.SubmitRequest(
                    hospital_id=hospital_id,
                    message_id=control_id,  # stable across retries
                    format=common_pb2.SOURCE_FORMAT_HL7V2,
                    content=message,
                ),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            details = error_details(error)
            print(f"{details.code.name} ({details.reason}): {details.message}", file=sys.stderr)
            for field, why in details.field_violations:
                print(f"  {field}: {why}", file=sys.stderr)
            if details.retry_delay is not None:
                print(f"  safe to retry after {details.retry_delay:g} s", file=sys.stderr)
            return 1
    print(f"outcome: {ingest_pb2.Outcome.Name(ack.outcome)}")
    print(f"person token: {ack.person_token}")
    for name in ack.record_names:
        print(f"record: {name}")
    return 0


def main() -> int:
    """Parse the command line and submit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", nargs="?", type=Path, default=SAMPLE, help="an HL7 v2 file")
    parser.add_argument("--ingest", default=None, help="ingest address (default: settings)")
    args = parser.parse_args()
    settings = load_settings()
    address = args.ingest or settings.address_of("ingest")
    secret = settings.auth_secret.get_secret_value()
    return asyncio.run(submit(address, args.message.read_bytes(), secret))


if __name__ == "__main__":
    sys.exit(main())
