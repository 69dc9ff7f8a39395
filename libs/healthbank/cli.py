"""The `healthbank` command: serve one service, run the whole stack, play the demo.

    healthbank serve <service>   one service in the foreground (what a pod runs)
    healthbank up                all seven services on localhost, Ctrl-C stops them
    healthbank demo              scenarios A and B against a running stack (or a fresh one)
    healthbank audit verify      recompute the whole audit log against its signed tree head
    healthbank audit public-key  the key that signs tree heads (hand it to verifiers, witnesses)
    healthbank witness           keep, check and co-sign the audit log's tree heads
    healthbank ingest PATH…      load files, folders, NDJSON and zips into ingest
    healthbank committee …       the data security committee: list, show, vote (ADR 26)
    healthbank research …        submit, status, aggregate, synthesize (ADR 26)
    healthbank archive tier      move old records to the cold tier (the scheduled job)
    healthbank archive scrub     verify every archived segment's and blob's checksum
    healthbank cluster status    rollout and health of each service in a Kubernetes namespace

This launcher is the one place in libs that knows the services exist: it imports
``services.<name>.app`` by name; services themselves only talk over gRPC. ``up`` and
``demo`` import the development package (healthbank.dev) when they run, so ``serve``,
what a pod runs, never loads it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from healthbank.core.config import (
    SERVICE_NAMES,
    ConfigError,
    Settings,
    UnsafeForProduction,
    check_production_safe,
    load_settings,
)
from healthbank.core.logs import configure_logging
from healthbank.core.telemetry import setup_telemetry
from healthbank.research_cli import add_commands as add_research_commands
from healthbank.rpc.server import run_until_signal

if TYPE_CHECKING:
    import grpc.aio  # type: ignore[import-untyped, unused-ignore]

    from healthbank.ai_alert.v1 import ai_alert_pb2
    from healthbank.dev.devstack import LocalStack

REPO = Path(__file__).resolve().parents[2]
_log = logging.getLogger(__name__)
_T = TypeVar("_T")
ENGINES_SCRIPT = REPO / "tools" / "engines" / "engines.py"


def service_module(service: str) -> str:
    """Python module of a service's app, e.g. record-lookup → services.record_lookup.app."""
    return f"services.{service.replace('-', '_')}.app"


