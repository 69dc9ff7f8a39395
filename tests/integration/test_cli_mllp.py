"""`healthbank mllp` as a process: it listens, answers framed, and never says AA unstored.

The listener is pointed at an ingest address where nothing listens: the message cannot be
stored, so it must be answered ``AR`` (resend later), framed, on the same connection; SIGTERM
stops the process cleanly. The stored path (AA, AE) is in tests/services/test_mllp_gateway.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from port_support import closed_port
from repo_paths import REPO
from repo_paths import message as fixture

START, END = b"\x0b", b"\x1c\x0d"


def test_mllp_command_answers_ar_while_ingest_is_unreachable() -> None:
    env = {**os.environ, "HEALTHBANK_INGEST_ADDR": f"127.0.0.1:{closed_port()}"}
    command = [sys.executable, "-m", "healthbank.cli", "mllp", "--hospital", "hospital-b"]
    process = subprocess.Popen(
        [*command, "--port", "0"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[:2] == ["HEALTHBANK_READY", "mllp"]
        with socket.create_connection(("127.0.0.1", int(ready[2])), timeout=30) as client:
            client.sendall(START + fixture("hl7_adt_a01.er7") + END)
            answer = b""
            while not answer.endswith(END):
                chunk = client.recv(4096)
                assert chunk, "the listener closed the connection without an ACK"
                answer += chunk
        segments = [s.split("|") for s in answer[1:-2].decode().strip("\r").split("\r")]
        assert segments[1] == ["MSA", "AR", "ADT-B-000917"]
        assert segments[2][3].startswith("207^")  # application internal error: resend
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
