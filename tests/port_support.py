"""Loopback ports for tests that need a peer that is not there.

A server a test starts takes ``healthbank.dev.devstack.free_port`` instead: it picks outside
the ephemeral range, where an outgoing connection cannot take the port first.
"""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A loopback TCP port nothing listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def closed_address() -> str:
    """``127.0.0.1:<closed_port()>``: a gRPC peer there is UNAVAILABLE."""
    return f"127.0.0.1:{closed_port()}"
