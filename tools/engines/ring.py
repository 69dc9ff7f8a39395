#!/usr/bin/env python3
"""An N-node Apache Cassandra ring on loopback addresses, for resilience tests (ADR 35).

    python tools/engines/ring.py up [--nodes 3] [--fresh]   start (or keep) the ring, and wait
                                                           until every node holds one schema
    python tools/engines/ring.py down                      stop every node
    python tools/engines/ring.py env                       HEALTHBANK_* settings for the ring
    python tools/engines/ring.py kill N | start N          kill -9 / restart node N (1-based)
    python tools/engines/ring.py nodetool N ARGS...        nodetool against node N over JMX

Node i listens on 127.0.0.i (CQL port 19142, storage port 17100 by default: other ports than
the shared single node of tools/engines/engines.py, which it never touches) with its own
data, commit log, hints and saved-caches directories under ``<ring dir>/node<i>`` (the ring
dir: ``HEALTHBANK_RING_DIR``, by default ``<engines dir>/ring``).
Each node owns one token, evenly spaced over the Murmur3 range, so with replication factor 3
on three nodes every node holds every row and each third of the ring has one primary
replica. A fresh ring has no data, so nodes join without bootstrap streaming: the seed
(node 1) first, then the others together. JMX listens on 127.0.0.1 only (port 19190 + i)
with password authentication (``<ring dir>/jmx.password``, mode 0600), so ``nodetool``
works and nothing else can reach it. The jars are the single node's (engines.py provisions
them). Heaps are small (``HEALTHBANK_RING_HEAP``, default 512M): the ring is for
correctness under faults, not speed.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import signal
import string
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engines as single  # noqa: E402  (stand-alone script beside this one)

TOKEN_SPACE = 2**64
JMX_USER = "healthbank-jmx"


@dataclass(frozen=True)
class RingConfig:
    """Where and how the ring runs (environment variables, read at call time)."""

    state: Path
    nodes: int
    native_port: int
    storage_port: int
    jmx_base_port: int
    heap: str
    timeout: float

    @classmethod
    def load(cls, nodes: int | None = None) -> RingConfig:
        """The configuration from HEALTHBANK_RING_* (and HEALTHBANK_ENGINES_DIR)."""
        engines_dir = Path(single._env("HEALTHBANK_ENGINES_DIR", str(single.REPO / ".engines")))
        return cls(
            state=Path(single._env("HEALTHBANK_RING_DIR", str(engines_dir / "ring"))).resolve(),
            nodes=nodes or int(single._env("HEALTHBANK_RING_NODES", "3")),
            native_port=int(single._env("HEALTHBANK_RING_NATIVE_PORT", "19142")),
            storage_port=int(single._env("HEALTHBANK_RING_STORAGE_PORT", "17100")),
            jmx_base_port=int(single._env("HEALTHBANK_RING_JMX_PORT", "19190")),
            heap=single._env("HEALTHBANK_RING_HEAP", "512M"),
            timeout=float(single._env("HEALTHBANK_RING_TIMEOUT", "300")),
        )

    def address(self, node: int) -> str:
        """Node ``node``'s loopback address (1-based)."""
        return f"127.0.0.{node}"

    def node_dir(self, node: int) -> Path:
        """Node ``node``'s own directory."""
        return self.state / f"node{node}"

    def pidfile(self, node: int) -> Path:
        """Where node ``node``'s process id is kept."""
        return self.node_dir(node) / "cassandra.pid"

    def jmx_port(self, node: int) -> int:
        """Node ``node``'s JMX port (on 127.0.0.1)."""
        return self.jmx_base_port + node

    def token(self, node: int) -> int:
        """Node ``node``'s one token: the Murmur3 range split evenly."""
        return (node - 1) * TOKEN_SPACE // self.nodes - 2**63


def env_vars(cfg: RingConfig | None = None) -> dict[str, str]:
    """The HEALTHBANK_* settings that put services on the ring (RF 3, LOCAL_QUORUM)."""
    cfg = cfg or RingConfig.load()
    return {
        "HEALTHBANK_STORAGE_BACKEND": "cassandra",
        "HEALTHBANK_CASSANDRA_HOSTS": ",".join(cfg.address(n) for n in range(1, cfg.nodes + 1)),
        "HEALTHBANK_CASSANDRA_PORT": str(cfg.native_port),
        "HEALTHBANK_CASSANDRA_REPLICATION_FACTOR": str(min(3, cfg.nodes)),
        "HEALTHBANK_CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
    }


