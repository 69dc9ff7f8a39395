"""`healthbank up` checks every port before it starts anything and names a taken one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from healthbank.core.config import DEFAULT_PORTS
from healthbank.dev.devstack import address_env_name, free_port


@pytest.mark.parametrize("engines", ["embedded", "real"])
def test_up_names_a_taken_port_and_starts_nothing(tmp_path: Path, engines: str) -> None:
    ports = {name: free_port() for name in DEFAULT_PORTS}
    env = {**os.environ}
    env.update({address_env_name(name): f"127.0.0.1:{port}" for name, port in ports.items()})
    data_dir = tmp_path / "data"
    with socket.socket() as squatter:
        # Another process (say, a running stack's consent service) holds consent's port.
        squatter.bind(("127.0.0.1", ports["consent"]))
        squatter.listen()
        result = subprocess.run(
            [
                sys.executable,
                *("-m", "healthbank.cli", "up", "--engines", engines),
                *("--data-dir", str(data_dir)),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port already in use: {ports['consent']} (consent)" in result.stderr
    assert "SERVING" not in result.stdout
    # Nothing was started: no data directory, no service logs, no engine (tools/engines
    # prints a line per engine it provisions or finds running).
    assert not data_dir.exists()
    assert "cassandra" not in (result.stdout + result.stderr).lower()
