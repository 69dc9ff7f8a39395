"""The local stack: all seven services as separate processes on one data directory.

Used by `healthbank up`, by `healthbank demo` when no stack is running, and by the
end-to-end tests, so all three exercise the same start-up and shutdown path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthbank.core.config import DEFAULT_PORTS
from healthbank.crypto.pki import CLIENT_PREFIX, IssuedFiles, write_local_pki
from healthbank.rpc.clients import open_channel

SERVICES: tuple[str, ...] = tuple(DEFAULT_PORTS)
_READY_PREFIX = "HEALTHBANK_READY"

LOCAL_CLIENT = CLIENT_PREFIX + "local"
"""The certificate name of the launcher itself (health checks) and of local tools."""


def tls_env(files: IssuedFiles) -> dict[str, str]:
    """The HEALTHBANK_TLS_* settings that make a process use ``files``."""
    return {
        "HEALTHBANK_TLS_CA_FILE": str(files.ca_file),
        "HEALTHBANK_TLS_CERT_FILE": str(files.cert_file),
        "HEALTHBANK_TLS_KEY_FILE": str(files.key_file),
    }


def client_credentials(files: IssuedFiles) -> grpc.ChannelCredentials:
    """Channel credentials presenting the certificate in ``files``."""
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca_file.read_bytes(),
        private_key=files.key_file.read_bytes(),
        certificate_chain=files.cert_file.read_bytes(),
    )


def address_env_name(service: str) -> str:
    """Environment variable holding a service's address, e.g. HEALTHBANK_RECORD_LOOKUP_ADDR."""
    return "HEALTHBANK_" + service.upper().replace("-", "_") + "_ADDR"


# Ports picked for a stack come from below the kernel's ephemeral range (32768-60999 by
# default), which it draws outgoing connections' source ports from: a port picked there
# can be taken by a connection (a Cassandra driver's, say) between the pick and the
# server's bind, and a ring test's service failed to start so ("Address already in use").
_PICKED_PORTS = range(20000, 26000)
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Handed out by this process: a port picked but not yet bound looks free to the next pick.
_handed_out: set[int] = set()