def _jmx_files(cfg: RingConfig) -> tuple[Path, Path, str]:
    """The JMX password and access files (created once, owner-only) and the password."""
    password_file, access_file = cfg.state / "jmx.password", cfg.state / "jmx.access"
    if not password_file.exists():
        cfg.state.mkdir(parents=True, exist_ok=True)
        single._write_private(password_file, f"{JMX_USER} {secrets.token_hex(16)}\n")
        single._write_private(access_file, f"{JMX_USER} readwrite\n")
    password = password_file.read_text().split()[1]
    return password_file, access_file, password


def _node_yaml(cfg: RingConfig, node: int) -> str:
    """The single node's cassandra.yaml, re-addressed for node ``node`` of the ring."""
    data = cfg.node_dir(node) / "data"
    text = string.Template(single.YAML_TEMPLATE.read_text()).substitute(
        storage_port=cfg.storage_port, native_port=cfg.native_port, storage_dir=data
    )
    replacements = {
        r"^cluster_name:.*$": "cluster_name: healthbank-ring",
        r"^listen_address:.*$": f"listen_address: {cfg.address(node)}",
        r"^rpc_address:.*$": f"rpc_address: {cfg.address(node)}",
        r"^(\s*- seeds:).*$": rf'\1 "{cfg.address(1)}:{cfg.storage_port}"',
        r"^num_tokens:.*$": f"num_tokens: 1\ninitial_token: {cfg.token(node)}",
        # Sorts the node itself first: a read at ONE coordinated by a replica reads that
        # replica, so a test can see what each node holds (SimpleSnitch keeps ring order).
        r"^endpoint_snitch:.*$": "endpoint_snitch: GossipingPropertyFileSnitch",
    }
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        if count != 1:
            raise single.EngineError(f"ring: cassandra.yaml.template has no {pattern!r} line")
    # A fresh ring holds no data: a node joins with its token and streams nothing.
    # A logged batch's batch log goes to the two best-scored nodes (the dynamic snitch,
    # the coordinator itself included), not to two random others: on three nodes those
    # are always the other two, so one killed node would fail every logged batch until
    # the ring marks it down (~18 s, issue 15).
    # No dynamic snitch either: it may send that read to a better-scored node.
    return (
        text + "auto_bootstrap: false\nbatchlog_endpoint_strategy: dynamic\ndynamic_snitch: false\n"
    )


def _command(cfg: RingConfig, node: int) -> list[str]:
    base = cfg.node_dir(node)
    conf, logs, tmp = base / "conf", base / "logs", base / "tmp"
    triggers = conf / "triggers"
    for directory in (conf, logs, tmp, triggers, base / "data"):
        directory.mkdir(parents=True, exist_ok=True)
    yaml = conf / "cassandra.yaml"
    yaml.write_text(_node_yaml(cfg, node))
    # One data centre and rack, named as SimpleSnitch names them.
    rackdc = conf / "cassandra-rackdc.properties"
    rackdc.write_text("dc=datacenter1\nrack=rack1\n")
    password_file, access_file, _ = _jmx_files(cfg)
    lib = single.Config.load().cassandra_dir / "lib"
    jamm = sorted(lib.glob("jamm-*.jar"))[-1]
    return [
        shutil.which("java") or "java",
        f"-Xms{cfg.heap}",
        f"-Xmx{cfg.heap}",
        "-XX:+ExitOnOutOfMemoryError",
        *single.JVM17_G1,
        *single.JVM_GENERAL,
        *single.JVM17_JPMS,
        f"-javaagent:{jamm}",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.config=file://{yaml}",
        f"-Dcassandra-rackdc.properties=file://{rackdc}",
        f"-Dcassandra.storagedir={base / 'data'}",
        f"-Dcassandra.logdir={logs}",
        f"-Dlogback.configurationFile={single.LOGBACK}",
        f"-Dcassandra.triggers_dir={triggers}",
        # Nodes of a fresh ring join together; none streams, so none needs to wait for another.
        "-Dcassandra.consistent.rangemovement=false",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.ring_delay_ms=5000",
        # JMX on 127.0.0.1 only, password-protected: nodetool, and nothing from outside.
        # (Cassandra's password check wraps a JDK-internal authenticator: exported here.)
        "--add-exports=java.management/com.sun.jmx.remote.security=ALL-UNNAMED",
        f"-Dcassandra.jmx.local.port={cfg.jmx_port(node)}",
        "-Dcom.sun.management.jmxremote.authenticate=true",
        f"-Dcom.sun.management.jmxremote.password.file={password_file}",
        f"-Dcom.sun.management.jmxremote.access.file={access_file}",
        f"-Djna.tmpdir={tmp}",
        f"-Djava.io.tmpdir={tmp}",
        "-cp",
        f"{lib}/*",
        single.CASSANDRA_MAIN,
    ]


