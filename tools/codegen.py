"""Regenerate the Python stubs in libs/ from protos/ (one command, reproducible).

    python tools/codegen.py          # write libs/healthbank/<service>/v1/*_pb2*.py[i]
    python tools/codegen.py --check  # exit 1 if what is checked in is stale

Stubs land in libs/ under the folder path that equals the proto package, so the
generated `from healthbank.common.v1 import common_pb2` imports resolve as-is.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
LIBS = REPO / "libs"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    """All .proto files under protos/, sorted for a stable protoc invocation."""
    return sorted(PROTO_ROOT.glob("healthbank/**/*.proto"))


def generate(out_dir: Path, *, quiet: bool = False) -> list[Path]:
    """Run protoc (from grpcio-tools) into out_dir; return the generated files.

    The mypy-protobuf plugins are found next to this interpreter, so the command works
    from a virtual environment that is not activated. ``quiet`` keeps protoc's and the
    plugins' chatter ("Writing mypy to ...") to itself unless protoc fails.
    """
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    result = subprocess.run(cmd, cwd=PROTO_ROOT, env=env, capture_output=quiet, text=True)
    if result.returncode != 0:
        if quiet:
            sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"protoc failed with exit code {result.returncode}")
    generated = sorted(p for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))
    # Every generated folder is a regular package, so mypy and setuptools find it.
    for folder in {p.parent for p in generated}:
        while folder != out_dir:
            (folder / "__init__.py").touch(exist_ok=True)
            folder = folder.parent
    return generated


def checked_in() -> list[Path]:
    """Generated files currently under libs/."""
    return sorted(p for p in LIBS.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    """Regenerate, or with --check report stale stubs and exit non-zero."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if libs/ is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = {p.relative_to(fresh_root) for p in generate(fresh_root, quiet=args.check)}
        current = {p.relative_to(LIBS) for p in checked_in()}
        if args.check:
            stale = sorted(
                str(rel)
                for rel in fresh | current
                if rel not in fresh
                or rel not in current
                or not filecmp.cmp(fresh_root / rel, LIBS / rel, shallow=False)
            )
            if stale:
                print("stale generated stubs (run `python tools/codegen.py`):", *stale, sep="\n  ")
                return 1
            print(f"generated stubs are up to date ({len(fresh)} files)")
            return 0
        for rel in current - fresh:
            (LIBS / rel).unlink()
        for rel in sorted(fresh):
            target = LIBS / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh_root / rel, target)
            package = target.parent
            while package != LIBS:
                (package / "__init__.py").touch(exist_ok=True)
                package = package.parent
        print(f"wrote {len(fresh)} generated files under {LIBS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
