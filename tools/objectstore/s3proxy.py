"""A real S3-compatible server for the archive's S3 backend: S3Proxy from Maven Central.

    python tools/objectstore/s3proxy.py install            # jars into the cache (idempotent)
    python tools/objectstore/s3proxy.py serve DIR PORT     # run in the foreground

S3Proxy (Apache-2.0) serves the S3 API over a local directory (its jclouds "filesystem"
provider), so what a test wrote survives a restart of the server, as on a real store. The
jars of pom.xml are copied once into ``$HEALTHBANK_CACHE_DIR`` (default
``~/.cache/healthbank``)``/s3proxy/lib``; a second install with the same pom does nothing.
Tests start and stop their own server (``tests/object_store_support.py``), never the
shared engines of tools/engines.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
ACCESS_KEY_ID = "healthbank"
SECRET_ACCESS_KEY = "healthbank-s3proxy-dev-secret"
MAIN_CLASS = "org.gaul.s3proxy.Main"


class S3ProxyError(RuntimeError):
    """S3Proxy could not be installed or started."""


def cache_dir() -> Path:
    """Where the jars live: ``$HEALTHBANK_CACHE_DIR/s3proxy`` (default ~/.cache/healthbank)."""
    root = os.environ.get("HEALTHBANK_CACHE_DIR") or Path.home() / ".cache" / "healthbank"
    return Path(root) / "s3proxy"


def install() -> Path:
    """Copy the jars of pom.xml into the cache unless they are there; returns the lib dir."""
    lib = cache_dir() / "lib"
    marker = lib / ".pom.sha256"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == want:
        return lib
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise S3ProxyError(f"s3proxy: `{tool}` not on PATH (needs a Java 17 JDK and Maven)")
    # A fresh directory swapped in: an interrupted copy never looks complete.
    tmp = lib.with_name("lib.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log = lib.with_name("mvn.log")
    command = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    with log.open("wb") as out:
        code = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800
        ).returncode
    if code != 0 or not any(tmp.glob("s3proxy-*.jar")):
        raise S3ProxyError(f"s3proxy: mvn failed (exit {code}); see {log}")
    (tmp / ".pom.sha256").write_text(want + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return lib


@dataclass
class S3ProxyServer:
    """A running S3Proxy on 127.0.0.1:``port`` storing below ``data_dir``."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def endpoint_url(self) -> str:
        """The URL boto3 is given as ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate the server and wait for it (killed after 10 s)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(data_dir: Path, port: int, timeout: float = 60.0) -> S3ProxyServer:
    """Start S3Proxy over ``data_dir`` on loopback ``port``; returns once it accepts."""
    lib = install()
    data_dir.mkdir(parents=True, exist_ok=True)
    properties = data_dir.with_name(data_dir.name + ".properties")
    properties.write_text(
        f"s3proxy.endpoint=http://127.0.0.1:{port}\n"
        "s3proxy.authorization=aws-v2-or-v4\n"
        f"s3proxy.identity={ACCESS_KEY_ID}\n"
        f"s3proxy.credential={SECRET_ACCESS_KEY}\n"
        "jclouds.provider=filesystem\n"
        f"jclouds.filesystem.basedir={data_dir}\n"
    )
    log = data_dir.with_name(data_dir.name + ".log").open("wb")
    process = subprocess.Popen(
        ["java", "-Xmx256m", "-cp", f"{lib}/*", MAIN_CLASS, "--properties", str(properties)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LOG_LEVEL": "warn"},
    )
    log.close()
    server = S3ProxyServer(process, port, data_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise S3ProxyError(f"s3proxy exited with {process.returncode}; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise S3ProxyError(f"s3proxy did not listen on {port} within {timeout:.0f} s")


def main(argv: list[str]) -> int:
    """``install`` or ``serve DIR PORT``."""
    if argv[:1] == ["install"]:
        print(f"s3proxy: jars in {install()}", flush=True)
        return 0
    if len(argv) == 3 and argv[0] == "serve":
        server = start(Path(argv[1]).resolve(), int(argv[2]))
        print(f"s3proxy: serving {server.endpoint_url}", flush=True)
        return server.process.wait()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