def free_port() -> int:
    """A currently free loopback TCP port, outside the ephemeral range where it can be."""
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    if ephemeral_low >= _PICKED_PORTS.stop:
        for port in random.sample(_PICKED_PORTS, 100):
            if port not in _handed_out and port_is_free(port):
                _handed_out.add(port)
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PortsTaken(RuntimeError):
    """Ports the stack needs are already in use; nothing was started."""

    def __init__(self, taken: Mapping[str, int]) -> None:
        self.taken = dict(taken)
        listed = ", ".join(f"{port} ({name})" for name, port in self.taken.items())
        super().__init__(f"port already in use: {listed}")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now (as grpc binds: SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def configured_ports(env: Mapping[str, str]) -> dict[str, int]:
    """service → port: from ``HEALTHBANK_<SERVICE>_ADDR`` when set, else 50051-50057."""
    ports = {}
    for name in SERVICES:
        address = env.get(address_env_name(name))
        ports[name] = int(address.rpartition(":")[2]) if address else DEFAULT_PORTS[name]
    return ports


def check_ports_free(env: Mapping[str, str]) -> dict[str, int]:
    """The ports ``healthbank up`` will use (see configured_ports); PortsTaken if any is busy."""
    ports = configured_ports(env)
    host = env.get("HEALTHBANK_HOST") or "127.0.0.1"
    taken = {name: port for name, port in ports.items() if not port_is_free(port, host)}
    if taken:
        raise PortsTaken(taken)
    return ports


@dataclass
class ServiceProcess:
    """One running service."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        """host:port the service listens on."""
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalStack:
    """Starts, health-checks and stops the seven services.

    Services get a free port each (tests) or, with ``default_ports=True``, the ports of
    ``HEALTHBANK_<SERVICE>_ADDR`` or else the documented 50051-50057 (``healthbank up``);
    then every port is checked before anything starts, and :class:`PortsTaken` names
    the ones in use. ``env`` adds settings (HEALTHBANK_*) shared by every service.

    With ``tls``, a local CA in ``<data dir>/pki`` issues a certificate per service and one
    for local clients (:data:`LOCAL_CLIENT`, see :attr:`client_files`); the services serve
    and call each other with mutual TLS, and the launcher checks health with that client's.

    On Cassandra, ``start`` runs ``healthbank migrate`` first unless ``run_migrate`` is off
    (a test that runs it itself, alongside the starting services).
    """

    data_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    default_ports: bool = False
    tls: bool = False
    run_migrate: bool = True
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    _pki: dict[str, IssuedFiles] = field(default_factory=dict, init=False, repr=False)
    _ports: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def pki_dir(self) -> Path:
        """Where the local CA and the certificates live (with ``tls``)."""
        return self.data_dir / "pki"

    @property
    def client_files(self) -> IssuedFiles | None:
        """The local client's CA, certificate and key (None without ``tls``)."""
        return self._pki.get(LOCAL_CLIENT)

    def _health(self, name: str, timeout: float = 1.0) -> str:
        files = self.client_files
        credentials = client_credentials(files) if files is not None else None
        return health_status(
            self.services[name].address, timeout, credentials=credentials, server_name=name
        )

    @property
    def addresses(self) -> dict[str, str]:
        """service → host:port of the running services."""
        return {name: proc.address for name, proc in self.services.items()}

    def child_env(self, ports: Mapping[str, int]) -> dict[str, str]:
        """The environment every service process gets."""
        env = {**os.environ, **self.env, "HEALTHBANK_DATA_DIR": str(self.data_dir)}
        for name, port in ports.items():
            env[address_env_name(name)] = f"127.0.0.1:{port}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, timeout: float = 60.0) -> None:
        """Start all services and wait until each reports SERVING."""
        if self.default_ports:
            ports = check_ports_free({**os.environ, **self.env})
        else:
            ports = {name: free_port() for name in SERVICES}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self._pki = write_local_pki(self.pki_dir, [*SERVICES, LOCAL_CLIENT])
        self._ports = dict(ports)
        env = self.child_env(ports)
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        if self.run_migrate and env.get("HEALTHBANK_STORAGE_BACKEND") == "cassandra":
            # Schema first, as a deployment does (ADR 35): services never create it.
            self.migrate(env, logs / "migrate.log")
        try:
            for name in SERVICES:
                self.services[name] = self._launch(name, ports[name])
            self.wait_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def _launch(self, name: str, port: int) -> ServiceProcess:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "healthbank.cli", "serve", name],
                env={
                    **self.child_env(self._ports),
                    **(tls_env(self._pki[name]) if self.tls else {}),
                    "HEALTHBANK_PORT": str(port),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return ServiceProcess(name, port, process, log_path)

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would (no drain), and reap it."""
        process = self.services[name].process
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped service again on its port and wait until it is SERVING."""
        self.services[name] = self._launch(name, self.services[name].port)
        deadline = time.monotonic() + timeout
        while self._health(name) != "SERVING":
            if self.services[name].process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come back:\n{self.log_tail(name)}")
            time.sleep(0.2)

    @staticmethod
    def migrate(env: Mapping[str, str], log_path: Path) -> None:
        """Run ``healthbank migrate`` with ``env``; raise with its log if it fails."""
        with log_path.open("ab") as log:
            done = subprocess.run(
                [sys.executable, "-m", "healthbank.cli", "migrate"],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"healthbank migrate exited with {done.returncode}:\n{tail}")

    def wait_serving(self, timeout: float) -> None:
        """Block until every service answers health SERVING, or raise with its log tail."""
        deadline = time.monotonic() + timeout
        pending = set(self.services)
        while pending:
            for name in sorted(pending):
                proc = self.services[name]
                if proc.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.process.returncode}:\n{self.log_tail(name)}"
                    )
                if self._health(name) == "SERVING":
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in sorted(pending))
                raise TimeoutError(f"not SERVING after {timeout}s: {sorted(pending)}\n{tails}")
            if pending:
                time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """Last lines of a service's log."""
        text = self.services[name].log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def health_table(self) -> list[tuple[str, str, str, str]]:
        """(service, address, health, pid) rows."""
        return [
            (name, proc.address, self._health(name), str(proc.process.pid))
            for name, proc in self.services.items()
        ]

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every service (they drain), wait, SIGKILL stragglers; return exit codes."""
        for proc in self.services.values():
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for name, proc in self.services.items():
            try:
                codes[name] = proc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                codes[name] = proc.process.wait()
        self.services.clear()
        return codes


def _channel(
    address: str, credentials: grpc.ChannelCredentials | None, server_name: str | None
) -> grpc.aio.Channel:
    options: list[tuple[str, Any]] = []
    if credentials is not None and server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return open_channel(address, credentials=credentials, options=options)


async def check_health(
    address: str,
    rpc_timeout: float = 1.0,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> str:
    """grpc.health.v1 status name of a server ("SERVING", ...), or "UNREACHABLE".

    With ``credentials`` the check goes over (m)TLS to a server named ``server_name``.
    """
    try:
        async with _channel(address, credentials, server_name) as channel:
            # The typeshed stub of HealthStub lists no methods.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=rpc_timeout)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    except grpc.RpcError:
        return "UNREACHABLE"


def health_status(
    address: str,
    timeout: float = 1.0,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> str:
    """check_health for synchronous callers (the CLI, the stack launcher)."""
    return asyncio.run(
        check_health(address, timeout, credentials=credentials, server_name=server_name)
    )


def running_stack_addresses(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """Addresses of an already running stack (all seven SERVING), else None."""
    source = os.environ if env is None else env
    addresses = {
        name: source.get(address_env_name(name), f"127.0.0.1:{port}")
        for name, port in DEFAULT_PORTS.items()
    }
    with contextlib.suppress(Exception):
        if all(health_status(addr, timeout=0.5) == "SERVING" for addr in addresses.values()):
            return addresses
    return None
