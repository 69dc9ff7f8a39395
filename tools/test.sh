#!/usr/bin/env bash
# README's test command; .ci/run runs exactly `bash tools/test.sh`.
#
# From a fresh clone: one virtual environment per supported Python under .venvs/
# (created if missing, `pip install -e '.[dev]'` only when pyproject.toml changed; pip's
# cache in ~/.cache/pip stays warm between runs), then
#   - on the main Python (3.11): the real engines, ruff, ruff format, mypy, the whole suite
#     (pytest arguments given to this script go to this run);
#   - on 3.12 and 3.13, side by side: the unit and service tests on embedded storage (those
#     marked `engines`, which tests/conftest.py gives every test that starts the engines,
#     run on the main Python only; HEALTHBANK_TEST_WITHOUT_ENGINES makes one unmarked fail).
# Every step runs even when an earlier test run failed; the summary and the total time are
# printed whatever happens, and the engines are stopped at exit.
#
# Settings: HEALTHBANK_MAIN_PYTHON (default 3.11), HEALTHBANK_OTHER_PYTHONS (default
# "3.12 3.13"; empty for none), HEALTHBANK_KEEP_ENGINES=1 leaves the engines running.
set -uo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
MAIN=${HEALTHBANK_MAIN_PYTHON:-3.11}
OTHERS=${HEALTHBANK_OTHER_PYTHONS-3.12 3.13}
VENVS=.venvs
failed=()
engines_python=""

finish() {
    local code=$?
    if [[ -n "$engines_python" ]]; then
        # tests/integration/test_ring.py starts its own 3-node ring and stops it after its
        # module; this stops it too when a run was interrupted half-way (a no-op otherwise).
        "$engines_python" tools/engines/ring.py down || failed+=("ring down")
    fi
    if [[ -n "$engines_python" && "${HEALTHBANK_KEEP_ENGINES:-}" != 1 ]]; then
        echo "== engines: stop"
        "$engines_python" tools/engines/engines.py down || failed+=("engines down")
    fi
    if ((${#failed[@]})); then
        echo "== FAILED: ${failed[*]}"
        ((code == 0)) && code=1
    elif ((code == 0)); then
        echo "== all passed"
    fi
    echo "== total $(($(date +%s) - started))s"
    exit "$code"
}
trap finish EXIT

# The interpreter for a version ("3.12"): pythonX.Y on PATH, else pyenv's newest X.Y.
find_python() {
    local version=$1 candidate
    local roots=("${PYENV_ROOT:-$HOME/.pyenv}/versions")
    for candidate in "$(command -v "python$version" || true)" \
        $(ls -d "${roots[0]}/$version".*/bin/python3 2>/dev/null | sort -V -r); do
        if [[ -n "$candidate" && -x "$candidate" ]] &&
            [[ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$version" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# A ready virtual environment for a version; prints its python. Idempotent.
venv_for() {
    local version=$1 python venv stamp want
    venv="$VENVS/py$version"
    if [[ ! -x "$venv/bin/python" ]]; then
        python=$(find_python "$version") || {
            echo "no Python $version found (pythonX.Y on PATH or ~/.pyenv/versions/X.Y.*)" >&2
            return 1
        }
        "$python" -m venv "$venv" >&2 || return 1
    fi
    stamp="$venv/.healthbank-installed"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $PWD"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        echo "   installing into $venv (pip cache: ~/.cache/pip)" >&2
        "$venv/bin/python" -m pip install --disable-pip-version-check -q -e '.[dev]' >&2 ||
            return 1
        echo "$want" >"$stamp"
    fi
    echo "$venv/bin/python"
}

step() { # step NAME COMMAND...: run, remember a failure, carry on
    local name=$1
    shift
    "$@" || failed+=("$name")
}

echo "== Python environments: $MAIN (full suite)${OTHERS:+, $OTHERS (unit + service tests)}"
main_python=$(venv_for "$MAIN") || exit 1
declare -A other_python=()
for version in $OTHERS; do
    other_python[$version]=$(venv_for "$version") || exit 1
done
for python in "$main_python" "${other_python[@]}"; do
    echo "   $python: $("$python" --version)"
done

echo "== engines: Cassandra, OpenBao, Redis"
engines_python=$main_python
"$main_python" tools/engines/engines.py up || exit 1

bin=$(dirname "$main_python")
echo "== lint and format (ruff)"
step "ruff check" "$bin/ruff" check .
step "ruff format" "$bin/ruff" format --check .

echo "== types (mypy)"
step mypy "$bin/mypy" libs/healthbank services examples

echo "== deploy tools: helm, kubeconform, Kubernetes schemas (cached in ~/.cache/healthbank)"
step "deploy tools" env PYTHON="$main_python" bash tools/deploy/install_tools.sh

echo "== object store: S3Proxy jars for the archive's S3 tests (cached in ~/.cache/healthbank)"
step "s3proxy install" "$main_python" tools/objectstore/s3proxy.py install

echo "== tests on Python $MAIN (pytest, the whole suite)"
# Exit code 5 (no tests collected) must fail CI, and does: only 0 passes.
# --durations: the slowest tests named in every CI log, for whoever trims the run's time.
step "pytest $MAIN" env PATH="$bin:$PATH" "$main_python" -m pytest --durations=30 "$@"

# The other Pythons' runs use one core each, so they run side by side (each into its own log
# and temporary directory, printed when both are done): ~5 minutes of CI saved.
logs=$(mktemp -d)
declare -A other_pid=()
for version in $OTHERS; do
    python=${other_python[$version]}
    env PATH="$(dirname "$python"):$PATH" HEALTHBANK_TEST_WITHOUT_ENGINES=1 \
        "$python" -m pytest -p no:cacheprovider \
        --basetemp="$logs/tmp-$version" tests/unit tests/services -m "not engines" \
        >"$logs/$version.log" 2>&1 &
    other_pid[$version]=$!
done
for version in $OTHERS; do
    echo "== tests on Python $version (unit + service tests, embedded storage)"
    wait "${other_pid[$version]}" || failed+=("pytest $version")
    cat "$logs/$version.log"
done
rm -rf "$logs"