def _pid(cfg: RingConfig, node: int) -> int | None:
    try:
        pid = int(cfg.pidfile(node).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if single._alive(pid) else None


def node_answers(cfg: RingConfig, node: int) -> bool:
    """Whether node ``node`` answers CQL now."""
    try:
        single.cql_release_version(cfg.native_port, host=cfg.address(node))
    except (OSError, ValueError, struct.error):
        return False
    return True


def start_node(cfg: RingConfig, node: int, *, wait: bool = True) -> None:
    """Start node ``node`` unless it runs; with ``wait``, until it answers CQL."""
    if _pid(cfg, node) is None:
        logs = cfg.node_dir(node) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        process = single._spawn(_command(cfg, node), logs / "stdout.log", cwd=cfg.node_dir(node))
        cfg.pidfile(node).write_text(f"{process.pid}\n")
    if wait:
        wait_for_node(cfg, node)


def wait_for_node(cfg: RingConfig, node: int) -> None:
    """Block until node ``node`` answers CQL; raise with its log if it died or took too long."""
    deadline = time.monotonic() + cfg.timeout
    while not node_answers(cfg, node):
        if _pid(cfg, node) is None or time.monotonic() > deadline:
            log = cfg.node_dir(node) / "logs" / "system.log"
            raise single.EngineError(f"ring node {node} did not start:\n{single._tail(log)}")
        time.sleep(1.0)


def kill_node(cfg: RingConfig, node: int) -> None:
    """kill -9 node ``node`` (its process group) and wait until it is gone."""
    pid = _pid(cfg, node)
    if pid is None:
        return
    single._signal(pid, signal.SIGKILL)
    for _ in range(100):
        if single._reaped(pid):
            break
        time.sleep(0.1)
    cfg.pidfile(node).unlink(missing_ok=True)


def up(nodes: int | None = None, *, fresh: bool = False) -> dict[str, str]:
    """Start the ring (seed first, then the others together); its settings."""
    cfg = RingConfig.load(nodes)
    single._cassandra_provision(single.Config.load())
    if fresh:
        down(cfg)
        shutil.rmtree(cfg.state, ignore_errors=True)
    start_node(cfg, 1)
    for node in range(2, cfg.nodes + 1):
        start_node(cfg, node, wait=False)
    for node in range(2, cfg.nodes + 1):
        wait_for_node(cfg, node)
    settle(cfg)
    return env_vars(cfg)


def wait_for_ring(cfg: RingConfig) -> None:
    """Block until every node sees every node Up and Normal (nodetool status)."""
    deadline = time.monotonic() + cfg.timeout
    while True:
        status = nodetool(cfg, 1, "status", check=False)
        if status.count("\nUN ") == cfg.nodes:
            return
        if time.monotonic() > deadline:
            raise single.EngineError(f"ring: not all {cfg.nodes} nodes Up/Normal:\n{status}")
        time.sleep(2.0)


def schema_versions(describecluster: str) -> dict[str, list[str]]:
    """``nodetool describecluster``'s "Schema versions": version -> the addresses answering
    with it (each live node is asked); nodes that did not answer under ``UNREACHABLE``."""
    section = describecluster.partition("Schema versions:")[2].partition("Stats for")[0]
    versions = {}
    for line in section.splitlines():
        version, _, addresses = line.strip().partition(": ")
        if version:
            versions[version] = re.findall(r"\d+\.\d+\.\d+\.\d+", addresses)
    return versions


def lagging_nodes(cfg: RingConfig, versions: dict[str, list[str]]) -> list[int]:
    """The nodes not on the schema version most nodes hold (node 1's on a tie)."""
    held = {address: version for version, addresses in versions.items() for address in addresses}
    node_1 = held.get(cfg.address(1))
    agreed = max(
        (v for v in versions if v != "UNREACHABLE"),
        key=lambda v: (len(versions[v]), v == node_1),
        default=None,
    )
    return [
        n for n in range(1, cfg.nodes + 1) if agreed is None or held.get(cfg.address(n)) != agreed
    ]


def settle(cfg: RingConfig, patience: float = 45.0) -> None:
    """Block until every node is Up/Normal and every node holds the same schema version.

    A node restarted after kills now and then never catches up on the schema (a CI run,
    2026-12-03: node 2 kept its old version through two tests, and every DDL statement
    then timed out waiting for agreement). A node still behind after ``patience`` seconds
    is restarted, once: a starting node pulls the schema from its peers.
    """
    wait_for_ring(cfg)
    restarted: set[int] = set()
    deadline = time.monotonic() + patience
    while True:
        described = nodetool(cfg, 1, "describecluster", check=False)
        behind = lagging_nodes(cfg, schema_versions(described))
        if not behind:
            return
        if time.monotonic() > deadline:
            if restarted.intersection(behind):
                raise single.EngineError(
                    f"ring: nodes {behind} disagree on the schema:\n{described}"
                )
            print(f"ring: nodes {behind} still behind on the schema; restarting them", flush=True)
            for node in behind:
                kill_node(cfg, node)
                start_node(cfg, node)
            restarted.update(behind)
            wait_for_ring(cfg)
            deadline = time.monotonic() + patience
        time.sleep(2.0)


def down(cfg: RingConfig | None = None) -> None:
    """Stop every node of the ring (SIGTERM, then SIGKILL after 30 s)."""
    cfg = cfg or RingConfig.load()
    pids = [pid for node in range(1, cfg.nodes + 1) if (pid := _pid(cfg, node)) is not None]
    for pid in pids:
        single._signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for pid in pids:
        while not single._reaped(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not single._reaped(pid):
            single._signal(pid, signal.SIGKILL)
    for node in range(1, cfg.nodes + 1):
        cfg.pidfile(node).unlink(missing_ok=True)


def nodetool(cfg: RingConfig, node: int, *args: str, check: bool = True) -> str:
    """Run ``nodetool ARGS`` against node ``node`` over its authenticated JMX; its output."""
    _, _, password = _jmx_files(cfg)
    lib = single.Config.load().cassandra_dir / "lib"
    command = [
        shutil.which("java") or "java",
        "-Xmx128M",
        *single.JVM17_JPMS,
        f"-Dlogback.configurationFile={single.LOGBACK}",
        f"-Dcassandra.logdir={cfg.state}",
        "-cp",
        f"{lib}/*",
        "org.apache.cassandra.tools.NodeTool",
        *("-h", "127.0.0.1", "-p", str(cfg.jmx_port(node)), "-u", JMX_USER, "-pw", password),
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        raise single.EngineError(f"nodetool {' '.join(args)} on node {node}: {done.stderr}")
    return done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up")
    start.add_argument("--nodes", type=int, default=None)
    start.add_argument("--fresh", action="store_true")
    commands.add_parser("down")
    commands.add_parser("env")
    for name in ("kill", "start"):
        commands.add_parser(name).add_argument("node", type=int)
    tool = commands.add_parser("nodetool")
    tool.add_argument("node", type=int)
    tool.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cfg = RingConfig.load(getattr(args, "nodes", None))
    if args.command == "up":
        settings = up(args.nodes, fresh=args.fresh)
        print("\n".join(f"export {name}={value}" for name, value in settings.items()))
    elif args.command == "down":
        down(cfg)
    elif args.command == "env":
        print("\n".join(f"export {name}={value}" for name, value in env_vars(cfg).items()))
    elif args.command == "kill":
        kill_node(cfg, args.node)
    elif args.command == "start":
        start_node(cfg, args.node)
    else:
        print(nodetool(cfg, args.node, *args.args, check=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
