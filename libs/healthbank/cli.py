"""The `healthbank` command: serve one service, run the whole stack, play the demo.

    healthbank serve <service>   one service in the foreground (what a pod runs)
    healthbank up                all seven services on localhost, Ctrl-C stops them
    healthbank demo              scenarios A and B against a running stack (or a fresh one)
    healthbank ingest PATH…      load files, folders, NDJSON and zips into ingest

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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from healthbank.core.config import SERVICE_NAMES, ConfigError, Settings, load_settings
from healthbank.core.logs import configure_logging
from healthbank.core.telemetry import setup_telemetry
from healthbank.rpc.server import run_until_signal

if TYPE_CHECKING:
    from healthbank.dev.devstack import LocalStack

REPO = Path(__file__).resolve().parents[2]
ENGINES_SCRIPT = REPO / "tools" / "engines" / "engines.py"


def service_module(service: str) -> str:
    """Python module of a service's app, e.g. record-lookup → services.record_lookup.app."""
    return f"services.{service.replace('-', '_')}.app"


async def _serve(service: str, settings: Settings) -> None:
    configure_logging(service, settings.log_level)
    # Global providers: the server interceptors and outgoing trace propagation use them.
    # Without HEALTHBANK_OTLP_ENDPOINT nothing is exported.
    telemetry = setup_telemetry(service, settings.otlp_endpoint, set_global=True)
    app = importlib.import_module(service_module(service))
    try:
        async with app.open_service(settings) as host:
            await run_until_signal(host)
    finally:
        telemetry.shutdown()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service until SIGTERM/SIGINT."""
    settings = load_settings()
    port = settings.listen_port(args.service)
    settings = settings.model_copy(update={"port": port})
    asyncio.run(_serve(args.service, settings))
    return 0


def real_engine_env() -> dict[str, str]:
    """Start Cassandra, OpenBao and Redis (tools/engines) and return the settings that use them."""
    subprocess.run([sys.executable, str(ENGINES_SCRIPT), "up"], check=True)
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
        stack = LocalStack(Path(args.data_dir).resolve(), env=env, default_ports=True)
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


def cmd_ingest(args: argparse.Namespace) -> int:
    """Load files into ingest as ``--hospital``'s integration engine; 1 if any was rejected."""
    import grpc  # type: ignore[import-untyped, unused-ignore]

    from healthbank.loader import format_report, report_json, run_ingest
    from healthbank.rpc import error_details

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
        details = error_details(error)
        print(
            f"healthbank ingest: {details.code.name} ({details.reason}): {details.message}",
            file=sys.stderr,
        )
        return 1
    print(report_json(report) if args.json else format_report(report), flush=True)
    return 0 if report.summary()["rejected"] == 0 else 1


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
    ingest = commands.add_parser(
        "ingest",
        help="load files, folders, NDJSON and zips into ingest (as a hospital's engine)",
        description="Stream every file under PATH to ingest's SubmitStream as the hospital's "
        "integration engine: .json FHIR R4, .ndjson FHIR Bulk Data, .hl7/.er7 HL7 v2, .dcm "
        "DICOM; zips member by member. Prints each file's outcome and a summary; exits 1 "
        "when any message was rejected.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--hospital", required=True, help="the sending hospital's id")
    ingest.add_argument(
        "--ingest", default=None, help="ingest's host:port (default: HEALTHBANK_INGEST_ADDR)"
    )
    ingest.add_argument(
        "--json",
        action="store_true",
        help='print {"files", "messages", "accepted", "rejected", "reasons"} as JSON',
    )
    ingest.set_defaults(run=cmd_ingest)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `healthbank` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
