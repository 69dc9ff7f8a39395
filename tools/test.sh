#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, start the real engines,
# lint, type-check, test, stop the engines. README's test command; .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
started=$(date +%s)

echo "== install (pip cache: ~/.cache/pip)"
"$PYTHON" -m pip install --disable-pip-version-check -q -e '.[dev]'

echo "== engines: Cassandra, OpenBao, Redis"
"$PYTHON" tools/engines/engines.py up
trap '"$PYTHON" tools/engines/engines.py down' EXIT

echo "== lint and format (ruff)"
ruff check .
ruff format --check .

echo "== types (mypy)"
mypy libs/healthbank services

echo "== tests (pytest)"
# Exit code 5 (no tests collected) must fail CI, and does: only 0 passes.
"$PYTHON" -m pytest "$@"

echo "== total $(( $(date +%s) - started ))s"
