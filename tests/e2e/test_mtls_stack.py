"""`healthbank up --mtls`: the seven services as processes, each with its own certificate
from a local CA in the data directory, calling each other over mutual TLS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from auth_support import auth_metadata

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.core.config import DEFAULT_PORTS, Settings
from healthbank.crypto.pki import IssuedFiles
from healthbank.dev.devstack import (
    LOCAL_CLIENT,
    address_env_name,
    client_credentials,
    free_port,
    tls_env,
)
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.rpc import error_details
from healthbank.rpc.clients import open_channel

CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-9", "hospital-b")
HISTORY = record_lookup_pb2.GetHistoryRequest(parent="persons/" + "c" * 64)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """`healthbank up --mtls` on free ports: (service → address, pki folder)."""
    data_dir = tmp_path_factory.mktemp("up-mtls") / "data"
    addresses = {name: f"127.0.0.1:{free_port()}" for name in DEFAULT_PORTS}
    env = {name: value for name, value in os.environ.items() if not name.startswith("HEALTHBANK")}
    env |= {address_env_name(name): address for name, address in addresses.items()}
    process = subprocess.Popen(
        [sys.executable, "-m", "healthbank.cli", "up", "--mtls", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if line.startswith("mTLS on"):
                break
        assert output and output[-1].startswith("mTLS on"), "".join(output)
        # Every service reached SERVING, checked over mTLS by the launcher.
        assert sum(" SERVING " in line for line in output) == len(DEFAULT_PORTS), output
        yield addresses, data_dir / "pki"
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest


def _files(pki: Path, holder: str) -> IssuedFiles:
    return IssuedFiles(pki / "ca.pem", pki / f"{holder}.pem", pki / f"{holder}-key.pem")


async def test_services_call_each_other_over_mtls(up: tuple[dict[str, str], Path]) -> None:
    addresses, pki = up
    credentials = client_credentials(_files(pki, LOCAL_CLIENT))
    options = [("grpc.ssl_target_name_override", "record-lookup")]
    async with open_channel(
        addresses["record-lookup"], credentials=credentials, options=options
    ) as channel:
        lookup = record_lookup_pb2_grpc.RecordLookupServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in lookup.GetHistory(
                HISTORY, metadata=auth_metadata(Settings(), CLINICIAN)
            ):
                pass
    # Consent answered record-lookup (over mTLS, as record-lookup) and audit took the denial:
    # a failed hop would be UNAVAILABLE instead.
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_GRANT")


async def test_a_plaintext_client_is_refused(up: tuple[dict[str, str], Path]) -> None:
    addresses, _ = up
    async with open_channel(addresses["record-lookup"]) as channel:
        lookup = record_lookup_pb2_grpc.RecordLookupServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in lookup.GetHistory(
                HISTORY, metadata=auth_metadata(Settings(), CLINICIAN), timeout=5
            ):
                pass
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_weather_command_speaks_mtls_with_the_tls_settings(
    up: tuple[dict[str, str], Path],
) -> None:
    addresses, pki = up
    env = {name: value for name, value in os.environ.items() if not name.startswith("HEALTHBANK")}
    env |= tls_env(_files(pki, LOCAL_CLIENT))
    env[address_env_name("ai-alert")] = addresses["ai-alert"]
    result = subprocess.run(
        [sys.executable, "-m", "healthbank.cli", "weather"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