async def _serve(service: str, settings: Settings) -> None:
    configure_logging(service, settings.log_level)
    if settings.real_engines and settings.allow_dev_security:
        logging.getLogger(__name__).warning(
            "HEALTHBANK_ALLOW_DEV_SECURITY is on: development credentials on real engines"
        )
    # Global providers: the server interceptors and outgoing trace propagation use them.
    # Without HEALTHBANK_OTLP_ENDPOINT nothing is exported.
    telemetry = setup_telemetry(service, settings.otlp_endpoint, set_global=True)
    log_export = telemetry.log_handler()
    if log_export is not None:
        logging.getLogger().addHandler(log_export)
    app = importlib.import_module(service_module(service))
    try:
        async with app.open_service(settings) as host:
            await run_until_signal(host)
    finally:
        telemetry.shutdown()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service until SIGTERM/SIGINT; refuse development credentials on real engines."""
    settings = load_settings()
    check_production_safe(settings)
    port = settings.listen_port(args.service)
    settings = settings.model_copy(update={"port": port})
    run_on_event_loop(_serve(args.service, settings), settings.event_loop)
    return 0


def run_on_event_loop(main: Coroutine[Any, Any, _T], event_loop: str) -> _T:
    """Run ``main`` to completion on a new event loop of the kind chosen (ADR 44):
    "uvloop" (asyncio's when uvloop is not installed) or "asyncio"."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # a platform without it (Windows): asyncio's own still serves
            _log.warning("uvloop is not installed; serving on asyncio's event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def real_engine_env(only: str | None = None) -> dict[str, str]:
    """Start Cassandra, OpenBao and Redis (tools/engines; ``only``: some of them, e.g.
    "vault,redis") and return the settings that use them.

    The stack keeps development credentials, so it says so (HEALTHBANK_ALLOW_DEV_SECURITY)
    to pass the production guard; a deployment configures real ones instead.
    """
    chosen = ["--only", only] if only else []
    subprocess.run([sys.executable, str(ENGINES_SCRIPT), "up", *chosen], check=True)
    output = subprocess.run(
        [sys.executable, str(ENGINES_SCRIPT), "env"], check=True, capture_output=True, text=True
    ).stdout
    env: dict[str, str] = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name.startswith("HEALTHBANK_"):
            env[name] = value.strip().strip("'\"")
    env.update(
        {
            "HEALTHBANK_STORAGE_BACKEND": "cassandra",
            "HEALTHBANK_KEY_PROVIDER": "vault",
            "HEALTHBANK_CACHE_BACKEND": "redis",
            "HEALTHBANK_ALLOW_DEV_SECURITY": "true",
        }
    )
    return env


def _print_health(stack: LocalStack) -> None:
    from healthbank.dev.demo import format_table

    print(
        format_table(
            "healthbank services", ["service", "address", "health", "pid"], stack.health_table()
        ),
        flush=True,
    )


def cmd_up(args: argparse.Namespace) -> int:
    """Start the seven services, print their health, stop them all on Ctrl-C."""
    from healthbank.dev.devstack import LocalStack, PortsTaken, check_ports_free

    try:
        # Before anything starts, the real engines included.
        check_ports_free(os.environ)
        env: Mapping[str, str] = real_engine_env() if args.engines == "real" else {}
        stack = LocalStack(
            Path(args.data_dir).resolve(), env=env, default_ports=True, tls=args.mtls
        )
        stack.start()
    except PortsTaken as taken:
        print(
            f"healthbank up: {taken}; nothing was started. Is another stack running "
            "(`healthbank demo` uses it)? Stop it, or set HEALTHBANK_<SERVICE>_ADDR "
            "to other ports.",
            file=sys.stderr,
        )
        return 1
    except (RuntimeError, TimeoutError) as error:
        print(f"healthbank up: the stack did not start: {error}", file=sys.stderr)
        return 1
    _print_health(stack)
    print(f"data directory: {stack.data_dir}\nCtrl-C stops all services.", flush=True)
    if stack.client_files is not None:
        files = stack.client_files
        print(
            f"mTLS on: a client presents {files.cert_file} (key {files.key_file}, "
            f"CA {files.ca_file})",
            flush=True,
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            dead = [p.name for p in stack.services.values() if p.process.poll() is not None]
            if dead:
                print(f"service exited unexpectedly: {', '.join(dead)}", file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    print("stopping (draining in-flight calls)…", flush=True)
    codes = stack.stop()
    print(", ".join(f"{name}: exit {code}" for name, code in codes.items()))
    return 0 if all(code == 0 for code in codes.values()) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Play scenarios A and B against a running stack, or start one for the demo.

    Every run invents its own patient, so the demo can be repeated against one stack.
    A stack started here lives in a temporary folder (or ``--data-dir``); a temporary
    folder is removed when the demo passes and kept, with its place printed, when not.
    """
    from healthbank.dev.demo import run_demo
    from healthbank.dev.devstack import LocalStack, running_stack_addresses

    settings = load_settings()
    secret = settings.auth_secret.get_secret_value().encode()
    addresses = None if args.fresh else running_stack_addresses()
    stack: LocalStack | None = None
    temporary: Path | None = None
    problems: list[str] = []
    if addresses is None:
        if args.data_dir:
            data_dir = Path(args.data_dir).resolve()
        else:
            data_dir = temporary = Path(tempfile.mkdtemp(prefix="healthbank-demo-")).resolve()
        print(f"starting the seven services on embedded storage in {data_dir} …", flush=True)
        stack = LocalStack(data_dir)
        try:
            stack.start()
        except (RuntimeError, TimeoutError) as error:
            print(f"\ndemo FAILED: the stack did not start: {error}", file=sys.stderr)
            print(f"service logs: {data_dir / 'logs'}", file=sys.stderr)
            return 1
        _print_health(stack)
        addresses = stack.addresses
    else:
        print("using the running stack", flush=True)
    try:
        report, problems = asyncio.run(run_demo(addresses, secret))
        if report:
            print("\n" + report)
    finally:
        if stack is not None:
            codes = stack.stop()
            problems += [f"{name} exited with {code}" for name, code in codes.items() if code]
    if temporary is not None:
        if problems:
            print(f"\nservice logs and data kept in {temporary}", flush=True)
        else:
            shutil.rmtree(temporary, ignore_errors=True)
    if problems:
        print("\ndemo FAILED:", *problems, sep="\n  ")
        return 1
    print("\ndemo PASSED: both scenarios behaved as designed")
    return 0


async def _run_mllp(settings: Settings, args: argparse.Namespace) -> None:
    gateway = importlib.import_module("services.mllp_gateway.app")
    config = gateway.GatewayConfig(
        hospital_id=args.hospital,
        host=args.host,
        port=args.port,
        max_message_bytes=args.max_bytes,
    )
    async with gateway.open_gateway(settings, config) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"HEALTHBANK_READY mllp {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def cmd_mllp(args: argparse.Namespace) -> int:
    """Run the MLLP listener in front of ingest until SIGTERM/SIGINT."""
    settings = load_settings()
    configure_logging("mllp-gateway", settings.log_level)
    asyncio.run(_run_mllp(settings, args))
    return 0


def _public_key_argument(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError("must be 64 hex digits (a raw Ed25519 public key)")
    return key


def _audit_credentials(args: argparse.Namespace, settings: Settings) -> tuple[tuple[str, str], ...]:
    """Call metadata for GetEntries: --token, else a development AUDITOR token."""
    from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, encode_token

    token = args.token or encode_token(
        Principal(PrincipalKind.AUDITOR, "audit-verify", purpose=Purpose.OPERATIONS),
        settings.auth_secret.get_secret_value().encode(),
    )
    return (("authorization", f"Bearer {token}"),)


def _service_channel(address: str, settings: Settings, service: str) -> grpc.aio.Channel:
    """A channel to ``service``: mutual TLS with this process's certificate when
    HEALTHBANK_TLS_* are set (the CronJobs in production), plaintext otherwise."""
    from healthbank.rpc.clients import open_channel
    from healthbank.rpc.tls import channel_credentials

    credentials = channel_credentials(settings)
    if credentials is None:
        return open_channel(address)
    # Whatever the address, the server must prove it is that service.
    override = [("grpc.ssl_target_name_override", service)]
    return open_channel(address, credentials=credentials, options=override)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the whole audit log; print a one-line verdict; non-zero on any failure."""

    from healthbank.ledger.verify import Verdict
    from healthbank.rpc.audit_verify import verify_audit_log

    settings = load_settings()
    if args.public_key is None:
        print(
            "healthbank audit verify: the log's public key is required "
            "(--public-key or HEALTHBANK_AUDIT_PUBLIC_KEY)",
            file=sys.stderr,
        )
        return 2
    address = args.audit_addr or settings.audit_addr

    async def verify() -> Verdict:
        async with _service_channel(address, settings, "audit") as channel:
            return await verify_audit_log(
                channel, args.public_key, _audit_credentials(args, settings)
            )

    verdict = asyncio.run(verify())
    print(verdict.line())
    return 0 if verdict.ok else 1


def cmd_audit_public_key(args: argparse.Namespace) -> int:
    """Print the key provider's tree-head public key (the operator's side, out of band)."""
    from healthbank.crypto import build_key_provider

    key = asyncio.run(build_key_provider(load_settings()).public_key())
    print(key.hex())
    return 0


# Exit codes of `healthbank witness`: an alarm is not a crash.
WITNESS_ALARM_EXIT = 3
WITNESS_UNREACHABLE_EXIT = 1


def cmd_witness(args: argparse.Namespace) -> int:
    """Watch the audit log's heads until stopped; exit WITNESS_ALARM_EXIT on an alarm."""
    import grpc.aio

    from healthbank.witness.runner import Witness, load_or_create_key
    from healthbank.witness.store import WitnessStore

    settings = load_settings()
    configure_logging("witness", settings.log_level)
    if args.log_public_key is None:
        print(
            "healthbank witness: the log's public key is required "
            "(--log-public-key or HEALTHBANK_AUDIT_PUBLIC_KEY)",
            file=sys.stderr,
        )
        return 2
    witness_dir = Path(args.dir).resolve()
    address = args.audit_addr or settings.audit_addr

    async def watch() -> int:
        store = await WitnessStore(witness_dir / "witness.db").open()
        try:
            async with _service_channel(address, settings, "audit") as channel:
                witness = Witness(
                    store,
                    channel,
                    args.log_public_key,
                    load_or_create_key(witness_dir / "witness.key"),
                    lambda: datetime.now(UTC),
                    publish=witness_dir / "cosigned-head.json",
                )
                if args.once:
                    try:
                        finding = await witness.observe()
                    except grpc.aio.AioRpcError as error:
                        print(f"witness: audit log unreachable ({error.code().name})")
                        return WITNESS_UNREACHABLE_EXIT
                else:
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(signum, stop.set)
                    alarm = await witness.run(args.interval, stop)
                    if alarm is None:
                        return 0
                    finding = alarm
        finally:
            await store.close()
        print(f"witness: {finding.value}")
        return WITNESS_ALARM_EXIT if finding.is_alarm else 0

    return asyncio.run(watch())


def _refused(command: str, error: grpc.aio.AioRpcError) -> int:
    """Say on stderr why a service refused ``healthbank {command}`` (code, reason, the
    service's PHI-free message); the exit code 1."""
    from healthbank.rpc import error_details

    details = error_details(error)
    print(
        f"healthbank {command}: {details.code.name} ({details.reason}): {details.message}",
        file=sys.stderr,
    )
    return 1


def cmd_ingest(args: argparse.Namespace) -> int:
    """Load files into ingest as ``--hospital``'s integration engine; 1 if any message (or a
    patient of one) was rejected."""
    import grpc  # type: ignore[import-untyped, unused-ignore]

    from healthbank.loader import format_report, report_json, run_ingest

    settings = load_settings()
    missing = [str(path) for path in args.paths if not Path(path).exists()]
    if missing:
        print(f"healthbank ingest: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            run_ingest(settings, [Path(p) for p in args.paths], args.hospital, address=args.ingest)
        )
    except grpc.aio.AioRpcError as error:
        return _refused("ingest", error)
    print(report_json(report) if args.json else format_report(report), flush=True)
    summary = report.summary()
    return 0 if summary["rejected"] == summary["partial"] == 0 else 1


# The service name the scheduled tiering job calls archive as (authz.ARCHIVE_TIERING).
ARCHIVE_TIERING_SERVICE = "archive-tiering"


def cmd_archive_tier(args: argparse.Namespace) -> int:
    """Call archive.TierRecords as the tiering job, ``--batch`` records a call, until fewer
    move or ``--max-records`` did; progress per call on stderr, the total on stdout."""
    from datetime import timedelta

    import grpc.aio
    from google.protobuf import timestamp_pb2

    from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
    from healthbank.rpc.clients import service_client_factory

    settings = load_settings()
    cutoff = timestamp_pb2.Timestamp()
    cutoff.FromDatetime(datetime.now(UTC) - timedelta(days=args.older_than_days))

    async def tier() -> int:
        moved = 0
        async with service_client_factory(settings, ARCHIVE_TIERING_SERVICE) as clients:
            stub = archive_pb2_grpc.ArchiveServiceStub(clients.channel("archive"))
            while True:
                # Archive validates the numbers (a bad one ends in INVALID_ARGUMENT).
                batch = min(args.batch, args.max_records - moved)
                request = archive_pb2.TierRecordsRequest(cutoff=cutoff, max_records=batch)
                response: archive_pb2.TierRecordsResponse = await stub.TierRecords(request)
                moved += response.records_moved
                if response.records_moved:
                    print(f"archive tier: {moved} records moved so far", file=sys.stderr)
                if response.records_moved < batch or moved >= args.max_records:
                    break
        return moved

    try:
        moved = asyncio.run(tier())
    except grpc.aio.AioRpcError as error:
        return _refused("archive tier", error)
    print(f"archive tier: {moved} records moved", flush=True)
    return 0


def cmd_archive_scrub(args: argparse.Namespace) -> int:
    """Verify every segment and blob of the archive; 1 if any object is damaged."""
    import importlib

    settings = load_settings()
    app = importlib.import_module(service_module("archive"))
    checked = 0

    def progress(name: str, intact: bool) -> None:
        nonlocal checked
        checked += 1
        if not intact:
            print(f"DAMAGED {name}", flush=True)
        if checked % 100 == 0:
            print(f"archive scrub: {checked} objects checked", file=sys.stderr)

    report = asyncio.run(app.scrub_archive(settings, progress))
    print(
        f"archive scrub: {report.segments_checked} segments, {report.blobs_checked} blobs"
        f" checked, {len(report.damaged)} damaged",
        flush=True,
    )
    return 1 if report.damaged else 0


_SPARK = "▁▂▃▄▅▆▇█"


def weather_text(forecast: ai_alert_pb2.Forecast) -> str:
    """The health weather for a terminal: level, why, the history as a sparkline, the
    forecast days with their 95% upper bounds."""
    from healthbank.ai_alert.v1 import ai_alert_pb2

    level = ai_alert_pb2.AlertLevel.Name(forecast.level).removeprefix("ALERT_LEVEL_")
    counts = [day.count for day in forecast.history]
    top = max(counts, default=0.0) or 1.0
    spark = "".join(
        _SPARK[min(int(count / top * (len(_SPARK) - 1)), len(_SPARK) - 1)] for count in counts
    )
    lines = [f"health weather: {level}", forecast.explanation]
    if counts:
        first = forecast.history[0].day.ToDatetime(tzinfo=UTC)
        last = forecast.history[-1].day.ToDatetime(tzinfo=UTC)
        lines.append(f"{first:%Y-%m-%d} {spark} {last:%Y-%m-%d} (max {top:g}/day)")
    for day in forecast.forecast:
        moment = day.day.ToDatetime(tzinfo=UTC)
        lines.append(f"  {moment:%Y-%m-%d}  expected {day.count:6.1f}  up to {day.upper:6.1f}")
    return "\n".join(lines)


def cmd_weather(args: argparse.Namespace) -> int:
    """Print the health weather from ai-alert's GetForecast."""
    import grpc.aio
    from google.protobuf import timestamp_pb2

    from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
    from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, encode_token

    settings = load_settings()
    token = args.token or encode_token(
        Principal(PrincipalKind.RESEARCHER, "weather-cli", purpose=Purpose.RESEARCH),
        settings.auth_secret.get_secret_value().encode(),
    )
    request = ai_alert_pb2.GetForecastRequest(
        horizon_days=args.horizon_days, history_days=args.history_days
    )
    if args.as_of is not None:
        as_of = timestamp_pb2.Timestamp()
        as_of.FromDatetime(datetime.combine(args.as_of, datetime.min.time(), tzinfo=UTC))
        request.as_of.CopyFrom(as_of)

    async def ask() -> ai_alert_pb2.Forecast:
        async with _service_channel(
            args.ai_alert_addr or settings.ai_alert_addr, settings, "ai-alert"
        ) as channel:
            stub = ai_alert_pb2_grpc.AiAlertServiceStub(channel)
            response: ai_alert_pb2.Forecast = await stub.GetForecast(
                request, metadata=(("authorization", f"Bearer {token}"),)
            )
            return response

    try:
        forecast = asyncio.run(ask())
    except grpc.aio.AioRpcError as error:
        return _refused("weather", error)
    print(weather_text(forecast), flush=True)
    if args.png is not None:
        from healthbank.weather_chart import write_png

        write_png(forecast, args.png)
        print(f"chart written to {args.png}", flush=True)
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    """Print each service's rollout and health in ``--namespace``; 1 unless all are SERVING."""
    from healthbank.cluster import ClusterUnreachable, fetch_statuses
    from healthbank.dev.demo import format_table

    try:
        statuses = fetch_statuses(args.namespace, args.release)
    except ClusterUnreachable as error:
        print(f"healthbank cluster status: {error}", file=sys.stderr)
        return 2
    if not statuses:
        print(f"healthbank cluster status: no healthbank Deployment in {args.namespace}")
        return 1
    print(
        format_table(
            f"healthbank in {args.namespace}",
            ["service", "ready", "updated", "rollout", "health"],
            [status.row() for status in statuses],
        ),
        flush=True,
    )
    healthy = all(s.health == "SERVING" and s.rollout == "complete" for s in statuses)
    return 0 if healthy else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create and upgrade every Cassandra keyspace (ADR 35): the step before a deployment.

    Idempotent and safe to run from several places at once. Exit 0 when every keyspace is
    at the version this release needs, 1 when Cassandra is unreachable, did not agree or
    refused a statement (the message names the keyspace and the cause).
    """
    from healthbank.storage.errors import StorageRefused, StorageUnavailable
    from healthbank.storage.schema import migrate

    settings = load_settings()
    configure_logging("migrate", settings.log_level)
    if settings.storage_backend != "cassandra":
        print("healthbank migrate: nothing to do (embedded SQLite files migrate themselves)")
        return 0
    try:
        report = migrate(settings)
    except (StorageUnavailable, StorageRefused) as error:
        print(f"healthbank migrate: {error}", file=sys.stderr)
        return 1
    for step in report.keyspaces:
        print(f"{step.keyspace}: schema version {step.before} -> {step.after}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `healthbank` command."""
    parser = argparse.ArgumentParser(prog="healthbank", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.set_defaults(run=cmd_serve)
    up = commands.add_parser("up", help="run all seven services locally")
    up.add_argument("--data-dir", default=os.environ.get("HEALTHBANK_DATA_DIR", ".healthbank-data"))
    up.add_argument(
        "--engines",
        choices=["embedded", "real"],
        default="embedded",
        help="embedded: SQLite + local keyring + in-process cache; real: Cassandra, OpenBao, Redis",
    )
    up.add_argument(
        "--mtls",
        action="store_true",
        help="mutual TLS between all parties, with a local CA made in <data dir>/pki",
    )
    up.set_defaults(run=cmd_up)
    demo = commands.add_parser(
        "demo",
        help="play scenarios A and B (repeatable: a new invented patient each run)",
        description="Play scenarios A and B against the stack on 127.0.0.1:50051-50057 if all "
        "seven services are SERVING, else on a stack started for the demo and stopped after it.",
    )
    demo.add_argument(
        "--fresh",
        action="store_true",
        help="start a new stack for the demo even when one is running (on free ports)",
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        help="data directory of the stack the demo starts (kept); default: a temporary "
        "folder, removed when the demo passes",
    )
    demo.set_defaults(run=cmd_demo)
    mllp = commands.add_parser(
        "mllp",
        help="listen for HL7 v2 over MLLP and submit each message to ingest",
        description="An MLLP listener for one hospital's engine: each framed message is "
        "submitted to ingest (HEALTHBANK_INGEST_ADDR) and its HL7 ACK written back framed.",
    )
    mllp.add_argument("--hospital", required=True, help="the hospital id the engine sends for")
    mllp.add_argument("--host", default="127.0.0.1")
    mllp.add_argument("--port", type=int, default=2575, help="0 picks a free port")
    mllp.add_argument(
        "--max-bytes", type=int, default=16 * 1024 * 1024, help="largest message accepted"
    )
    mllp.set_defaults(run=cmd_mllp)

    env_key = os.environ.get("HEALTHBANK_AUDIT_PUBLIC_KEY")
    audit = commands.add_parser("audit", help="check the audit log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify",
        help="recompute every leaf from the events and check them against the signed head",
        description="Fetch the signed tree head and every event 0..size-1, recompute each "
        "leaf hash from the event, rebuild the Merkle root and compare; exit 1 naming the "
        "first bad sequence number on any failure.",
    )
    verify.add_argument(
        "--public-key",
        type=_public_key_argument,
        default=env_key,  # argparse applies the type to a string default
        help="the log's Ed25519 public key, 64 hex digits (default: HEALTHBANK_AUDIT_PUBLIC_KEY)",
    )
    verify.add_argument("--audit-addr", help="default: HEALTHBANK_AUDIT_ADDR")
    verify.add_argument(
        "--token",
        default=os.environ.get("HEALTHBANK_AUDIT_TOKEN"),
        help="bearer token of an auditor (default: HEALTHBANK_AUDIT_TOKEN, else a development "
        "token from HEALTHBANK_AUTH_SECRET)",
    )
    verify.set_defaults(run=cmd_audit_verify)
    public_key = audit.add_parser(
        "public-key", help="print the tree-head public key from the configured key provider"
    )
    public_key.set_defaults(run=cmd_audit_public_key)

    witness = commands.add_parser(
        "witness",
        help="keep, check and co-sign the audit log's signed tree heads",
        description="Fetch the audit log's signed tree head every --interval seconds, check it "
        "against the last head held (consistency proof), co-sign and keep it in DIR/witness.db, "
        "publish the latest in DIR/cosigned-head.json; on a shrink, a fork or a bad proof or "
        f"signature log at ERROR and exit {WITNESS_ALARM_EXIT}.",
    )
    witness.add_argument(
        "--log-public-key",
        type=_public_key_argument,
        default=env_key,  # argparse applies the type to a string default
        help="the log's Ed25519 public key, 64 hex digits (default: HEALTHBANK_AUDIT_PUBLIC_KEY)",
    )
    witness.add_argument("--audit-addr", help="default: HEALTHBANK_AUDIT_ADDR")
    witness.add_argument(
        "--dir",
        default=os.environ.get("HEALTHBANK_WITNESS_DIR", ".healthbank-witness"),
        help="the witness's own folder: store, key, published head (HEALTHBANK_WITNESS_DIR)",
    )
    witness.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("HEALTHBANK_WITNESS_INTERVAL_SECONDS", "60")),
        help="seconds between observations (HEALTHBANK_WITNESS_INTERVAL_SECONDS, default 60)",
    )
    witness.add_argument("--once", action="store_true", help="observe once and exit")
    witness.set_defaults(run=cmd_witness)
    ingest = commands.add_parser(
        "ingest",
        help="load files, folders, NDJSON and zips into ingest (as a hospital's engine)",
        description="Stream every file under PATH to ingest's SubmitStream as the hospital's "
        "integration engine: .json FHIR R4, .ndjson FHIR Bulk Data, .hl7/.er7 HL7 v2, .dcm "
        "DICOM; zips member by member. Prints each file's outcome and a summary; exits 1 "
        "when any message, or any patient of a message of several, was rejected.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--hospital", required=True, help="the sending hospital's id")
    ingest.add_argument(
        "--ingest", default=None, help="ingest's host:port (default: HEALTHBANK_INGEST_ADDR)"
    )
    ingest.add_argument(
        "--json",
        action="store_true",
        help='print {"files", "messages", "accepted", "rejected", "partial", "reasons"} as JSON',
    )
    ingest.set_defaults(run=cmd_ingest)
    add_research_commands(commands)
    archive = commands.add_parser("archive", help="archive maintenance").add_subparsers(
        dest="archive_command", required=True
    )
    tier = archive.add_parser(
        "tier",
        help="move records older than --older-than-days to the cold tier",
        description="One archive.TierRecords call as the archive-tiering service (what the "
        "chart's CronJob runs); exits non-zero when archive refuses or is unreachable.",
    )
    tier.add_argument("--older-than-days", type=int, default=365)
    tier.add_argument("--max-records", type=int, default=10000, help="records per run")
    tier.add_argument(
        "--batch", type=int, default=1000, help="records per TierRecords call (1-100000)"
    )
    tier.set_defaults(run=cmd_archive_tier)
    scrub = archive.add_parser(
        "scrub",
        help="verify every archived segment's and blob's SHA-256",
        description="Reads every indexed segment and every blob where the archive keeps them "
        "(HEALTHBANK_ARCHIVE_BACKEND) and checks its checksum; prints each damaged object's "
        "name and exits 1 if there is one.",
    )
    scrub.set_defaults(run=cmd_archive_scrub)
    weather = commands.add_parser(
        "weather",
        help="the city's health weather on the terminal",
        description="ai-alert's GetForecast as text: the level, why, the history as a "
        "sparkline and the forecast with its upper bounds (ADR 30).",
    )
    weather.add_argument("--horizon-days", type=int, default=7)
    weather.add_argument("--history-days", type=int, default=0)
    weather.add_argument(
        "--as-of", type=lambda text: datetime.strptime(text, "%Y-%m-%d").date(), default=None
    )
    weather.add_argument("--ai-alert-addr", default=None)
    weather.add_argument(
        "--png",
        type=Path,
        default=None,
        help="also draw the chart (observed, expected, 95%% band, alarms) into this PNG file",
    )
    weather.add_argument(
        "--token", default=None, help="bearer token (default: a development researcher token)"
    )
    weather.set_defaults(run=cmd_weather)
    migrate = commands.add_parser(
        "migrate",
        help="create and upgrade every Cassandra keyspace (run before services start)",
    )
    migrate.set_defaults(run=cmd_migrate)
    cluster = commands.add_parser("cluster", help="the release in Kubernetes").add_subparsers(
        dest="cluster_command", required=True
    )
    status = cluster.add_parser(
        "status",
        help="rollout and health of each service in a namespace (kubeconfig or in-cluster)",
    )
    status.add_argument("--namespace", "-n", default="healthbank")
    status.add_argument("--release", default=None, help="one Helm release (default: all)")
    status.set_defaults(run=cmd_cluster_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `healthbank` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except UnsafeForProduction as error:
        # One line an operator (and a pod's last log line) can act on; never the values.
        print(f"healthbank: refusing to start on real engines: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
