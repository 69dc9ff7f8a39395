#!/usr/bin/env bash
# Build the healthbank image from registries only, and (with --check) prove it serves.
#
#   tools/deploy/build_image.sh [--check] [TAG]      (TAG default: healthbank:<version>)
#
# 1. mmdebstrap makes a Debian bookworm root filesystem (minbase + python3) from Debian's
#    packages; cached in ~/.cache/healthbank/image/ (HEALTHBANK_IMAGE_CACHE), a week at most.
# 2. podman import turns it into localhost/healthbank-base:bookworm.
# 3. buildah bud --isolation chroot builds Containerfile on it (pip installs from PyPI).
# 4. --check: inside the image (buildah run --isolation chroot) the user is 10001 and there is
#    no gcc, make or pip; `healthbank serve audit` starts and grpc.health.v1 must answer
#    SERVING on the host's loopback.
# PYTHON (default python3) runs the health check and must have grpcio-health-checking (the
# project's virtual environment does). Needs root and the Debian packages mmdebstrap, podman and buildah (installed here with
# apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

check=0
if [[ "${1:-}" == --check ]]; then
    check=1
    shift
fi
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
tag=${1:-healthbank:$version}
PYTHON=${PYTHON:-python3}
cache=${HEALTHBANK_IMAGE_CACHE:-$HOME/.cache/healthbank/image}
base=localhost/healthbank-base:bookworm
mkdir -p "$cache"
started=$(date +%s)

missing=()
for tool in mmdebstrap podman buildah; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "== installing ${missing[*]} (apt-get)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

rootfs="$cache/bookworm-python3.tar"
if [[ ! -s "$rootfs" || -n "$(find "$rootfs" -mtime +7)" ]]; then
    echo "== mmdebstrap: bookworm minbase + python3"
    mmdebstrap --variant=minbase --format=tar --include=python3,ca-certificates,passwd \
        bookworm "$cache/partial.tar"
    mv "$cache/partial.tar" "$rootfs"
    podman rmi -f "$base" >/dev/null 2>&1 || true
fi
if ! podman image exists "$base"; then
    echo "== podman import → $base"
    podman import "$rootfs" "$base"
fi

echo "== buildah bud --isolation chroot → $tag"
# pip in the build stage trusts what this machine's pip trusts (PIP_CERT, else the system
# bundle), passed as a secret so it stays out of the image.
buildah bud --isolation chroot --layers \
    --secret "id=pip-ca,src=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
    -f Containerfile -t "$tag" .
echo "== built $tag in $(($(date +%s) - started))s"

if ((check)); then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    container=$(buildah from "$tag")
    trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; buildah rm "$container" >/dev/null' EXIT
    echo "== the final stage: non-root, no build tools"
    buildah run --isolation chroot "$container" -- sh -c \
        'test "$(id -u)" = 10001 && for tool in gcc cc make pip pip3; do
             if command -v "$tool"; then echo "build tool in the image: $tool"; exit 1; fi
         done'
    echo "== healthbank serve audit inside the image, port $port"
    buildah run --isolation chroot "$container" -- \
        env HEALTHBANK_PORT="$port" HEALTHBANK_HOST=127.0.0.1 healthbank serve audit &
    server=$!
    # The health check runs on the host: the chroot shares its network.
    "$PYTHON" - "$port" <<'PY'
import sys, time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

address = f"127.0.0.1:{sys.argv[1]}"
# NOT_SERVING is normal while the service checks its storage at start: wait for SERVING.
deadline = time.monotonic() + 60
status = "no answer"
while time.monotonic() < deadline:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if status == "SERVING":
            break
    except grpc.RpcError:
        pass
    time.sleep(0.5)
print(f"== health of audit inside the image: {status}")
sys.exit(0 if status == "SERVING" else 1)
PY
fi
