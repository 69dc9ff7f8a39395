"""The archive's object stores for tests: a local directory, or a bucket on a real S3Proxy.

``S3ProxyProcess`` starts S3Proxy (tools/objectstore/s3proxy.py; jars cached in
~/.cache/healthbank) on a free loopback port over a directory of the test session, and can
be restarted over the same data; ``new_bucket`` gives each test a bucket of its own.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from repo_paths import REPO

from healthbank.dev.devstack import free_port
from healthbank.dev.scripts import load_script
from services.archive.objects import LocalObjectStore, ObjectStore, S3ObjectStore, s3_client

S3PROXY = load_script(REPO / "tools" / "objectstore" / "s3proxy.py", "healthbank_tools_s3proxy")


class S3ProxyProcess:
    """One S3Proxy for a test session, on a free port, storing below ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        """Start the server (installing its jars first if the cache lacks them)."""
        self.data_dir = data_dir
        self.port = free_port()
        self._server = S3PROXY.start(data_dir, self.port)

    @property
    def endpoint_url(self) -> str:
        """Where boto3 reaches the server."""
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        """A boto3 S3 client on this server."""
        return s3_client(
            self.endpoint_url, "us-east-1", S3PROXY.ACCESS_KEY_ID, S3PROXY.SECRET_ACCESS_KEY
        )

    def new_bucket(self) -> str:
        """A new empty bucket's name."""
        bucket = f"hb-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def store(self, bucket: str, prefix: str = "archive/") -> S3ObjectStore:
        """The archive's S3 object store on ``bucket``."""
        return S3ObjectStore(self.client(), bucket, prefix)

    def restart(self) -> None:
        """Stop and start the server over the same data (what a store keeps is kept)."""
        self._server.stop()
        self._server = S3PROXY.start(self.data_dir, self.port)

    def stop(self) -> None:
        """Stop the server."""
        self._server.stop()


def object_store(kind: str, tmp_path: Path, s3proxy: S3ProxyProcess | None) -> ObjectStore:
    """A fresh, empty object store of ``kind`` ("local" or "s3")."""
    if kind == "local":
        return LocalObjectStore(tmp_path / "objects")
    assert s3proxy is not None
    return s3proxy.store(s3proxy.new_bucket())
