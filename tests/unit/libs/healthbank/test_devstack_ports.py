"""Ports picked for a local stack (healthbank.dev.devstack.free_port): never one an outgoing
connection can take between the pick and the bind, never the same one twice."""

from __future__ import annotations

import socket
from pathlib import Path

from healthbank.dev.devstack import free_port


def test_picked_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port < ephemeral_low for port in ports)
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports[0]))  # free: a server can listen there
        server.listen()
